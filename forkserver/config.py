"""Configuration: YAML file + command-line overrides → a frozen ``Config``.

Owns the schema (keys, types, ranges, defaults), path resolution relative to the
file, and every validation message. Must not touch sockets, signals or processes:
it may read files and stat paths, nothing more.
"""

from __future__ import annotations

import difflib
import grp
import ipaddress
import math
import os
import pwd
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import yaml

from forkserver.errors import ConfigError

__all__ = [
    "ACCESS_LOG_FORMATS", "ERROR_PAGE_STATUSES", "MAX_WORKERS", "SCHEMA", "Config", "Limits",
    "Status", "Timeouts",
    "environment_problems", "load_config",
]


@dataclass(frozen=True, slots=True)
class Timeouts:
    header: float = 10.0  # whole request head must arrive within this
    keepalive: float = 15.0  # idle time allowed between requests
    send: float = 60.0  # a response may make no progress for this long
    graceful: float = 30.0  # drain time for a graceful stop or a reload
    worker: float = 30.0  # a worker silent this long is killed and replaced


@dataclass(frozen=True, slots=True)
class Limits:
    request_line: int = 8190  # longer → 414 (Apache's LimitRequestLine default)
    header_bytes: int = 16384  # larger head → 431
    headers: int = 100  # more fields → 431


@dataclass(frozen=True, slots=True)
class Status:
    path: str | None = None  # the status endpoint's URL path; None = off
    allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # client networks, normalized
    access_log: bool = True  # false: answers to allowed clients leave no access-log line


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"  # or "unix:/absolute/path" for a unix domain socket
    port: int = 8080
    socket_mode: str | None = None  # octal text such as "0660"; unix sockets only
    socket_owner: str | None = None  # "user", "user:group" or ":group"; unix sockets only
    docroot: str = "."  # absolute after loading
    workers: int = 1  # resolved: ``auto`` becomes the usable CPU count at load time
    backlog: int = 1024
    daemon: bool = False
    pidfile: str | None = None  # absolute after loading
    user: str | None = None
    group: str | None = None
    access_log: str | None = "-"  # "-" = stderr, None = off, else an absolute path
    error_log: str = "-"  # "-" = stderr, else an absolute path
    log_level: str = "info"
    access_log_format: str = "combined"  # combined, common or json
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_requests: int = 0
    max_requests_jitter: int = 0
    limits: Limits = field(default_factory=Limits)
    # Static files (docs/http.md). Mappings are kept as tuples of pairs, in file order.
    precompressed: bool = True  # serve X.br / X.gz when the client accepts them
    cache_control: tuple[tuple[str, str | None], ...] = (("*", "no-cache"),)  # glob → value
    headers: tuple[tuple[str, str], ...] = ()  # added to every response
    mime_types: tuple[tuple[str, str], ...] = ()  # extension (lower case, no dot) → type
    server_tokens: bool = False  # Server: forkserver/VERSION instead of forkserver
    autoindex: bool = False  # list a directory that has no index.html
    error_pages: tuple[tuple[int, str], ...] = ()  # status → path in the docroot
    status: Status = field(default_factory=Status)
    # PROXY protocol (forkserver/proxy.py): every connection starts with a header,
    # accepted only from these networks (normalized CIDR text).
    proxy_protocol: bool = False
    proxy_protocol_from: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    source: str | None = None  # absolute path of the YAML file, None without -c


# -- bounds, each with its reason ---------------------------------------------------

# The scoreboard (layer 3, so not importable here) has 1024 slots, and during a reload
# two generations run side by side; half of it keeps a full reload possible.
MAX_WORKERS = 512
# listen(2) takes a C int; the kernel silently caps it at net.core.somaxconn anyway.
MAX_BACKLOG = 2**31 - 1
# Deadlines become epoll timeouts in milliseconds (a C int: about 24 days); a day is
# already far beyond any sensible timeout, so anything longer is surely a typo.
MAX_SECONDS = 86_400.0
# "GET / HTTP/1.1" alone is 14 bytes; 64 still serves short paths while refusing a
# limit so small that nearly every request would get a 414.
MIN_REQUEST_LINE = 64
# A whole head must hold a request line, a Host field and a few ordinary fields.
MIN_HEADER_BYTES = 256
# Every buffer a worker keeps per connection is bounded by these; beyond 1 MiB a slow
# client could pin a lot of memory per connection.
MAX_HEAD_BYTES = 1_048_576
# HTTP/1.1 requires Host, so at least one field must be allowed.
MIN_HEADERS = 1
MAX_HEADERS = 10_000
LOG_LEVELS = ("debug", "info", "warning", "error")
ACCESS_LOG_FORMATS = ("combined", "common", "json")
COMMAND_LINE = "command line"
# Ranges are typeset with an en dash (U+2013: "0 to 65535" as in SPEC.md and the docs).
RANGE_DASH = "\u2013"
MAX_SHOWN = 60  # a list or mapping quoted in a message is cut to this many characters
UNIX_PREFIX = "unix:"  # host: "unix:/run/forkserver/http.sock"
# sockaddr_un.sun_path holds 108 bytes, the last one a NUL.
MAX_UNIX_PATH = 107


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


# -- mapping-valued keys: each entry checked on its own line ---------------------------

EntryCheck = Callable[[object, object], tuple[object, object]]


def mapping_of(check_entry: EntryCheck, expected: str) -> Check:
    """A mapping whose entries each pass ``check_entry`` → a tuple of pairs, in order.

    ``null`` (every entry commented out) is the empty mapping. Every bad entry is
    reported, each on its own line (InvalidItems), not just the first.
    """

    def check(value: object) -> object:
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise wrong_type(value, f"a mapping of {expected}")
        pairs: list[tuple[object, object]] = []
        problems: list[tuple[object, object, Invalid]] = []
        for name, item in value.items():
            try:
                pairs.append(check_entry(name, item))
            except Invalid as exc:
                problems.append((name, item, exc))
        if problems:
            raise InvalidItems(problems)
        return tuple(pairs)

    return check


# tchar (RFC 9110 §5.6.2): header names, media type parts, cache directives.
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
QUOTED_STRING = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
HEADER_NAME = re.compile(TOKEN)
# Values the worker writes as latin-1: visible ASCII, inner spaces and tabs only.
HEADER_VALUE = re.compile(r"[!-~](?:[ \t!-~]*[!-~])?")
CACHE_DIRECTIVE = rf"{TOKEN}(?:=(?:{TOKEN}|{QUOTED_STRING}))?"
CACHE_DIRECTIVES = re.compile(rf"{CACHE_DIRECTIVE}(?:[ \t]*,[ \t]*{CACHE_DIRECTIVE})*")
MEDIA_TYPE = re.compile(
    rf"{TOKEN}/{TOKEN}(?:[ \t]*;[ \t]*{TOKEN}=(?:{TOKEN}|{QUOTED_STRING}))*"
)
EXTENSION = re.compile(r"\.?[A-Za-z0-9_+\-]+")
# Fields the server computes itself: a fixed value would contradict or duplicate it.
MANAGED_HEADERS = {
    "accept-ranges": "", "age": "", "allow": "", "connection": "",
    "content-encoding": "", "content-length": "", "content-range": "",
    "content-type": " (use mime_types)", "date": "", "etag": "", "keep-alive": "",
    "last-modified": "", "location": "", "proxy-connection": "", "te": "", "trailer": "",
    "transfer-encoding": "", "upgrade": "", "vary": "",
    "cache-control": " (use cache_control)", "server": " (use server_tokens)",
    "x-content-type-options": " (always nosniff)",
}
# Statuses whose page may come from the docroot (error_pages).
ERROR_PAGE_STATUSES = (403, 404, 500)


def cache_control_rule(pattern: object, value: object) -> tuple[object, object]:
    if not isinstance(pattern, str) or not pattern or any(ord(c) < 32 for c in pattern):
        raise InvalidKey("is not a glob pattern such as '*.css' or '/assets/**'")
    if value is None:
        return pattern, None
    if not isinstance(value, str):
        raise wrong_type(value, "a Cache-Control value or null")
    if not CACHE_DIRECTIVES.fullmatch(value):
        raise Invalid(
            "is not a list of Cache-Control directives such as 'public, max-age=3600'"
        )
    return pattern, value


def extra_header(name: object, value: object) -> tuple[object, object]:
    if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
        raise InvalidKey("is not a header field name (letters, digits and !#$%&'*+-.^_`|~)")
    managed = MANAGED_HEADERS.get(name.lower())
    if managed is not None:
        raise InvalidKey(f"is a header forkserver sets itself{managed}")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise wrong_type(value, "a string")
    if not HEADER_VALUE.fullmatch(value):
        raise Invalid("is not a header value (visible ASCII, no leading or trailing blanks)")
    return name, value


def mime_type_override(extension: object, media_type: object) -> tuple[object, object]:
    if not isinstance(extension, str) or not EXTENSION.fullmatch(extension):
        raise InvalidKey("is not a file extension such as 'woff2' or '.woff2'")
    if not isinstance(media_type, str):
        raise wrong_type(media_type, "a media type")
    if not MEDIA_TYPE.fullmatch(media_type):
        raise Invalid("is not a media type such as 'text/plain' or 'text/plain; charset=utf-8'")
    return extension.lstrip(".").lower(), media_type


def error_page(status: object, path: object) -> tuple[object, object]:
    statuses = ", ".join(str(s) for s in ERROR_PAGE_STATUSES)
    if isinstance(status, bool) or not isinstance(status, int):
        raise InvalidKey(f"is {kind_of(status)}, expected one of the statuses {statuses}")
    if status not in ERROR_PAGE_STATUSES:
        raise InvalidKey(f"is not a status whose page can be set ({statuses})")
    if not isinstance(path, str):
        raise wrong_type(path, "a path in the docroot such as '/errors/404.html'")
    segments = path.split("/")
    if (
        not path.startswith("/")
        or any(not s or s.startswith(".") for s in segments[1:])
        or any(ord(c) < 32 for c in path)
    ):
        raise Invalid(
            "is not a file path in the docroot such as '/errors/404.html' (starting "
            "with /, no empty, '.', '..' or hidden segments)"
        )
    return status, path


def unique_names(check_entry: EntryCheck, fold: Callable[[object], object]) -> EntryCheck:
    """``check_entry``, refusing a name that repeats an earlier one once folded."""
    seen: dict[object, object] = {}

    def check(name: object, value: object) -> tuple[object, object]:
        normalized, checked = check_entry(name, value)
        folded = fold(normalized)
        if folded in seen and seen[folded] != name:
            raise InvalidKey(f"repeats {show(seen[folded])}")
        seen.setdefault(folded, name)
        return normalized, checked

    return check


def mapping_without_repeats(
    check_entry: EntryCheck, fold: Callable[[object], object], expected: str
) -> Check:
    """Like mapping_of, for names that repeat once folded (case, a leading dot)."""

    def check(value: object) -> object:
        return mapping_of(unique_names(check_entry, fold), expected)(value)

    return check


def lower_name(name: object) -> object:
    return name.lower() if isinstance(name, str) else name


# -- command-line text → value --------------------------------------------------------

FromText = Callable[[str], object]
DECIMAL = re.compile(r"[+-]?[0-9]+")


def int_from_text(value: str) -> object:
    if not DECIMAL.fullmatch(value):
        raise Invalid("is not an integer")
    return int(value)


def workers_from_text(value: str) -> object:
    return value if value == "auto" else int_from_text(value)


def seconds_from_text(value: str) -> object:
    try:
        return float(value)
    except ValueError:
        raise Invalid("is not a number of seconds") from None


def bool_from_text(value: str) -> object:
    words = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
    if value.lower() not in words:
        raise Invalid("is not true or false")
    return words[value.lower()]


def as_given(value: str) -> object:
    return value


# -- the schema: every key, its default and its rule, in one table --------------------


@dataclass(frozen=True, slots=True)
class Setting:
    default: object  # as it would be written in YAML (``workers: auto``, ``docroot: .``)
    check: Check
    from_text: FromText = as_given  # how a command-line string becomes a value
    is_path: bool = False  # resolved against the file's directory (or the cwd)
    mapping: bool = False  # a mapping whose entries are checked (and reported) one by one


def integer_setting(default: int, minimum: int, maximum: int | None = None) -> Setting:
    return Setting(default, integer(minimum, maximum), int_from_text)


def seconds_setting(default: float) -> Setting:
    return Setting(default, seconds, seconds_from_text)


SCHEMA: dict[str, Setting] = {
    "host": Setting("127.0.0.1", host_address),
    "port": integer_setting(8080, 0, 65535),
    "socket_mode": Setting(None, octal_mode),
    "socket_owner": Setting(None, owner_spec),
    "docroot": Setting(".", nonblank_string(expected="a path"), is_path=True),
    "workers": Setting("auto", workers_count, workers_from_text),
    "backlog": integer_setting(1024, 1, MAX_BACKLOG),
    "daemon": Setting(False, boolean, bool_from_text),
    "pidfile": Setting(None, nonblank_string(nullable=True, expected="a path"), is_path=True),
    "user": Setting(None, nonblank_string(nullable=True, expected="a user name")),
    "group": Setting(None, nonblank_string(nullable=True, expected="a group name")),
    "access_log": Setting(
        "-", nonblank_string(nullable=True, expected="'-' or a path"), is_path=True
    ),
    "error_log": Setting("-", error_log_path, is_path=True),
    "log_level": Setting("info", one_of(LOG_LEVELS)),
    "access_log_format": Setting("combined", one_of(ACCESS_LOG_FORMATS)),
    "timeouts.header": seconds_setting(10),
    "timeouts.keepalive": seconds_setting(15),
    "timeouts.send": seconds_setting(60),
    "timeouts.graceful": seconds_setting(30),
    "timeouts.worker": seconds_setting(30),
    "max_requests": integer_setting(0, 0),
    "max_requests_jitter": integer_setting(0, 0),
    "limits.request_line": integer_setting(8190, MIN_REQUEST_LINE, MAX_HEAD_BYTES),
    "limits.header_bytes": integer_setting(16384, MIN_HEADER_BYTES, MAX_HEAD_BYTES),
    "limits.headers": integer_setting(100, MIN_HEADERS, MAX_HEADERS),
    "precompressed": Setting(True, boolean, bool_from_text),
    "cache_control": Setting(
        {"*": "no-cache"}, mapping_of(cache_control_rule, "glob patterns to values"),
        mapping=True,
    ),
    "headers": Setting(
        {}, mapping_without_repeats(extra_header, lower_name, "header names to values"),
        mapping=True,
    ),
    "mime_types": Setting(
        {}, mapping_without_repeats(mime_type_override, lower_name, "extensions to media types"),
        mapping=True,
    ),
    "server_tokens": Setting(False, boolean, bool_from_text),
    "autoindex": Setting(False, boolean, bool_from_text),
    "error_pages": Setting(
        {}, mapping_of(error_page, "statuses to paths in the docroot"), mapping=True
    ),
    "status.path": Setting(None, status_path),
    "status.allow": Setting(["127.0.0.1/32", "::1/128"], network_list(
        "is empty: no client could read the status (set status.path to null to turn it off)"
    )),
    "status.access_log": Setting(True, boolean, bool_from_text),
    "proxy_protocol": Setting(False, boolean, bool_from_text),
    "proxy_protocol_from": Setting(["127.0.0.1/32", "::1/128"], network_list(None)),
}
SECTIONS = frozenset(key.split(".")[0] for key in SCHEMA if "." in key)
TOP_LEVEL_KEYS = sorted({key.split(".")[0] for key in SCHEMA})


# -- where a value came from ----------------------------------------------------------

# A problem sorts by (rank, line): the file's in line order, then the command line's.
Problem = tuple[tuple[int, int], str]
FILE_RANK, COMMAND_LINE_RANK, DEFAULT_RANK = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value came from: names it in messages and anchors its relative paths."""

    where: str  # "conf/site.yaml:7", "command line" or "built-in default"
    name: str  # "port" in the file, "--port" on the command line
    base_dir: str  # relative paths resolve against this
    rank: tuple[int, int]

    def problem(self, value: object, reason: str) -> Problem:
        return self.rank, f"{self.where}: {self.name}: {show(value)} {reason}"


@dataclass(frozen=True, slots=True)
class Entry:
    """A known key read from the YAML file: its line and its constructed value."""

    key: str
    line: int
    value: object
    item_lines: dict[object, int] = field(default_factory=dict)  # mapping entry → line


# -- reading the YAML with line marks -------------------------------------------------


# A configuration file is read on every reload by the master itself, so what a file can
# cost is bounded before PyYAML sees it or while it reads it, never after. A real file
# is a few KiB, a handful of levels deep, with a few hundred values; each bound is far
# above that and far below what would take a noticeable time (pure-Python PyYAML reads
# about 500 KiB a second).
MAX_FILE_BYTES = 256 * 1024
# PyYAML's composer and constructor recurse once per level: "workers: [[[[…" thousands
# deep ends in RecursionError after seconds of work. Events are counted instead.
MAX_NESTING = 32
# Aliases share nodes, but anything walking a value walks every path through it: nine
# aliases of nine aliases (a "billion laughs") is 9**9 values. Counting each alias at
# the size of what it names bounds every walk of the document, merges included.
MAX_VALUES = 100_000
# One value longer than this is a mistake (a pasted file?); it also bounds the work of
# YAML 1.1's base-60 integers ("1:0:0:…"), whose cost grows with the square of their length.
MAX_SCALAR_CHARS = 16_384
# An integer that needs more digits than this is no port, count or size: refusing it
# keeps int("1" * 5000) (Python refuses > 4300 digits) and huge hex numbers out.
MAX_INTEGER_CHARS = 64
# Explicit tags accepted: the standard scalar ones, harmless (they only say which plain
# type a scalar is, e.g. "!!str 0660"), and "!" (non-specific: a string). Every other
# tag (!!binary, !!set, !!omap, !!python/…, local ones such as !env) is refused, on a
# key or a value alike: forkserver reads plain data and nothing would interpret them.
YAML_TAG_PREFIX = "tag:yaml.org,2002:"
ACCEPTED_TAGS = frozenset(
    {"!"} | {YAML_TAG_PREFIX + t for t in ("str", "int", "float", "bool", "null")}
)
MERGE_TAG = YAML_TAG_PREFIX + "merge"
# Top-level keys starting with this are ignored: a place for anchors that merge keys use
# (the convention of docker compose's "extension fields").
EXTENSION_PREFIX = "x-"


def read_text(path: str, *, label: str) -> str:
    """The file's text; ConfigError with one clear line (naming ``label``) when unreadable."""
    try:
        with open(path, "rb") as stream:
            # One byte more than allowed tells "too big" from "exactly the limit" without
            # reading a huge file (or an endless one such as /dev/zero) into memory.
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([f"{label}: cannot read the configuration file: {reason}"]) from None
    if len(data) > MAX_FILE_BYTES:
        line = data.count(b"\n", 0, MAX_FILE_BYTES) + 1
        raise ConfigError([
            f"{label}:{line}: the file is larger than {MAX_FILE_BYTES // 1024} KiB; "
            "a configuration is a few KiB (is this the right file?)"
        ])
    if b"\0" in data:
        # A NUL byte means a binary file (or UTF-16 text): say so before YAML's
        # "special characters are not allowed" and before the UTF-8 check.
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise ConfigError([
            f"{label}:{line}: the file contains a NUL byte; a configuration is UTF-8 text"
        ])
    try:
        # utf-8-sig: a BOM left by a Windows editor is not part of the first key.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{label}:{line}: the file is not UTF-8 text"]) from None


# "access_log: -" reads as the start of a list on the same line as its key; since "-"
# means stderr in this schema, the bare dash is the likeliest cause of this error.
BARE_DASH_PROBLEM = "sequence entries are not allowed here"


def yaml_error_problem(path: str, source: str, exc: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN: YAML syntax error: …`` with 1-based line and column."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        message = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            context_mark = exc.context_mark
            started = (
                f" that starts at line {context_mark.line + 1}, column {context_mark.column + 1}"
                if context_mark and exc.context.startswith("while") and context_mark != mark
                else ""
            )
            message += f" ({exc.context}{started})"
        if exc.problem == BARE_DASH_PROBLEM:
            message += " (for stderr write the dash in quotes: \"-\")"
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else (
            "YAML syntax error"
        )
        return f"{where}: {kind}: {message}"
    if isinstance(exc, yaml.reader.ReaderError):
        line = source.count("\n", 0, exc.position) + 1
        column = exc.position - (source.rfind("\n", 0, exc.position) + 1) + 1
        return (
            f"{path}:{line}:{column}: YAML syntax error: {exc.reason}: "
            f"#x{exc.character:04x}"
        )
    return f"{path}: YAML syntax error: {exc}"


def short_tag(tag: str) -> str:
    """``tag:yaml.org,2002:binary`` → ``!!binary``, as it is written in a file."""
    return "!!" + tag[len(YAML_TAG_PREFIX):] if tag.startswith(YAML_TAG_PREFIX) else tag


class YamlRefused(Exception):
    """The document breaks a bound or the tag rule at ``event``: stop reading it."""

    def __init__(self, event: yaml.Event, reason: str) -> None:
        super().__init__(reason)
        mark = event.start_mark  # the parser marks every event; None only in the stubs
        self.line, self.column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        self.reason = reason

    def problem(self, path: str) -> str:
        return f"{path}:{self.line}:{self.column}: YAML error: {self.reason}"


class GuardedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, checking each parser event before the composer sees it.

    The parser and scanner are iterative, the composer and constructor recursive, so
    nesting, alias expansion and tags are all judged here, one event at a time, and
    the document is refused (YamlRefused) before any of them can cost anything.
    """

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.depth = 0
        self.values = 0  # nodes so far, each alias counted at the size of what it names
        self.open: list[tuple[str | None, int]] = []  # (anchor, values before) per level
        self.sizes: dict[str, int] = {}  # anchor → values under it, aliases expanded
        self.tag_problems: list[YamlRefused] = []  # all reported together, after reading

    def get_event(self) -> yaml.Event:
        event: yaml.Event = super().get_event()  # type: ignore[no-untyped-call]  # untyped stub
        self.guard(event)
        return event

    def guard(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in self.open):
                raise YamlRefused(event, f"the alias *{event.anchor} is inside its own anchor "
                                        f"&{event.anchor} (a value cannot contain itself)")
            self.count(event, self.sizes.get(event.anchor or "", 0))
            return
        if isinstance(event, yaml.NodeEvent):  # scalars and collection starts
            tag = getattr(event, "tag", None)
            if tag is not None and tag not in ACCEPTED_TAGS:
                self.tag_problems.append(YamlRefused(event, (
                    f"the tag {short_tag(tag)} is not accepted (forkserver reads plain "
                    "data; only !!str, !!int, !!float, !!bool and !!null may be written)"
                )))
            self.count(event, 1)
        if isinstance(event, yaml.ScalarEvent):
            if len(event.value) > MAX_SCALAR_CHARS:
                raise YamlRefused(event, f"a value longer than {MAX_SCALAR_CHARS} characters")
            if event.anchor is not None:
                self.sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise YamlRefused(event, f"lists and mappings nested more than {MAX_NESTING} "
                                        "deep")
            self.open.append((event.anchor, self.values - 1))
        elif isinstance(event, yaml.CollectionEndEvent):
            self.depth -= 1
            anchor, before = self.open.pop()
            if anchor is not None:
                self.sizes[anchor] = self.values - before

    def count(self, event: yaml.Event, values: int) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            raise YamlRefused(event, (
                f"more than {MAX_VALUES} values once aliases are expanded (aliases of "
                "aliases multiply: is this an alias bomb?)"
            ))

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        self.merge(node, 1)

    def merge(self, node: yaml.MappingNode, depth: int) -> None:
        """Apply merge keys (``<<: *defaults``) in place, as YAML 1.1 defines them.

        Replaces PyYAML's version, which keeps overridden entries (fine for a dict, but
        this reader reports repeated keys) and recurses without bound through chains of
        merges. The mapping's own entries win over merged ones; of several merged
        mappings (``<<: [*a, *b]``) the first wins. Merged entries keep their nodes, so
        their lines in messages are where they are written (in the anchored mapping).
        Applying it twice changes nothing, so a mapping reached through two aliases
        reads the same both times.
        """
        if depth > MAX_NESTING:
            raise yaml.constructor.ConstructorError(
                None, None, f"merge keys ('<<') nested more than {MAX_NESTING} deep",
                node.start_mark,
            )
        own: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                own.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [
                value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        "a merge key '<<' takes a mapping or a list of mappings, such as "
                        "'<<: *defaults' (write '\"<<\"' for a key of that name)",
                        source.start_mark,
                    )
                self.merge(source, depth + 1)
                merged.extend(source.value)
        taken = {entry_identity(key) for key, _ in own}
        kept = []
        for key, value in merged:
            if entry_identity(key) not in taken:
                taken.add(entry_identity(key))
                kept.append((key, value))
        node.value = kept + own

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INTEGER_CHARS:
            raise ValueError(f"an integer longer than {MAX_INTEGER_CHARS} characters")
        return super().construct_yaml_int(node)

    def construct_yaml_word(self, node: yaml.ScalarNode) -> str:
        return str(self.construct_scalar(node))


GuardedLoader.add_constructor(YAML_TAG_PREFIX + "int", GuardedLoader.construct_yaml_int)
# YAML 1.1 gives a plain "<<" and "=" types of their own (merge, value), which mean
# something only as a key; anywhere else they are the text they look like.
for _special in ("merge", "value"):
    GuardedLoader.add_constructor(YAML_TAG_PREFIX + _special, GuardedLoader.construct_yaml_word)


def entry_identity(key: yaml.Node) -> object:
    """What makes two mapping keys the same key: the same tag and text for a scalar."""
    return (key.tag, key.value) if isinstance(key, yaml.ScalarNode) else id(key)


class Unreadable(Exception):
    """PyYAML could not build a value: ``reason`` says why, for "KEY: unreadable value: …"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FileReader:
    """Walks the composed YAML node tree, so each key keeps its line.

    ``safe_load``'s plain dict would lose the lines, silently keep the last of two
    duplicate keys, and stop at the first bad value; this collects every problem.
    Values are still built by PyYAML's SafeConstructor, so no tag can run code.
    """

    def __init__(self, path: str, loader: GuardedLoader) -> None:
        self.path = path
        self.loader = loader
        self.entries: list[Entry] = []
        self.problems: list[Problem] = []
        self.empty_sections: dict[str, int] = {}  # section → its line, for unknown_key

    def report(self, line: int, key: str, message: str) -> None:
        self.problems.append(((FILE_RANK, line), f"{self.path}:{line}: {key}: {message}"))

    def construct(self, node: yaml.Node) -> object:
        """The value of ``node``, or Unreadable with the reason PyYAML could not build it.

        Tags were vetted while reading, so what fails here is a scalar that does not
        fit its type ("!!int abc", "!!bool maybe", "0x_", "2001-13-45") or a bad merge.
        """
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise Unreadable(exc.problem or "cannot be read") from None
        except KeyError as exc:  # SafeConstructor's !!bool looks the word up in a dict
            raise Unreadable(f"{show(exc.args[0])} is not a YAML boolean") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise Unreadable(str(exc)) from None

    def entries_of(self, node: yaml.MappingNode, key: str) -> list[tuple[yaml.Node, yaml.Node]]:
        """A mapping's entries with merge keys applied; [] and a problem if they cannot be."""
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            self.report(mark.line + 1, key or "<<", exc.problem or "bad merge key")
            return []
        return list(node.value)

    def read_mapping(self, node: yaml.MappingNode, section: str = "") -> None:
        prefix = section + "." if section else ""
        first_line: dict[str, int] = {}
        for key_node, value_node in self.entries_of(node, section):
            line = key_node.start_mark.line + 1
            try:
                name = self.key_name(key_node)
            except Unreadable as exc:
                self.report(line, prefix + show(key_node.value), f"unreadable key: {exc.reason}")
                continue
            if name is None:
                shown = show(self.construct(key_node)) if isinstance(
                    key_node, yaml.ScalarNode) else "a list or mapping"
                self.report(line, prefix + shown, "a key must be a name such as 'port'")
                continue
            if not section and name.startswith(EXTENSION_PREFIX):
                continue  # "x-defaults: &defaults {…}": only there to be merged elsewhere
            key = prefix + name
            if key in first_line:
                self.report(line, key, f"duplicate key, first given at line {first_line[key]}")
                continue
            first_line[key] = line
            if not section and key in SECTIONS:
                self.read_section(key, line, value_node)
            elif key not in SCHEMA or "." in name:  # "timeouts.header" must be nested
                self.report(line, key, unknown_key(key, section, self.empty_sections))
            else:
                self.read_value(key, line, value_node)

    def key_name(self, node: yaml.Node) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            return None
        name = self.construct(node)
        return name if isinstance(name, str) else None

    def read_section(self, section: str, line: int, node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            self.read_mapping(node, section)
        elif node.tag == NULL_TAG:  # "timeouts:" with every child commented out is fine
            self.empty_sections[section] = line  # unless its children follow unindented
        else:
            try:
                value = self.construct(node)
            except Unreadable as exc:
                self.report(line, section, f"unreadable value: {exc.reason}")
                return
            children = ", ".join(k.partition(".")[2] for k in SCHEMA if k.startswith(section))
            self.report(line, section, (
                f"{show(value)} is {kind_of(value)}, expected a mapping of {children}"
            ))

    def read_value(self, key: str, line: int, node: yaml.Node) -> None:
        if SCHEMA[key].mapping and isinstance(node, yaml.MappingNode):
            self.read_entries(key, line, node)
            return
        if (
            isinstance(node, yaml.ScalarNode)
            and node.tag == INT_TAG
            and not node.style
            and SURPRISING_INT.fullmatch(node.value)
        ):
            try:
                number = self.construct(node)
            except Unreadable as exc:
                self.report(line, key, f"unreadable value: {exc.reason}")
                return
            fix = ("quote it: socket_mode: '0660'" if key == "socket_mode" else
                   "write it without a leading zero or colon, or quote it")
            self.report(line, key, f"{show(node.value)} is read by YAML 1.1 as {number}; {fix}")
            return
        try:
            value = self.construct(node)
        except Unreadable as exc:  # "!!int abc", or a merge key taking a string
            self.report(line, key, f"unreadable value: {exc.reason}")
        else:
            # A list's entries keep their lines too, for one message per bad entry.
            lines: dict[object, int] = {}
            if isinstance(node, yaml.SequenceNode):
                lines = {i: item.start_mark.line + 1 for i, item in enumerate(node.value)}
            self.entries.append(Entry(key, line, value, lines))

    def read_entries(self, key: str, line: int, node: yaml.MappingNode) -> None:
        """A mapping-valued key, keeping each entry's line for its own messages."""
        value: dict[object, object] = {}
        lines: dict[object, int] = {}
        for name_node, item_node in self.entries_of(node, key):
            item_line = name_node.start_mark.line + 1
            try:
                name = self.construct(name_node)
                item = self.construct(item_node)
            except Unreadable as exc:
                self.report(item_line, key, f"unreadable entry: {exc.reason}")
                continue
            if isinstance(name, list | dict):
                self.report(item_line, key, f"{show(name)} is {kind_of(name)}, not a name")
                continue
            if name in lines:
                self.report(item_line, f"{key}[{show(name)}]",
                            f"duplicate key, first given at line {lines[name]}")
                continue
            value[name], lines[name] = item, item_line
        self.entries.append(Entry(key, line, value, lines))


NULL_TAG = "tag:yaml.org,2002:null"
INT_TAG = "tag:yaml.org,2002:int"
# YAML 1.1 reads "0700" as octal 448 and "1:30" as 90 (base 60); neither is what
# someone writing a port or a count means, so such numbers are refused, not reinterpreted.
SURPRISING_INT = re.compile(r"[-+]?0[0-7_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+")


def read_entries(path: str, source: str) -> tuple[list[Entry], list[Problem]]:
    """Every known key in the file with its line, and a problem for everything else.

    ``path`` is only used in messages. Raises ConfigError at once for a file that
    cannot be read as YAML at all or whose top level is not a mapping.
    """
    if not source.strip():
        # Zero bytes is what an interrupted write or a stray "> site.yaml" leaves; taken
        # as "every default", a reload would serve the file's directory on port 8080.
        raise ConfigError([
            f"{path}:1: the file is empty (to use every default on purpose, write a "
            "comment or '{}' in it)"
        ])
    try:
        # The constructor already scans for forbidden characters (a ReaderError).
        loader = GuardedLoader(source)
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_error_problem(path, source, exc)]) from None
    except YamlRefused as exc:
        raise ConfigError([exc.problem(path)]) from None
    if loader.tag_problems:
        loader.dispose()
        raise ConfigError([refused.problem(path) for refused in loader.tag_problems])
    try:
        reader = FileReader(path, loader)
        if root is None or root.tag == NULL_TAG:  # empty, comments, "---": all defaults
            return [], []
        if not isinstance(root, yaml.MappingNode):
            found = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            raise ConfigError([
                f"{path}:{root.start_mark.line + 1}: the top level must be a mapping of "
                f"keys such as 'port: 8080', not {found}"
            ])
        reader.read_mapping(root)
        return reader.entries, reader.problems
    finally:
        loader.dispose()


# nginx directives a newcomer writes at the top level, and what forkserver calls them:
# "unknown key (nginx's WORD …)". Fuzzy matching would point these the wrong way
# (listen → timeouts.send).
NGINX_WORDS = {
    "listen": "is host: and port: here",
    "root": "is docroot: here",
    "server_name": "has no equivalent: forkserver serves one site per server (not supported "
                   "yet: run one server per site)",
    "worker_processes": "is workers: here",
    "worker_connections": "has no equivalent: a worker takes connections up to its "
                          "open-file limit (ulimit -n, LimitNOFILE=)",
    "keepalive_timeout": "is keepalive: under timeouts: here",
    "client_header_timeout": "is header: under timeouts: here",
    "send_timeout": "is send: under timeouts: here",
    "index": "has no equivalent: a directory is served by its index.html",
    "gzip_static": "is precompressed: here",
    "gzip": "is precompressed: here (ready-made .gz and .br files; nothing is compressed "
            "on the fly)",
    "pid": "is pidfile: here",
    "add_header": "is headers: here",
    "error_page": "is error_pages: here",
    "types": "is mime_types: here",
}
# A section's child written at the top level: "header" → "timeouts.header".
CHILD_KEYS = {key.partition(".")[2]: key for key in SCHEMA if "." in key}


def unknown_key(
    key: str, nested_in: str = "", empty_sections: Mapping[str, int] | None = None
) -> str:
    """"unknown key", plus the closest known key when one is close enough to be a typo.

    ``empty_sections`` maps each section the file left empty (``timeouts:`` alone) to
    its line: a child of it at the top level is then an indentation mistake.
    """
    if nested_in:
        candidates = [k for k in SCHEMA if k.startswith(nested_in + ".")]
        close = difflib.get_close_matches(key, candidates, n=1)
    elif key in SCHEMA:  # "timeouts.header: 5" written flat at the top level
        head, _, tail = key.partition(".")
        return f"unknown key (write it nested: '{tail}:' indented under '{head}:')"
    elif key in CHILD_KEYS:  # before fuzzy matching, which finds "headers" for "header"
        section = CHILD_KEYS[key].partition(".")[0]
        line = (empty_sections or {}).get(section)
        if line is not None:
            return (
                f"unknown top-level key; it is a key of {section}: indent it under "
                f"{section}: (line {line})"
            )
        close = [CHILD_KEYS[key]]
    elif key.lower() in NGINX_WORDS:
        return f"unknown key (nginx's {key.lower()} {NGINX_WORDS[key.lower()]})"
    else:
        close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1)
        if not close:  # "keepalive: 5" at the top level belongs in a section
            leaves = {k.partition(".")[2]: k for k in SCHEMA if "." in k}
            nested = difflib.get_close_matches(key.rpartition(".")[2], list(leaves), n=1)
            close = [leaves[nested[0]]] if nested else []
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


# -- assembling a Config --------------------------------------------------------------

T = TypeVar("T")


def pick(values: Mapping[str, object], key: str, kind: type[T]) -> T:
    value = values[key]
    assert isinstance(value, kind), (key, value)  # every value passed its check
    return value


def pick_optional(values: Mapping[str, object], key: str) -> str | None:
    value = values[key]
    assert value is None or isinstance(value, str), (key, value)
    return value


def usable_cpus() -> int:
    """CPUs this process may run on (a cgroup/taskset limit counts, unlike cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not every platform has sched_getaffinity
        return os.cpu_count() or 1


def resolve_path(value: str | None, base_dir: str) -> str | None:
    """Absolute path; ``-`` (stderr) and None (off) keep their meaning."""
    if value is None or value == "-":
        return value
    return os.path.normpath(os.path.join(base_dir, value))


def docroot_problem(value: object, resolved: str, origin: Origin) -> Problem | None:
    looked = f" (looked for {resolved})" if value != resolved else ""
    if not os.path.exists(resolved):
        return origin.problem(value, f"does not exist{looked}")
    if not os.path.isdir(resolved):
        return origin.problem(value, f"is not a directory{looked}")
    return None


def item_problem(
    path: str, entry: Entry, name: object, item: object, problem: Invalid, file_dir: str
) -> Problem:
    """``FILE:LINE: KEY: NAME reason`` for a bad name, ``KEY[NAME]: VALUE reason`` else."""
    line = entry.item_lines.get(name, entry.line)
    if isinstance(problem, InvalidKey):
        origin = Origin(f"{path}:{line}", entry.key, file_dir, (FILE_RANK, line))
        return origin.problem(name, problem.reason)
    origin = Origin(f"{path}:{line}", f"{entry.key}[{show(name)}]", file_dir, (FILE_RANK, line))
    return origin.problem(item, problem.reason)


def error_page_file_problem(docroot: str, page: str) -> str | None:
    """Why ``page`` (``/errors/404.html``) cannot be served from ``docroot``, or None."""
    looked = os.path.join(docroot, page.lstrip("/"))
    real_root = os.path.realpath(docroot)
    real = os.path.realpath(looked)
    inside = real.startswith(real_root.rstrip("/") + "/")
    hidden = any(part.startswith(".") for part in real[len(real_root) :].split("/"))
    if not inside or hidden:
        return f"leads outside the docroot or to a hidden file (looked for {looked})"
    if not os.path.isfile(real):
        return f"is not a file in the docroot (looked for {looked})"
    return None


def limits_problem(values: Mapping[str, object], origins: Mapping[str, Origin]) -> Problem | None:
    """The head includes the request line, so a smaller head limit makes no sense."""
    request_line = pick(values, "limits.request_line", int)
    header_bytes = pick(values, "limits.header_bytes", int)
    if header_bytes >= request_line:
        return None
    origin = origins["limits.header_bytes"]
    if origin.rank[0] == DEFAULT_RANK:  # only the request line was set: blame it
        return origins["limits.request_line"].problem(
            request_line, f"is larger than limits.header_bytes ({header_bytes}), "
            "and the request head includes the request line"
        )
    return origin.problem(
        header_bytes, f"is smaller than limits.request_line ({request_line}), "
        "and the request head includes the request line"
    )


def socket_keys_problem(
    values: Mapping[str, object], origins: Mapping[str, Origin]
) -> Problem | None:
    """socket_mode and socket_owner describe a socket file: they need a unix: host."""
    if pick(values, "host", str).startswith(UNIX_PREFIX):
        return None
    for key in ("socket_mode", "socket_owner"):
        if values[key] is not None:
            return origins[key].problem(
                values[key], "applies only to a unix socket (host: 'unix:/path')"
            )
    return None


def group_problem(values: Mapping[str, object], origins: Mapping[str, Origin]) -> Problem | None:
    """group changes only the workers' group: alone it would leave them running as root."""
    if values["group"] is None or values["user"] is not None:
        return None
    return origins["group"].problem(
        values["group"], "needs user as well: a worker that stays root keeps root's power "
        "whatever its group (set user, or remove group)"
    )


class Layers:
    """Values layered as they arrive: built-in defaults, then the file, then the command line.

    Each offered value is checked where it comes from; a bad one is recorded as a
    problem and the layer below stays, so one mistake never hides another.
    """

    def __init__(self, default_dir: str) -> None:
        self.given: dict[str, object] = {}  # as written, for messages
        self.values: dict[str, object] = {}  # checked and normalized
        self.origins: dict[str, Origin] = {}
        self.problems: list[Problem] = []
        self.item_lines: dict[str, dict[object, int]] = {}  # mapping key → entry → line
        self.file_label: str | None = None  # the file as named in messages
        for key, setting in SCHEMA.items():
            default = Origin("built-in default", key, default_dir, (DEFAULT_RANK, 0))
            self.keep(key, setting.default, setting.check(setting.default), default)

    def keep(self, key: str, given: object, value: object, origin: Origin) -> None:
        self.given[key], self.values[key], self.origins[key] = given, value, origin

    def offer_from_file(self, path: str, file_dir: str, entry: Entry) -> None:
        origin = Origin(f"{path}:{entry.line}", entry.key, file_dir, (FILE_RANK, entry.line))
        try:
            self.keep(entry.key, entry.value, SCHEMA[entry.key].check(entry.value), origin)
            self.item_lines[entry.key] = entry.item_lines
        except Invalid as exc:
            self.problems.append(origin.problem(entry.value, exc.reason))
        except InvalidItems as exc:
            for name, item, problem in exc.problems:
                self.problems.append(
                    item_problem(path, entry, name, item, problem, file_dir)
                )

    def offer_from_command_line(self, key: str, value: object, command_dir: str) -> None:
        flag = "--" + key.replace("_", "-")
        origin = Origin(COMMAND_LINE, flag, command_dir, (COMMAND_LINE_RANK, 0))
        if key not in SCHEMA:
            self.problems.append((origin.rank, f"{COMMAND_LINE}: {flag}: not a configuration key"))
            return
        setting = SCHEMA[key]
        typed = value
        try:
            # argparse gives text; once read, "--port 99999" is the number 99999, not '99999'.
            typed = setting.from_text(value) if isinstance(value, str) else value
            self.keep(key, value, setting.check(typed), origin)
        except Invalid as exc:
            self.problems.append(origin.problem(typed, exc.reason))

    def resolve_paths(self) -> None:
        for key, setting in SCHEMA.items():
            if setting.is_path:
                base_dir = self.origins[key].base_dir
                self.values[key] = resolve_path(pick_optional(self.values, key), base_dir)

    def check_together(self) -> None:
        """Rules on the final values: the docroot in use exists, the limits agree."""
        docroot = pick(self.values, "docroot", str)
        docroot_bad = docroot_problem(self.given["docroot"], docroot, self.origins["docroot"])
        values, origins = self.values, self.origins
        for problem in (
            docroot_bad, limits_problem(values, origins), socket_keys_problem(values, origins),
            group_problem(values, origins),
        ):
            if problem is not None:
                self.problems.append(problem)
        if docroot_bad is None:
            self.problems.extend(self.error_page_problems(docroot))

    def error_page_problems(self, docroot: str) -> list[Problem]:
        """Each configured error page must be a regular file inside the docroot in use."""
        pages = self.values["error_pages"]
        assert isinstance(pages, tuple)
        origin = self.origins["error_pages"]
        lines = self.item_lines.get("error_pages", {})
        problems = []
        for status, page in pages:
            reason = error_page_file_problem(docroot, page)
            if reason is None:
                continue
            line = lines.get(status, origin.rank[1])
            where = f"{self.file_label}:{line}" if self.file_label else origin.where
            problems.append(
                ((origin.rank[0], line), f"{where}: error_pages[{status}]: {show(page)} {reason}")
            )
        return problems


def load_config(
    path: str | None, overrides: Mapping[str, object] | None = None, *, cwd: str | None = None
) -> Config:
    """Load ``path`` (or the built-in defaults when None) and apply ``overrides``.

    ``overrides`` holds command-line values keyed like the YAML (``host``, ``port``,
    ``docroot``, ``workers``, ``daemon``, ``pidfile``); they win over the file.
    Strings are accepted for every override (argparse gives ``"8081"``) and checked
    by the same rules. Relative paths in the file resolve against the file's
    directory; those in overrides against ``cwd`` (default: the current directory;
    a master reloading after daemonizing can pass the directory it started in).
    Raises ConfigError listing every problem.
    """
    try:
        command_dir = os.path.abspath(cwd) if cwd is not None else os.getcwd()
    except FileNotFoundError:
        raise ConfigError(["the current directory no longer exists"]) from None
    source: str | None = None
    if path is None:
        layers = Layers(default_dir=command_dir)
    else:
        source = os.path.abspath(os.path.join(command_dir, path))
        file_dir = os.path.dirname(source)
        # The default docroot "." is the file's directory, like any relative path in it.
        layers = Layers(default_dir=file_dir)
        layers.file_label = path
        entries, layers.problems = read_entries(path, read_text(source, label=path))
        for entry in entries:
            layers.offer_from_file(path, file_dir, entry)
    for key, value in (overrides or {}).items():
        layers.offer_from_command_line(key, value, command_dir)
    layers.resolve_paths()
    layers.check_together()
    if layers.problems:
        ordered = sorted(layers.problems, key=lambda problem: problem[0])  # stable sort
        raise ConfigError([message for _, message in ordered])
    return build_config(layers.values, source)


def build_config(values: Mapping[str, object], source: str | None) -> Config:
    workers = values["workers"]
    worker_count = min(usable_cpus(), MAX_WORKERS) if workers == "auto" else workers
    assert isinstance(worker_count, int)
    return Config(
        host=pick(values, "host", str),
        port=pick(values, "port", int),
        socket_mode=pick_optional(values, "socket_mode"),
        socket_owner=pick_optional(values, "socket_owner"),
        docroot=pick(values, "docroot", str),
        workers=worker_count,
        backlog=pick(values, "backlog", int),
        daemon=pick(values, "daemon", bool),
        pidfile=pick_optional(values, "pidfile"),
        user=pick_optional(values, "user"),
        group=pick_optional(values, "group"),
        access_log=pick_optional(values, "access_log"),
        error_log=pick(values, "error_log", str),
        log_level=pick(values, "log_level", str),
        access_log_format=pick(values, "access_log_format", str),
        timeouts=Timeouts(
            header=pick(values, "timeouts.header", float),
            keepalive=pick(values, "timeouts.keepalive", float),
            send=pick(values, "timeouts.send", float),
            graceful=pick(values, "timeouts.graceful", float),
            worker=pick(values, "timeouts.worker", float),
        ),
        max_requests=pick(values, "max_requests", int),
        max_requests_jitter=pick(values, "max_requests_jitter", int),
        limits=Limits(
            request_line=pick(values, "limits.request_line", int),
            header_bytes=pick(values, "limits.header_bytes", int),
            headers=pick(values, "limits.headers", int),
        ),
        precompressed=pick(values, "precompressed", bool),
        cache_control=pick(values, "cache_control", tuple),
        headers=pick(values, "headers", tuple),
        mime_types=pick(values, "mime_types", tuple),
        server_tokens=pick(values, "server_tokens", bool),
        autoindex=pick(values, "autoindex", bool),
        error_pages=pick(values, "error_pages", tuple),
        status=Status(
            path=pick_optional(values, "status.path"),
            allow=pick(values, "status.allow", tuple),
            access_log=pick(values, "status.access_log", bool),
        ),
        proxy_protocol=pick(values, "proxy_protocol", bool),
        proxy_protocol_from=pick(values, "proxy_protocol_from", tuple),
        source=source,
    )


# -- checks against the live system --------------------------------------------------

READ, WRITE, SEARCH = 4, 2, 1  # the rwx bits of one class (owner, group or other)
ACL_XATTR = "system.posix_acl_access"


def environment_problems(config: Config) -> list[str]:
    """Checks that need the live system: paths writable, user/group exist, etc.

    Used by ``--check`` and at start-up, after ``load_config`` succeeded. Each problem
    is one line, ``KEY: VALUE reason``; an empty list means the server can start.
    """
    problems = docroot_access_problems(config.docroot)
    for key, log_path in (("access_log", config.access_log), ("error_log", config.error_log)):
        if log_path is not None and log_path != "-":
            problems.extend(writable_file_problems(key, log_path))
    if config.pidfile is not None:
        problems.extend(pidfile_problems(config.pidfile))
    if config.host.startswith(UNIX_PREFIX):
        problems.extend(unix_socket_problems(config.host[len(UNIX_PREFIX) :], config.socket_owner))
    account: pwd.struct_passwd | None = None
    group_id: int | None = None
    if config.user is not None:
        try:
            account = pwd.getpwnam(config.user)
        except KeyError:
            problems.append(f"user: {show(config.user)} does not exist")
    if config.group is not None:
        try:
            group_id = grp.getgrnam(config.group).gr_gid
        except KeyError:
            problems.append(f"group: {show(config.group)} does not exist")
    # Workers only change user when the master runs as root (service.drop_privileges).
    if account is not None and account.pw_uid != 0 and os.geteuid() == 0:
        gid = group_id if group_id is not None else account.pw_gid
        # os.initgroups in the worker gives it these supplementary groups.
        gids = set(os.getgrouplist(account.pw_name, gid)) | {gid}
        blocked = unreadable_for(config.docroot, account.pw_uid, gids)
        if blocked:
            problems.append(
                f"user: {show(config.user)} (uid {account.pw_uid}) could not read docroot "
                f"{config.docroot}: {blocked}"
            )
    return problems


def docroot_access_problems(docroot: str) -> list[str]:
    if not os.path.isdir(docroot):
        return [f"docroot: {show(docroot)} is not an existing directory"]
    if not os.access(docroot, os.R_OK | os.X_OK):
        return [f"docroot: {show(docroot)} is not readable and searchable by this user"]
    return []


def creatable_problem(path: str) -> str | None:
    """Why a file cannot be created at ``path`` (its directory's fault), or None."""
    directory = os.path.dirname(path) or "."
    if not os.path.exists(directory):
        return f"directory {directory} does not exist"
    if not os.path.isdir(directory):
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable by this user"
    return None


def writable_file_problems(key: str, path: str) -> list[str]:
    """A log file is opened for appending: an existing file must be writable, else creatable."""
    if os.path.isdir(path):
        return [f"{key}: {show(path)} is a directory"]
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            return [f"{key}: {show(path)} is not writable by this user"]
        return []
    reason = creatable_problem(path)
    return [f"{key}: {show(path)} cannot be created: {reason}"] if reason else []


def pidfile_problems(path: str) -> list[str]:
    """The pidfile is written beside itself and renamed over, so its directory must be writable."""
    if os.path.isdir(path):
        return [f"pidfile: {show(path)} is a directory"]
    reason = creatable_problem(path)
    return [f"pidfile: {show(path)} cannot be written: {reason}"] if reason else []


def unix_socket_problems(path: str, owner: str | None) -> list[str]:
    """The socket file is created in its directory (replacing a stale socket, nothing else)."""
    problems = []
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        reason = creatable_problem(path)
        if reason:
            problems.append(f"host: {show(UNIX_PREFIX + path)} cannot be created: {reason}")
    except OSError as exc:
        problems.append(f"host: {show(UNIX_PREFIX + path)}: {exc.strerror}")
    else:
        if not stat.S_ISSOCK(status.st_mode):
            problems.append(
                f"host: {show(UNIX_PREFIX + path)} exists and is not a socket; "
                "forkserver replaces only a stale socket"
            )
    if owner is not None:
        user, _, group = owner.partition(":")
        if user and not _exists(pwd.getpwnam, user):
            problems.append(f"socket_owner: {show(owner)}: user {show(user)} does not exist")
        if group and not _exists(grp.getgrnam, group):
            problems.append(f"socket_owner: {show(owner)}: group {show(group)} does not exist")
    return problems


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def unreadable_for(docroot: str, uid: int, gids: set[int]) -> str | None:
    """Why ``uid``/``gids`` could not list ``docroot``, judged by mode bits, or None.

    The kernel needs search (x) on every directory on the way and read+search on the
    docroot itself. Both the path as written and its symlink-free form are walked,
    since a symlink's own directory and its target's directories are all traversed.
    Mode bits follow the kernel's rule: the owner class applies if the uid owns the
    file (even when "other" would allow more), else the group class if one of the
    gids owns it, else "other". A directory with a POSIX ACL is skipped rather than
    guessed at, so this check may miss a denial but never invents one.
    """
    wanted = {directory: SEARCH for path in (docroot, os.path.realpath(docroot))
              for directory in ancestors(path)}
    wanted[docroot] = wanted[os.path.realpath(docroot)] = READ | SEARCH
    for directory, want in wanted.items():
        try:
            status = os.stat(directory)
        except OSError as exc:
            return f"{directory}: {exc.strerror}"
        if has_acl(directory) or permits(status, uid, gids, want):
            continue
        needed = "read and search" if want & READ else "search"
        return (
            f"{directory} needs {needed} permission but has mode "
            f"{stat.S_IMODE(status.st_mode):04o} (owner uid {status.st_uid}, "
            f"gid {status.st_gid})"
        )
    return None


def ancestors(path: str) -> list[str]:
    """``/srv/www/site`` → ``/``, ``/srv``, ``/srv/www`` (the directories crossed)."""
    found: list[str] = []
    parent = os.path.dirname(path)
    while True:
        found.append(parent)
        if parent == os.path.dirname(parent):
            return found[::-1]
        parent = os.path.dirname(parent)


def permits(status: os.stat_result, uid: int, gids: set[int], want: int) -> bool:
    if status.st_uid == uid:
        granted = (status.st_mode >> 6) & 0o7
    elif status.st_gid in gids:
        granted = (status.st_mode >> 3) & 0o7
    else:
        granted = status.st_mode & 0o7
    return granted & want == want


def has_acl(path: str) -> bool:
    try:
        return ACL_XATTR in os.listxattr(path)
    except OSError:  # no xattr support on this filesystem: no ACL either
        return False
