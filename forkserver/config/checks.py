"""Value checks: one function per kind of value, each normalizing or raising Invalid.

Owns the rules a single value must follow and the words of their messages ("KEY:
VALUE reason"). Must not know where a value came from (file or command line).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import yaml

from forkserver.config.model import MAX_SECONDS, MAX_UNIX_PATH, MAX_WORKERS, UNIX_PREFIX

# Ranges are typeset with an en dash (U+2013: "0 to 65535" as in SPEC.md and the docs).
RANGE_DASH = "\u2013"
MAX_SHOWN = 60  # a list or mapping quoted in a message is cut to this many characters

# -- value checks ---------------------------------------------------------------------


class Invalid(Exception):
    """A value broke a rule; ``reason`` completes the sentence "KEY: VALUE …"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidKey(Invalid):
    """An entry of a mapping-valued key has a bad name: "KEY: NAME reason"."""


class InvalidItems(Exception):
    """Entries of a mapping-valued key broke their rules: (name, value, problem) each."""

    def __init__(self, problems: list[tuple[object, object, Invalid]]) -> None:
        super().__init__(f"{len(problems)} invalid entries")
        self.problems = problems


Check = Callable[[object], object]  # returns the normalized value or raises Invalid


def kind_of(value: object) -> str:
    """What a YAML value is, in words, for "'8080' is a string, expected …"."""
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "a boolean"
    kinds: tuple[tuple[type, str], ...] = (
        (str, "a string"), (int, "an integer"), (float, "a number"),
        (list, "a list"), (dict, "a mapping"),
    )
    for kind, words in kinds:
        if isinstance(value, kind):
            return words
    return f"a {type(value).__name__}"


def show(value: object) -> str:
    """A value as the user would recognise it from their YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", ".inf").replace("nan", ".nan")
    if isinstance(value, str | int | float):
        return repr(value)  # never shortened: a path must be shown whole
    # A list or mapping in flow style, shortened: the line number says where the rest is.
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def wrong_type(value: object, expected: str) -> Invalid:
    if value is None:
        return Invalid(f"is not allowed here, expected {expected}")
    return Invalid(f"is {kind_of(value)}, expected {expected}")


def integer(minimum: int, maximum: int | None = None) -> Check:
    expected = "an integer"

    def check(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong_type(value, expected)
        if maximum is None and value < minimum:
            raise Invalid(f"is out of range (must be ≥ {minimum})")
        if maximum is not None and not minimum <= value <= maximum:
            raise Invalid(f"is out of range {minimum}{RANGE_DASH}{maximum}")
        return value

    return check


def seconds(value: object) -> object:
    # An int is fine where seconds are expected ("timeouts.send: 60"), a bool is not.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(value, "a number of seconds")
    if not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise Invalid(f"is out of range (must be > 0 and ≤ {MAX_SECONDS:g})")
    return float(value)


def boolean(value: object) -> object:
    if not isinstance(value, bool):
        raise wrong_type(value, "true or false")
    return value


def workers_count(value: object) -> object:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(value, f"an integer 1{RANGE_DASH}{MAX_WORKERS} or 'auto'")
    return integer(1, MAX_WORKERS)(value)


def one_of(options: tuple[str, ...]) -> Check:
    def check(value: object) -> object:
        if not isinstance(value, str):
            raise wrong_type(value, "one of " + ", ".join(options))
        if value not in options:
            close = difflib.get_close_matches(value.lower(), options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise Invalid("is not one of " + ", ".join(options) + hint)
        return value

    return check


def nonblank_string(*, nullable: bool = False, expected: str = "a string") -> Check:
    def check(value: object) -> object:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise wrong_type(value, expected + (" or null" if nullable else ""))
        if not value.strip():
            raise Invalid("is empty")
        if value != value.strip() or any(ord(c) < 32 for c in value):
            # Invisible characters in a name or path are always a copy-paste accident.
            raise Invalid("contains leading/trailing blanks or control characters")
        return value

    return check


# A host name as getaddrinfo takes it (RFC 1123 §2.1 labels, an optional final dot).
# A last label of digits only would be a malformed IPv4 address ("127.1", "10.0.0.300"),
# which getaddrinfo reads in surprising ways (inet_aton: 127.0.0.1), so it is refused.
HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"(?![0-9]+\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
HOST_AND_PORT = re.compile(r"(?P<host>[^:\[\]]+|\[(?P<v6>[^\]]*)\]):(?P<port>[0-9]+)")


def host_hint(host: str, port: str | None = None) -> str:
    """``use host: 127.0.0.1 and port: 8080`` (an IPv6 address quoted, as YAML needs)."""
    written = repr(host) if ":" in host else host
    return f"use host: {written}" + (f" and port: {port}" if port else "")


def host_form_problem(host: str) -> str | None:
    """Why ``host`` is not an address or name to bind (the habits of other tools), or None.

    host is the address alone: nginx's ``listen 127.0.0.1:8080``, a URL or the bracketed
    IPv6 of a URL would pass --check as a host name and fail only at bind time.
    """
    if "://" in host:
        parts = urlsplit(host)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.hostname:
            hint = host_hint(parts.hostname, str(port) if port is not None else None)
            return f"is a URL; host is the address alone ({hint})"
        return "is a URL; host is the address alone, such as 127.0.0.1"
    both = HOST_AND_PORT.fullmatch(host)
    if both:
        address = both.group("v6") if both.group("v6") is not None else both.group("host")
        return f"is an address and a port ({host_hint(address, both.group('port'))})"
    if host.startswith("[") and host.endswith("]"):
        return f"has brackets, which belong in URLs only ({host_hint(host[1:-1])})"
    if host == "*":
        return "is not an address (use 0.0.0.0 for every IPv4 address, '::' for IPv6 too)"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    if ":" in host or not HOST_NAME.fullmatch(host):
        return "is not an IP address, a host name or 'unix:/path'"
    return None


def host_address(value: object) -> object:
    """An address or name to bind, or ``unix:`` and the absolute path of a socket file."""
    host = nonblank_string(expected="an address or 'unix:/path'")(value)
    assert isinstance(host, str)
    if not host.startswith(UNIX_PREFIX):
        problem = host_form_problem(host)
        if problem is not None:
            raise Invalid(problem)
        try:
            # One spelling per address: "0:0::0" is "::" (and gets dual-stack like it).
            return str(ipaddress.ip_address(host))
        except ValueError:
            return host  # a host name: listeners.host_problems resolves it
    path = host[len(UNIX_PREFIX) :]
    if not path.startswith("/"):
        raise Invalid(
            "needs an absolute path after 'unix:', such as 'unix:/run/forkserver/http.sock'"
        )
    if path.endswith("/"):
        raise Invalid("names a directory; the socket needs a file name")
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise Invalid(f"has a path longer than {MAX_UNIX_PATH} bytes (the limit of a unix socket)")
    return UNIX_PREFIX + os.path.normpath(path)


def octal_mode(value: object) -> object:
    """File permission bits written as quoted octal text: '0660', '660', '0600'."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise wrong_type(value, "octal permission bits in quotes such as '0660', or null")
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise Invalid("is not octal permission bits such as '0660'")
    return f"{int(value, 8):04o}"


def owner_spec(value: object) -> object:
    """``user``, ``user:group`` or ``:group``; the names are looked up at start-up."""
    if value is None:
        return None
    text = nonblank_string(expected="'user:group'")(value)
    assert isinstance(text, str)
    user, _, group = text.partition(":")
    if text.count(":") > 1 or not (user or group):
        raise Invalid("is not 'user', 'user:group' or ':group'")
    if ":" in text and not group:
        raise Invalid("has a colon but no group ('user' alone keeps the group)")
    return text


def error_log_path(value: object) -> object:
    if value is None:
        raise Invalid("is not allowed: the error log cannot be off (use '-' for stderr)")
    return nonblank_string(expected="'-' or a path")(value)


# The status path is compared with the request path exactly as sent, so it must be a
# path a client sends unchanged: no %-escapes, dot-segments, empty segments or query.
STATUS_PATH = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@]+)+/?")


def status_path(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, str):
        raise wrong_type(value, "a URL path such as '/server-status' or null")
    segments = value.strip("/").split("/")
    if not STATUS_PATH.fullmatch(value) or any(s in (".", "..") for s in segments):
        raise Invalid(
            "is not a URL path such as '/server-status' (starting with /; letters, digits "
            "and -._~!$&'()*+,;=:@; no empty, '.' or '..' segments, %-escapes or query)"
        )
    return value


def network(value: object) -> str:
    """One network entry: IPv4 or IPv6, ``10.0.0.0/8`` or a bare address (its /32, /128)."""
    if not isinstance(value, str):
        raise wrong_type(value, "a network such as '127.0.0.1/32' or '::1/128'")
    try:
        return str(ipaddress.ip_network(value))
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise Invalid("is not an IPv4 or IPv6 network such as '10.0.0.0/8' or '::1/128'") from None
    raise Invalid(f"has host bits set (did you mean {str(loose)!r}?)")


def network_list(when_empty: str | None) -> Check:
    """A list of networks, each bad entry reported on its own line.

    ``when_empty`` is the problem an empty list is (None: an empty list is fine).
    """

    def check(value: object) -> object:
        if not isinstance(value, list):
            raise wrong_type(value, "a list of networks such as ['127.0.0.1/32', '::1/128']")
        if not value and when_empty is not None:
            raise Invalid(when_empty)
        checked: list[object] = []
        problems: list[tuple[object, object, Invalid]] = []
        for index, item in enumerate(value):
            try:
                checked.append(network(item))
            except Invalid as exc:
                problems.append((index, item, exc))
        if problems:
            raise InvalidItems(problems)
        return tuple(checked)

    return check
