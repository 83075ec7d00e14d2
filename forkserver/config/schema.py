"""The schema: every key, its rule and its command-line reading, in one table.

Also where a value came from (Origin) and what the file reader hands on (Entry).
Must not read files or the live system.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from forkserver.config.checks import (
    Check,
    Invalid,
    boolean,
    error_log_path,
    host_address,
    integer,
    network_list,
    nonblank_string,
    octal_mode,
    one_of,
    owner_spec,
    seconds,
    show,
    status_path,
    workers_count,
)
from forkserver.config.entries import (
    cache_control_rule,
    error_page,
    extra_header,
    lower_name,
    mapping_of,
    mapping_without_repeats,
    mime_type_override,
)
from forkserver.config.model import (
    ACCESS_LOG_FORMATS,
    LOG_LEVELS,
    MAX_BACKLOG,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MIN_HEADER_BYTES,
    MIN_HEADERS,
    MIN_REQUEST_LINE,
)

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
COMMAND_LINE = "command line"


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
