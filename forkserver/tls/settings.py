"""TLS and listener settings: frozen values, and the pure checks that make them.

Owns the shape of the ``listen:`` entries, of ``tls:`` (top level and per site) and
of ``redirect_to_https`` as the configuration loader will hand them over, and the
checks that turn a YAML value into one of them or raise the config package's
``Invalid`` (SPEC §6). Must not open files, sockets or build SSL contexts: loading
certificates is certificates.py's, contexts are contexts.py's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from forkserver.config.checks import Invalid, host_address, kind_of, show
from forkserver.config.model import UNIX_PREFIX

MIN_VERSIONS = ("TLSv1.2", "TLSv1.3")  # TLS 1.0/1.1 and SSLv3 are never offered (RFC 8996)
DEFAULT_MIN_VERSION = "TLSv1.2"
MAX_PORT = 65535
LISTEN_KEYS = ("address", "tls")
TLS_KEYS = ("certificate", "key", "min_version")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """One certificate: PEM chain (leaf first) and its unencrypted PEM key."""

    certificate: str
    key: str
    min_version: str = DEFAULT_MIN_VERSION


@dataclass(frozen=True, slots=True)
class ListenEntry:
    """One listener: ``host`` is an address, a host name or ``unix:/path``."""

    host: str
    port: int  # 0 for a unix socket (and for "pick a free port" on TCP)
    tls: bool = False

    @property
    def is_unix(self) -> bool:
        return self.host.startswith(UNIX_PREFIX)

    def url(self, port: int | None = None) -> str:
        """``https://ADDR:PORT`` as logged (``port``: the real one after binding :0)."""
        if self.is_unix:
            return ("https+" if self.tls else "http+") + self.host
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port if port is None else port}"


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise Invalid(f"has no port: {entry!r} needs ADDRESS:PORT, such as '127.0.0.1:8080'")
    port = int(text)
    if port > MAX_PORT:
        raise Invalid(f"has port {port}, out of range 0\u2013{MAX_PORT}")
    return port


def listen_address(value: object) -> tuple[str, int]:
    """``"127.0.0.1:8080"``, ``"[::]:80"``, ``"localhost:80"`` or ``"unix:/run/x.sock"``."""
    if not isinstance(value, str):
        raise Invalid(f"is {kind_of(value)}, expected 'ADDRESS:PORT' or 'unix:/path'")
    if "://" in value:
        raise Invalid("is a URL; a listener is 'ADDRESS:PORT' such as '127.0.0.1:8080'")
    if value.startswith(UNIX_PREFIX):
        host = host_address(value)
        assert isinstance(host, str)
        return host, 0
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise Invalid(f"is not '[IPv6]:PORT' (such as '[::]:443'): {value!r}")
        try:
            address = ipaddress.IPv6Address(inside)
        except ValueError:
            raise Invalid(f"has {inside!r} in brackets, which is not an IPv6 address") from None
        return str(address), _port(rest[1:], value)
    host, colon, port_text = value.rpartition(":")
    if not colon:
        raise Invalid(f"has no port: {value!r} needs ADDRESS:PORT, such as '127.0.0.1:8080'")
    if ":" in host:
        raise Invalid(f"is an IPv6 address without brackets: write '[{host}]:{port_text}'")
    port = _port(port_text, value)
    checked = host_address(host)
    assert isinstance(checked, str)
    return checked, port


def listen_entry(value: object) -> ListenEntry:
    """A string (plain HTTP) or a mapping ``{address: ..., tls: true|false}``."""
    if isinstance(value, str):
        return ListenEntry(*listen_address(value))
    if not isinstance(value, dict):
        raise Invalid(f"is {kind_of(value)}, expected 'ADDRESS:PORT' or {{address: ..., tls: ...}}")
    unknown = [str(key) for key in value if key not in LISTEN_KEYS]
    if unknown:
        raise Invalid(f"has unknown key {unknown[0]!r} (a listener has address and tls)")
    if "address" not in value:
        raise Invalid("needs an address, such as address: '127.0.0.1:8443'")
    tls = value.get("tls", False)
    if not isinstance(tls, bool):
        raise Invalid(f"has tls: {show(tls)}, expected true or false")
    return ListenEntry(*listen_address(value["address"]), tls=tls)


def listen_list(value: object) -> tuple[ListenEntry, ...]:
    """The whole ``listen:`` list: at least one entry, no address twice."""
    if not isinstance(value, list):
        raise Invalid(f"is {kind_of(value)}, expected a list of listeners")
    if not value:
        raise Invalid("is empty; give at least one listener or leave listen out")
    entries: list[ListenEntry] = []
    seen: dict[tuple[str, int], int] = {}
    for number, item in enumerate(value, 1):
        try:
            entry = listen_entry(item)
        except Invalid as exc:
            raise Invalid(f"entry {number} {exc.reason}") from None
        where = (entry.host, entry.port)
        if where in seen and (entry.is_unix or entry.port):
            raise Invalid(f"entry {number} repeats entry {seen[where]} ({show(item)})")
        seen.setdefault(where, number)
        entries.append(entry)
    return tuple(entries)


def min_version(value: object) -> str:
    if value not in MIN_VERSIONS:
        raise Invalid(f"is {show(value)}, expected one of " + ", ".join(MIN_VERSIONS))
    assert isinstance(value, str)
    return value


def _path(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"has {key}: {show(value)}, expected the path of a PEM file")
    return value


def tls_settings(value: object, *, inherited_min_version: str = DEFAULT_MIN_VERSION) -> TlsSettings:
    """``{certificate: PATH, key: PATH, min_version: TLSv1.2}`` (paths as written)."""
    if not isinstance(value, dict):
        raise Invalid(f"is {kind_of(value)}, expected a mapping with certificate and key")
    unknown = [str(key) for key in value if key not in TLS_KEYS]
    if unknown:
        raise Invalid(f"has unknown key {unknown[0]!r} (tls has certificate, key, min_version)")
    for key in ("certificate", "key"):
        if key not in value:
            raise Invalid(f"needs {key}: the path of a PEM file")
    version = value.get("min_version", inherited_min_version)
    try:
        version = min_version(version)
    except Invalid as exc:
        raise Invalid(f"has min_version {exc.reason}") from None
    return TlsSettings(
        _path(value["certificate"], "certificate"), _path(value["key"], "key"), version
    )
