"""Listeners and HTTPS settings: the checks of ``listen:``, ``tls:`` and their rules together.

Owns what a ``listen:`` entry may be (``"127.0.0.1:8080"``, ``"[::]:80"``,
``"unix:/run/x.sock"``, ``{address: ..., tls: true}``), the ``tls:`` keys' values,
and the rules between keys of SPEC §6: ``listen`` replaces ``host``/``port`` (both
given is an error), a TLS listener needs a certificate and key, the two go together.
Pure: loading the certificate files is forkserver/tls's (with ``ssl``, outside the core).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING

from forkserver.config.checks import Invalid, host_address, kind_of, show
from forkserver.config.model import UNIX_PREFIX, Config, ListenEntry, TlsSettings

if TYPE_CHECKING:
    from forkserver.config.schema import Origin, Problem

MIN_VERSIONS = ("TLSv1.2", "TLSv1.3")  # TLS 1.0/1.1 and SSLv3 are never offered (RFC 8996)
DEFAULT_MIN_VERSION = "TLSv1.2"
MAX_PORT = 65535
LISTEN_KEYS = ("address", "tls")
TLS_KEYS = ("certificate", "key", "min_version")
BUILT_IN = "built-in default"  # the Origin.where of a value nobody set (config/layers.py)


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
    """The whole ``listen:`` list, no address twice (empty: host and port's one listener)."""
    if value is None:
        return ()
    if isinstance(value, int | str) and not isinstance(value, bool):
        # nginx's "listen 8080;" habit, or one entry without the list around it.
        raise Invalid(
            f"is {kind_of(value)}, expected a list of listeners such as "
            "['127.0.0.1:8080', {address: '127.0.0.1:8443', tls: true}]"
        )
    if not isinstance(value, list):
        raise Invalid(f"is {kind_of(value)}, expected a list of listeners")
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


def min_version(value: object) -> object:
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
    try:
        version = str(min_version(value.get("min_version", inherited_min_version)))
    except Invalid as exc:
        raise Invalid(f"has min_version {exc.reason}") from None
    return TlsSettings(
        _path(value["certificate"], "certificate"), _path(value["key"], "key"), version
    )


def tls_listeners(values: Mapping[str, object]) -> list[ListenEntry]:
    listen = values["listen"]
    assert isinstance(listen, tuple)
    return [entry for entry in listen if entry.tls]


def listen_problems(values: Mapping[str, object], origins: Mapping[str, Origin]) -> list[Problem]:
    """SPEC §6 between keys: listen or host/port; a TLS listener has a certificate."""
    problems: list[Problem] = []
    if values["listen"]:
        for name in ("host", "port"):
            origin = origins[name]
            if origin.where != BUILT_IN:
                problems.append(origin.problem(
                    values[name], "cannot be given with listen (listen replaces host and "
                    "port: add the address to listen instead)"
                ))

    certificate, key = values["tls.certificate"], values["tls.key"]
    if (certificate is None) != (key is None):
        pair = ("tls.key", "tls.certificate") if key is None else ("tls.certificate", "tls.key")
        problems.append(origins[pair[1]].problem(values[pair[1]], f"needs {pair[0]} as well"))
    elif certificate is None and tls_listeners(values) and not values.get("sites"):
        problems.append(origins["listen"].problem(
            "tls: true", "needs a certificate: set tls.certificate and tls.key"
        ))
    if values["proxy_protocol"] and tls_listeners(values):
        problems.append(origins["proxy_protocol"].problem(
            True, "cannot be used with a TLS listener yet (the PROXY header would have to "
            "come before the handshake); terminate TLS here or send no PROXY header"
        ))
    return problems


def listen_entries(config: Config) -> tuple[ListenEntry, ...]:
    """The listeners a configuration asks for, in order: ``listen``, else host/port."""
    return config.listen or (ListenEntry(config.host, config.port),)
