"""The schema: every key, its rule and its command-line reading, in one table.

A key names its dataclass field ("timeouts.send" is Config.timeouts.send), and that
field's default is the key's default. Also where a value came from (Origin) and what
the file reader hands on (Entry). Must not read files or the live system.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

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
from forkserver.config.compression import (
    compress_level,
    compress_min_size,
    compress_types,
    etag_mode,
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
from forkserver.config.listen import MIN_VERSIONS, listen_list
from forkserver.config.model import (
    ACCESS_LOG_FORMATS,
    LOG_LEVELS,
    MAX_BACKLOG,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MIN_HEADER_BYTES,
    MIN_HEADERS,
    MIN_REQUEST_LINE,
    Config,
)
from forkserver.config.protection import (
    burst,
    connections_per_client,
    exempt,
    min_send_rate,
    requests_per_second,
    worker_memory_limit,
)
from forkserver.config.sitelist import file_only

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


def size_from_text(value: str) -> object:
    """A size on the command line: digits alone are bytes, else '512MiB' as in YAML."""
    return int(value) if DECIMAL.fullmatch(value) else value


# -- the schema: every key and its rule, in one table ---------------------------------

# The defaults live in one place, the dataclasses (model.py): SCHEMA reads each key's
# default from its field, "timeouts.send" from Config().timeouts.send.
DEFAULTS = Config()
FROM_MODEL: object = object()  # Setting.default until the field's default is filled in


@dataclass(frozen=True, slots=True)
class Setting:
    check: Check
    from_text: FromText = as_given  # how a command-line string becomes a value
    is_path: bool = False  # resolved against the file's directory (or the cwd)
    mapping: bool = False  # a mapping whose entries are checked (and reported) one by one
    # As it would be written in YAML (``docroot: .``, ``cache_control: {'*': no-cache}``);
    # taken from the key's dataclass field unless the YAML default differs from it.
    default: object = FROM_MODEL


def field_of(key: str) -> tuple[str, str]:
    """The dataclass field a key sets: ``timeouts.send`` → ("timeouts", "send")."""
    section, _, name = key.rpartition(".")
    return section, name


def model_default(key: str) -> object:
    """The key's default in the dataclasses: ``timeouts.send`` → Config().timeouts.send."""
    section, name = field_of(key)
    return getattr(getattr(DEFAULTS, section) if section else DEFAULTS, name)


def as_written(value: object, *, mapping: bool) -> object:
    """A value kept as a tuple, as YAML writes it: a mapping (pairs) or a list."""
    if isinstance(value, tuple):
        return dict(value) if mapping else list(value)
    return value


def with_defaults(rules: dict[str, Setting]) -> dict[str, Setting]:
    return {
        key: setting if setting.default is not FROM_MODEL else replace(
            setting, default=as_written(model_default(key), mapping=setting.mapping)
        )
        for key, setting in rules.items()
    }


def integer_setting(minimum: int, maximum: int | None = None) -> Setting:
    return Setting(integer(minimum, maximum), int_from_text)


SECONDS = Setting(seconds, seconds_from_text)
BOOLEAN = Setting(boolean, bool_from_text)

SCHEMA: dict[str, Setting] = with_defaults({
    "host": Setting(host_address),
    "port": integer_setting(0, 65535),
    "socket_mode": Setting(octal_mode),
    "socket_owner": Setting(owner_spec),
    "docroot": Setting(nonblank_string(expected="a path"), is_path=True),
    # Config().workers is a resolved count; the key's default, auto, is resolved at load
    # time to the CPUs this process may use.
    "workers": Setting(workers_count, workers_from_text, default="auto"),
    "backlog": integer_setting(1, MAX_BACKLOG),
    "daemon": BOOLEAN,
    "pidfile": Setting(nonblank_string(nullable=True, expected="a path"), is_path=True),
    "user": Setting(nonblank_string(nullable=True, expected="a user name")),
    "group": Setting(nonblank_string(nullable=True, expected="a group name")),
    "access_log": Setting(nonblank_string(nullable=True, expected="'-' or a path"), is_path=True),
    "error_log": Setting(error_log_path, is_path=True),
    "log_level": Setting(one_of(LOG_LEVELS)),
    "access_log_format": Setting(one_of(ACCESS_LOG_FORMATS)),
    "timeouts.header": SECONDS,
    "timeouts.keepalive": SECONDS,
    "timeouts.send": SECONDS,
    "timeouts.graceful": SECONDS,
    "timeouts.worker": SECONDS,
    "max_requests": integer_setting(0),
    "max_requests_jitter": integer_setting(0),
    "limits.request_line": integer_setting(MIN_REQUEST_LINE, MAX_HEAD_BYTES),
    "limits.header_bytes": integer_setting(MIN_HEADER_BYTES, MAX_HEAD_BYTES),
    "limits.headers": integer_setting(MIN_HEADERS, MAX_HEADERS),
    "limits.connections_per_client": Setting(connections_per_client, int_from_text),
    "limits.requests_per_second": Setting(requests_per_second, seconds_from_text),
    "limits.burst": Setting(burst, int_from_text),
    "limits.exempt": Setting(exempt),
    "limits.min_send_rate": Setting(min_send_rate, size_from_text),
    "worker_memory_limit": Setting(worker_memory_limit, size_from_text),
    "precompressed": BOOLEAN,
    "compress.gzip": BOOLEAN,
    "compress.types": Setting(compress_types),
    "compress.min_size": Setting(compress_min_size, int_from_text),
    "compress.level": Setting(compress_level, int_from_text),
    "etag": Setting(etag_mode),
    "cache_control": Setting(
        mapping_of(cache_control_rule, "glob patterns to values"), mapping=True
    ),
    "headers": Setting(
        mapping_without_repeats(extra_header, lower_name, "header names to values"),
        mapping=True,
    ),
    "mime_types": Setting(
        mapping_without_repeats(mime_type_override, lower_name, "extensions to media types"),
        mapping=True,
    ),
    "server_tokens": BOOLEAN,
    "autoindex": BOOLEAN,
    "error_pages": Setting(
        mapping_of(error_page, "statuses to paths in the docroot"), mapping=True
    ),
    "status.path": Setting(status_path),
    "status.allow": Setting(network_list(
        "is empty: no client could read the status (set status.path to null to turn it off)"
    )),
    "status.access_log": BOOLEAN,
    "proxy_protocol": BOOLEAN,
    # SPEC §6 (config/listen.py): written as a list; empty = host/port's one listener.
    "listen": Setting(listen_list),
    "tls.certificate": Setting(nonblank_string(nullable=True, expected="a path"), is_path=True),
    "tls.key": Setting(nonblank_string(nullable=True, expected="a path"), is_path=True),
    "tls.min_version": Setting(one_of(MIN_VERSIONS)),
    "redirect_to_https": BOOLEAN,
    "proxy_protocol_from": Setting(network_list(None)),
    # Lists of mappings, checked with each nested line by config/sitelist.py (SPEC §7, §8).
    "rules": Setting(file_only),
    "sites": Setting(file_only),
})
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
