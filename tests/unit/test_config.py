"""config.py: YAML text on disk → Config, or every problem with its file:line.

Real files in tmp_path, real YAML text, no mocks. The tests run as root, so an
unwritable path is made with a missing directory or a file used as a directory,
never with permission bits (root ignores them).
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserver.config import (
    MAX_WORKERS,
    SCHEMA,
    Config,
    Limits,
    Status,
    Timeouts,
    environment_problems,
    load_config,
)
from forkserver.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EN_DASH = "\u2013"  # messages typeset ranges with an en dash, as SPEC.md does
CPUS = min(len(os.sched_getaffinity(0)), MAX_WORKERS)
STATUS_PATH_RULE = (
    " is not a URL path such as '/server-status' (starting with /; letters, digits and "
    "-._~!$&'()*+,;=:@; no empty, '.' or '..' segments, %-escapes or query)"
)
# Every case file starts with these two lines, so the key under test sits on line 3
# and a wrong line number cannot pass by accident.
PREAMBLE = "# a site\n# served by forkserver\n"


def write(directory: Path, text: str, name: str = "site.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def problems_of(load: Callable[[], object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load()
    return caught.value.problems


# -- defaults -----------------------------------------------------------------------


def test_no_file_means_defaults_serving_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config == Config(docroot=str(tmp_path), workers=CPUS, source=None)


def test_the_schema_defaults_agree_with_the_dataclass() -> None:
    # The dataclasses are the one table of defaults; SCHEMA reads each key's default
    # from its field (as YAML writes it), except workers: auto, resolved at load time.
    flat = {f.name: getattr(Config(), f.name) for f in dataclasses.fields(Config)}
    sections = [name for name, value in flat.items() if dataclasses.is_dataclass(value)]
    for section in sections:
        for inner in dataclasses.fields(flat.pop(section)):
            flat[f"{section}.{inner.name}"] = getattr(getattr(Config(), section), inner.name)
    for key, setting in SCHEMA.items():
        if key not in ("docroot", "workers"):  # resolved at load time
            # A mapping or a list is written as such in YAML and kept as a tuple.
            written_as_yaml = setting.mapping or isinstance(setting.default, list)
            default = setting.check(setting.default) if written_as_yaml else setting.default
            assert default == flat[key], key
    assert SCHEMA["workers"].default == "auto"
    assert SCHEMA["docroot"].default == "."


def test_every_key_names_a_config_field_and_every_field_is_a_key() -> None:
    # build_config sets each key's value on the field the key names ("timeouts.send" is
    # Config.timeouts.send), so keys and fields match one to one; source is not a key
    # but where the configuration was read from.
    fields = set()
    for outer in dataclasses.fields(Config):
        value = getattr(Config(), outer.name)
        if dataclasses.is_dataclass(value):
            fields |= {f"{outer.name}.{inner.name}" for inner in dataclasses.fields(value)}
        else:
            fields.add(outer.name)
    assert fields - {"source"} == set(SCHEMA)
    assert "source" in fields


@pytest.mark.parametrize("text", ["# only a comment\n", "---\n", "{}\n"])
def test_a_file_that_sets_nothing_means_every_default(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    config = load_config(str(path))
    # Without a docroot key, "." is the file's directory, like any relative path in it.
    assert config == Config(docroot=str(tmp_path), workers=CPUS, source=str(path))


def test_empty_sections_mean_their_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "timeouts:\nlimits: {}\n")
    config = load_config(str(path))
    assert config.timeouts == Timeouts() and config.limits == Limits()


def test_every_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    path = write(tmp_path, """\
host: "::"
port: 0
docroot: www
workers: 3
backlog: 64
daemon: true
pidfile: run.pid
user: nobody
group: nogroup
access_log: null
error_log: logs/error.log
log_level: debug
access_log_format: json
timeouts:
  header: 2.5
  keepalive: 5
  send: 20
  graceful: 7
  worker: 9
max_requests: 1000
max_requests_jitter: 50
limits:
  request_line: 4096
  header_bytes: 8192
  headers: 50
status:
  path: /server-status
  allow: [10.0.0.0/8, "fd00::/8"]
  access_log: false
""")
    assert load_config(str(path)) == Config(
        host="::", port=0, docroot=str(tmp_path / "www"), workers=3, backlog=64,
        daemon=True, pidfile=str(tmp_path / "run.pid"), user="nobody", group="nogroup",
        access_log=None, error_log=str(tmp_path / "logs/error.log"), log_level="debug",
        access_log_format="json",
        timeouts=Timeouts(header=2.5, keepalive=5.0, send=20.0, graceful=7.0, worker=9.0),
        max_requests=1000, max_requests_jitter=50,
        limits=Limits(request_line=4096, header_bytes=8192, headers=50),
        status=Status(path="/server-status", allow=("10.0.0.0/8", "fd00::/8"), access_log=False),
        source=str(path),
    )


def test_proxy_protocol_and_unix_socket_keys_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, """\
host: unix:/run/forkserver/../forkserver/http.sock
socket_mode: "660"
socket_owner: www-data:haproxy
proxy_protocol: true
proxy_protocol_from: [10.0.0.0/8, 192.0.2.7, "2001:DB8::/32"]
""")
    config = load_config(str(path))
    assert config.host == "unix:/run/forkserver/http.sock"
    assert config.socket_mode == "0660"
    assert config.socket_owner == "www-data:haproxy"
    assert config.proxy_protocol is True
    assert config.proxy_protocol_from == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")


def test_an_empty_proxy_protocol_from_trusts_nobody(tmp_path: Path) -> None:
    path = write(tmp_path, "proxy_protocol: true\nproxy_protocol_from: []\n")
    assert load_config(str(path)).proxy_protocol_from == ()


@pytest.mark.parametrize(("host", "kept"), [
    ("localhost", "localhost"), ("example.org.", "example.org."), ("0.0.0.0", "0.0.0.0"),
    ("::1", "::1"), ("0:0::0", "::"), ("fe80::1%lo", "fe80::1%lo"),
])
def test_addresses_are_normalized_and_names_kept(tmp_path: Path, host: str, kept: str) -> None:
    # One spelling per address: "0:0::0" gets the dual-stack treatment "::" gets.
    assert load_config(None, {"docroot": str(tmp_path), "host": host}).host == kept


def test_a_unix_host_can_come_from_the_command_line(tmp_path: Path) -> None:
    config = load_config(None, {"docroot": str(tmp_path), "host": "unix:/tmp/x.sock"})
    assert config.host == "unix:/tmp/x.sock"


def test_whole_seconds_become_floats(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, "timeouts:\n  send: 60\n")))
    assert config.timeouts.send == 60.0 and isinstance(config.timeouts.send, float)


@pytest.mark.parametrize("text", ["{}\n", "workers: auto\n"])
def test_auto_workers_is_the_usable_cpu_count(tmp_path: Path, text: str) -> None:
    assert load_config(str(write(tmp_path, text))).workers == CPUS


# -- one rule, one message, the right line ------------------------------------------

# (text after PREAMBLE, line of the problem in the file, the message after "FILE:LINE: ")
INVALID = [
    ("port: 70000\n", 3, f"port: 70000 is out of range 0{EN_DASH}65535"),
    ("port: -1\n", 3, f"port: -1 is out of range 0{EN_DASH}65535"),
    ('port: "8080"\n', 3, "port: '8080' is a string, expected an integer"),
    ("port: true\n", 3, "port: true is a boolean, expected an integer"),
    ("port: 80.5\n", 3, "port: 80.5 is a number, expected an integer"),
    ("port:\n", 3, "port: null is not allowed here, expected an integer"),
    ("port: 0700\n", 3,
     "port: '0700' is read by YAML 1.1 as 448; write it without a leading zero or colon, "
     "or quote it"),
    ("port: 1:30\n", 3,
     "port: '1:30' is read by YAML 1.1 as 90; write it without a leading zero or colon, "
     "or quote it"),
    ("workers: 0\n", 3, f"workers: 0 is out of range 1{EN_DASH}512"),
    ("workers: 513\n", 3, f"workers: 513 is out of range 1{EN_DASH}512"),
    ("workers: many\n", 3,
     f"workers: 'many' is a string, expected an integer 1{EN_DASH}512 or 'auto'"),
    ("workers: yes\n", 3,
     f"workers: true is a boolean, expected an integer 1{EN_DASH}512 or 'auto'"),
    ("backlog: 0\n", 3, f"backlog: 0 is out of range 1{EN_DASH}2147483647"),
    ('daemon: "yes"\n', 3, "daemon: 'yes' is a string, expected true or false"),
    ("daemon: 1\n", 3, "daemon: 1 is an integer, expected true or false"),
    ("pidfile: 5\n", 3, "pidfile: 5 is an integer, expected a path or null"),
    ('pidfile: ""\n', 3, "pidfile: '' is empty"),
    ("user: 1000\n", 3, "user: 1000 is an integer, expected a user name or null"),
    ("group: [a, b]\n", 3, "group: [a, b] is a list, expected a group name or null"),
    ('access_log: ""\n', 3, "access_log: '' is empty"),
    ("access_log: {a: 1}\n", 3, "access_log: {a: 1} is a mapping, expected '-' or a path or null"),
    ("error_log: null\n", 3,
     "error_log: null is not allowed: the error log cannot be off (use '-' for stderr)"),
    ("log_level: verbose\n", 3, "log_level: 'verbose' is not one of debug, info, warning, error"),
    ("log_level: INFO\n", 3,
     "log_level: 'INFO' is not one of debug, info, warning, error (did you mean 'info'?)"),
    ("log_level: 3\n", 3,
     "log_level: 3 is an integer, expected one of debug, info, warning, error"),
    ('host: ""\n', 3, "host: '' is empty"),
    ('host: " 10.0.0.1"\n', 3,
     "host: ' 10.0.0.1' contains leading/trailing blanks or control characters"),
    ("host: 5\n", 3, "host: 5 is an integer, expected an address or 'unix:/path'"),
    # Habits of nginx's listen and of URLs: each would fail only at bind time.
    ("host: 127.0.0.1:8080\n", 3,
     "host: '127.0.0.1:8080' is an address and a port (use host: 127.0.0.1 and port: 8080)"),
    ("host: localhost:80\n", 3,
     "host: 'localhost:80' is an address and a port (use host: localhost and port: 80)"),
    ('host: "[::1]:8080"\n', 3,
     "host: '[::1]:8080' is an address and a port (use host: '::1' and port: 8080)"),
    ('host: "[::1]"\n', 3,
     "host: '[::1]' has brackets, which belong in URLs only (use host: '::1')"),
    ("host: http://127.0.0.1\n", 3,
     "host: 'http://127.0.0.1' is a URL; host is the address alone (use host: 127.0.0.1)"),
    ("host: https://example.org:8443/\n", 3,
     "host: 'https://example.org:8443/' is a URL; host is the address alone "
     "(use host: example.org and port: 8443)"),
    ('host: "*"\n', 3,
     "host: '*' is not an address (use 0.0.0.0 for every IPv4 address, '::' for IPv6 too)"),
    ('host: "127.1"\n', 3, "host: '127.1' is not an IP address, a host name or 'unix:/path'"),
    ("host: 10.0.0.256\n", 3,
     "host: '10.0.0.256' is not an IP address, a host name or 'unix:/path'"),
    ("host: my_host\n", 3, "host: 'my_host' is not an IP address, a host name or 'unix:/path'"),
    ("host: unix:run/http.sock\n", 3,
     "host: 'unix:run/http.sock' needs an absolute path after 'unix:', such as "
     "'unix:/run/forkserver/http.sock'"),
    ("host: unix:/run/\n", 3,
     "host: 'unix:/run/' names a directory; the socket needs a file name"),
    (f"host: unix:/{'x' * 107}\n", 3,
     f"host: 'unix:/{'x' * 107}' has a path longer than 107 bytes (the limit of a unix socket)"),
    ("host: unix:/run/x.sock\nsocket_mode: 0660\n", 4,
     "socket_mode: '0660' is read by YAML 1.1 as 432; quote it: socket_mode: '0660'"),
    ("host: unix:/run/x.sock\nsocket_mode: 660\n", 4,
     "socket_mode: 660 is an integer, expected octal permission bits in quotes such as "
     "'0660', or null"),
    ("host: unix:/run/x.sock\nsocket_mode: '0860'\n", 4,
     "socket_mode: '0860' is not octal permission bits such as '0660'"),
    ("host: unix:/run/x.sock\nsocket_mode: '1777'\n", 4,
     "socket_mode: '1777' is not octal permission bits such as '0660'"),
    ("host: unix:/run/x.sock\nsocket_owner: 'a:b:c'\n", 4,
     "socket_owner: 'a:b:c' is not 'user', 'user:group' or ':group'"),
    ("host: unix:/run/x.sock\nsocket_owner: ':'\n", 4,
     "socket_owner: ':' is not 'user', 'user:group' or ':group'"),
    ("host: unix:/run/x.sock\nsocket_owner: 'www:'\n", 4,
     "socket_owner: 'www:' has a colon but no group ('user' alone keeps the group)"),
    ("socket_mode: '0660'\n", 3,
     "socket_mode: '0660' applies only to a unix socket (host: 'unix:/path')"),
    ("socket_owner: www-data\n", 3,
     "socket_owner: 'www-data' applies only to a unix socket (host: 'unix:/path')"),
    ("group: nogroup\n", 3,
     "group: 'nogroup' needs user as well: a worker that stays root keeps root's power "
     "whatever its group (set user, or remove group)"),
    ('proxy_protocol: "on"\n', 3, "proxy_protocol: 'on' is a string, expected true or false"),
    ("proxy_protocol_from: 10.0.0.0/8\n", 3,
     "proxy_protocol_from: '10.0.0.0/8' is a string, expected a list of networks such as "
     "['127.0.0.1/32', '::1/128']"),
    ("proxy_protocol_from: [10.0.0.0/33]\n", 3,
     "proxy_protocol_from[0]: '10.0.0.0/33' is not an IPv4 or IPv6 network such as "
     "'10.0.0.0/8' or '::1/128'"),
    ("proxy_protocol_from: [10.0.0.1/8]\n", 3,
     "proxy_protocol_from[0]: '10.0.0.1/8' has host bits set (did you mean '10.0.0.0/8'?)"),
    ("proxy_protocol_from: [lb.example]\n", 3,
     "proxy_protocol_from[0]: 'lb.example' is not an IPv4 or IPv6 network such as "
     "'10.0.0.0/8' or '::1/128'"),
    ("proxy_protocol_from: [8]\n", 3,
     "proxy_protocol_from[0]: 8 is an integer, expected a network such as '127.0.0.1/32' or "
     "'::1/128'"),
    ("timeouts:\n  header: 0\n", 4, "timeouts.header: 0 is out of range (must be > 0 and ≤ 86400)"),
    ("timeouts:\n  send: -1\n", 4, "timeouts.send: -1 is out of range (must be > 0 and ≤ 86400)"),
    ("timeouts:\n  worker: 86401\n", 4,
     "timeouts.worker: 86401 is out of range (must be > 0 and ≤ 86400)"),
    ("timeouts:\n  graceful: .inf\n", 4,
     "timeouts.graceful: .inf is out of range (must be > 0 and ≤ 86400)"),
    ('timeouts:\n  keepalive: "10"\n', 4,
     "timeouts.keepalive: '10' is a string, expected a number of seconds"),
    ("timeouts:\n  header: true\n", 4,
     "timeouts.header: true is a boolean, expected a number of seconds"),
    ("max_requests: -1\n", 3, "max_requests: -1 is out of range (must be ≥ 0)"),
    ("max_requests: 1.5\n", 3, "max_requests: 1.5 is a number, expected an integer"),
    ("max_requests_jitter: -5\n", 3, "max_requests_jitter: -5 is out of range (must be ≥ 0)"),
    ("limits:\n  request_line: 63\n", 4,
     f"limits.request_line: 63 is out of range 64{EN_DASH}1048576"),
    ("limits:\n  header_bytes: 255\n", 4,
     f"limits.header_bytes: 255 is out of range 256{EN_DASH}1048576"),
    ("limits:\n  header_bytes: 2000000\n", 4,
     f"limits.header_bytes: 2000000 is out of range 256{EN_DASH}1048576"),
    ("limits:\n  headers: 0\n", 4, f"limits.headers: 0 is out of range 1{EN_DASH}10000"),
    ("limits:\n  headers: 10001\n", 4, f"limits.headers: 10001 is out of range 1{EN_DASH}10000"),
    ("limits:\n  header_bytes: 4000\n  request_line: 5000\n", 4,
     "limits.header_bytes: 4000 is smaller than limits.request_line (5000), and the request "
     "head includes the request line"),
    ("limits:\n  request_line: 20000\n", 4,
     "limits.request_line: 20000 is larger than limits.header_bytes (16384), and the request "
     "head includes the request line"),
    ("prot: 8080\n", 3, "prot: unknown key (did you mean 'port'?)"),
    ("bogus: 1\n", 3, "bogus: unknown key"),
    ("keepalive: 5\n", 3, "keepalive: unknown key (did you mean 'timeouts.keepalive'?)"),
    # A section's own child name beats a fuzzy top-level match (header ≠ headers).
    ("header: 5\n", 3, "header: unknown key (did you mean 'timeouts.header'?)"),
    # An empty section followed by its children unindented: an indentation mistake.
    ("timeouts:\nheader: 5\n", 4,
     "header: unknown top-level key; it is a key of timeouts: indent it under timeouts: "
     "(line 3)"),
    ("status:\npath: /server-status\n", 4,
     "path: unknown top-level key; it is a key of status: indent it under status: (line 3)"),
    # What nginx calls them.
    ("listen: 8080\n", 3, "listen: 8080 is an integer, expected a list of listeners such as "
     "['127.0.0.1:8080', {address: '127.0.0.1:8443', tls: true}]"),
    ("root: /srv/www\n", 3, "root: unknown key (nginx's root is docroot: here)"),
    ("server_name: example.org\n", 3,
     "server_name: unknown key (nginx's server_name is names: of an entry of sites: here)"),
    ("worker_processes: 4\n", 3,
     "worker_processes: unknown key (nginx's worker_processes is workers: here)"),
    ("worker_connections: 1024\n", 3,
     "worker_connections: unknown key (nginx's worker_connections has no equivalent: a worker "
     "takes connections up to its open-file limit (ulimit -n, LimitNOFILE=))"),
    ("keepalive_timeout: 65\n", 3,
     "keepalive_timeout: unknown key (nginx's keepalive_timeout is keepalive: under timeouts: "
     "here)"),
    ("client_header_timeout: 60\n", 3,
     "client_header_timeout: unknown key (nginx's client_header_timeout is header: under "
     "timeouts: here)"),
    ("send_timeout: 60\n", 3,
     "send_timeout: unknown key (nginx's send_timeout is send: under timeouts: here)"),
    ("index: index.html\n", 3,
     "index: unknown key (nginx's index has no equivalent: a directory is served by its "
     "index.html)"),
    ("gzip_static: true\n", 3,
     "gzip_static: unknown key (nginx's gzip_static is precompressed: here)"),
    ("pid: /run/forkserver.pid\n", 3, "pid: unknown key (nginx's pid is pidfile: here)"),
    ("timeouts:\n  hedaer: 5\n", 4,
     "timeouts.hedaer: unknown key (did you mean 'timeouts.header'?)"),
    ("timeouts.header: 5\n", 3,
     "timeouts.header: unknown key (write it nested: 'header:' indented under 'timeouts:')"),
    ("timeouts: 5\n", 3,
     "timeouts: 5 is an integer, expected a mapping of header, keepalive, send, graceful, worker"),
    ("limits: [1]\n", 3,
     "limits: [1] is a list, expected a mapping of request_line, header_bytes, headers, "
     "connections_per_client, requests_per_second, burst, exempt, min_send_rate"),
    ("port: 1\nport: 2\n", 4, "port: duplicate key, first given at line 3"),
    ("limits:\n  headers: 5\n  headers: 6\n", 5,
     "limits.headers: duplicate key, first given at line 4"),
    ("1: 2\n", 3, "1: a key must be a name such as 'port'"),
    ("port: !!int x\n", 3, "port: unreadable value: invalid literal for int() with base 10: 'x'"),
    ("daemon: !!bool maybe\n", 3, "daemon: unreadable value: 'maybe' is not a YAML boolean"),
    ("0x_: 1\n", 3, "'0x_': unreadable key: invalid literal for int() with base 16: ''"),
    ("port: <<\n", 3, "port: '<<' is a string, expected an integer"),
    ("timeouts:\n  <<: [1]\n", 4,
     "timeouts: a merge key '<<' takes a mapping or a list of mappings, such as "
     "'<<: *defaults' (write '\"<<\"' for a key of that name)"),
    ("x-d: &d {send: 0}\ntimeouts: {<<: *d}\n", 3,
     "timeouts.send: 0 is out of range (must be > 0 and ≤ 86400)"),
    # static-file keys: a mapping entry's problem names its own line
    ("precompressed: 1\n", 3, "precompressed: 1 is an integer, expected true or false"),
    ("autoindex: on please\n", 3,
     "autoindex: 'on please' is a string, expected true or false"),
    ('server_tokens: "yes"\n', 3, "server_tokens: 'yes' is a string, expected true or false"),
    ("cache_control: no-cache\n", 3,
     "cache_control: 'no-cache' is a string, expected a mapping of glob patterns to values"),
    ('cache_control:\n  "*.css": 60\n', 4,
     "cache_control['*.css']: 60 is an integer, expected a Cache-Control value or null"),
    ('cache_control:\n  "*.css": "max-age: 60"\n', 4,
     "cache_control['*.css']: 'max-age: 60' is not a list of Cache-Control directives "
     "such as 'public, max-age=3600'"),
    ('cache_control:\n  "*": x\n  "": y\n', 5,
     "cache_control: '' is not a glob pattern such as '*.css' or '/assets/**'"),
    ('cache_control:\n  "*.css": a\n  "*.css": b\n', 5,
     "cache_control['*.css']: duplicate key, first given at line 4"),
    ("headers: [a]\n", 3,
     "headers: [a] is a list, expected a mapping of header names to values"),
    ("headers:\n  Bad Name: x\n", 4,
     "headers: 'Bad Name' is not a header field name (letters, digits and !#$%&'*+-.^_`|~)"),
    ("headers:\n  Content-Length: 5\n", 4,
     "headers: 'Content-Length' is a header forkserver sets itself"),
    ("headers:\n  Cache-Control: no-store\n", 4,
     "headers: 'Cache-Control' is a header forkserver sets itself (use cache_control)"),
    ("headers:\n  server: x\n", 4,
     "headers: 'server' is a header forkserver sets itself (use server_tokens)"),
    ("headers:\n  X-A: 1\n  x-a: 2\n", 5, "headers: 'x-a' repeats 'X-A'"),
    ('headers:\n  X-A: "a\\u00e9"\n', 4,
     "headers['X-A']: 'a\u00e9' is not a header value (visible ASCII, no leading or "
     "trailing blanks)"),
    ('headers:\n  X-A: ""\n', 4,
     "headers['X-A']: '' is not a header value (visible ASCII, no leading or trailing "
     "blanks)"),
    ("headers:\n  X-A: true\n", 4, "headers['X-A']: true is a boolean, expected a string"),
    ("mime_types:\n  tar.gz: application/gzip\n", 4,
     "mime_types: 'tar.gz' is not a file extension such as 'woff2' or '.woff2'"),
    ("mime_types:\n  md: text\n", 4,
     "mime_types['md']: 'text' is not a media type such as 'text/plain' or "
     "'text/plain; charset=utf-8'"),
    ("mime_types:\n  .woff2: font/woff2\n  WOFF2: font/woff2\n", 5,
     "mime_types: 'WOFF2' repeats '.woff2'"),
    ("mime_types:\n  [a]: text/plain\n", 4, "mime_types: [a] is a list, not a name"),
    ('error_pages:\n  "404": /404.html\n', 4,
     "error_pages: '404' is a string, expected one of the statuses 403, 404, 500"),
    ("error_pages:\n  405: /405.html\n", 4,
     "error_pages: 405 is not a status whose page can be set (403, 404, 500)"),
    ("error_pages:\n  404: errors/404.html\n", 4,
     "error_pages[404]: 'errors/404.html' is not a file path in the docroot such as "
     "'/errors/404.html' (starting with /, no empty, '.', '..' or hidden segments)"),
    ("error_pages:\n  404: /../404.html\n", 4,
     "error_pages[404]: '/../404.html' is not a file path in the docroot such as "
     "'/errors/404.html' (starting with /, no empty, '.', '..' or hidden segments)"),
    ("error_pages:\n  404: /.errors/404.html\n", 4,
     "error_pages[404]: '/.errors/404.html' is not a file path in the docroot such as "
     "'/errors/404.html' (starting with /, no empty, '.', '..' or hidden segments)"),
    ("error_pages:\n  404: /nowhere.html\n", 4,
     "error_pages[404]: '/nowhere.html' is not a file in the docroot (looked for "
     "DOCROOT/nowhere.html)"),
    # access log format and the status endpoint
    ("access_log_format: JSON\n", 3,
     "access_log_format: 'JSON' is not one of combined, common, json (did you mean 'json'?)"),
    ("access_log_format: null\n", 3,
     "access_log_format: null is not allowed here, expected one of combined, common, json"),
    ("status: /server-status\n", 3,
     "status: '/server-status' is a string, expected a mapping of path, allow, access_log"),
    ("status:\n  access_log: no log\n", 4,
     "status.access_log: 'no log' is a string, expected true or false"),
    ("status:\n  path: server-status\n", 4, "status.path: 'server-status'" + STATUS_PATH_RULE),
    ("status:\n  path: /a//b\n", 4, "status.path: '/a//b'" + STATUS_PATH_RULE),
    ("status:\n  path: /a/../b\n", 4, "status.path: '/a/../b'" + STATUS_PATH_RULE),
    ("status:\n  path: /status?x=1\n", 4, "status.path: '/status?x=1'" + STATUS_PATH_RULE),
    ("status:\n  path: /st%61tus\n", 4, "status.path: '/st%61tus'" + STATUS_PATH_RULE),
    ("status:\n  path: 1\n", 4,
     "status.path: 1 is an integer, expected a URL path such as '/server-status' or null"),
    ("status:\n  pth: /s\n", 4, "status.pth: unknown key (did you mean 'status.path'?)"),
    ("status:\n  allow: 127.0.0.1/32\n", 4,
     "status.allow: '127.0.0.1/32' is a string, expected a list of networks such as "
     "['127.0.0.1/32', '::1/128']"),
    ("status:\n  allow: []\n", 4,
     "status.allow: [] is empty: no client could read the status (set status.path to null "
     "to turn it off)"),
    ("status:\n  allow:\n    - 127.0.0.1/32\n    - 10.0.0.1/8\n", 6,
     "status.allow[1]: '10.0.0.1/8' has host bits set (did you mean '10.0.0.0/8'?)"),
    ("status:\n  allow:\n    - 127.0.0.1/32\n    - localhost\n", 6,
     "status.allow[1]: 'localhost' is not an IPv4 or IPv6 network such as '10.0.0.0/8' or "
     "'::1/128'"),
    ("status:\n  allow:\n    - ::1/129\n", 5,
     "status.allow[0]: '::1/129' is not an IPv4 or IPv6 network such as '10.0.0.0/8' or "
     "'::1/128'"),
    ("status:\n  allow: [8]\n", 4,
     "status.allow[0]: 8 is an integer, expected a network such as '127.0.0.1/32' or "
     "'::1/128'"),
]


@pytest.mark.parametrize(("text", "line", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_each_rule_names_the_key_the_value_and_the_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, PREAMBLE + text)
    message = message.replace("DOCROOT", str(tmp_path))
    assert problems_of(lambda: load_config(str(path))) == [f"{path}:{line}: {message}"]


def test_a_missing_docroot_names_what_was_looked_for(tmp_path: Path) -> None:
    path = write(tmp_path, PREAMBLE + "docroot: nowhere\n")
    assert problems_of(lambda: load_config(str(path))) == [
        f"{path}:3: docroot: 'nowhere' does not exist (looked for {tmp_path / 'nowhere'})"
    ]


def test_a_docroot_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("hi")
    path = write(tmp_path, PREAMBLE + f"docroot: {tmp_path / 'index.html'}\n")
    assert problems_of(lambda: load_config(str(path))) == [
        f"{path}:3: docroot: '{tmp_path / 'index.html'}' is not a directory"
    ]


def test_messages_name_the_file_as_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "# sample\n\n\n\n\n\nport: 70000\n")
    monkeypatch.chdir(tmp_path)
    assert problems_of(lambda: load_config("conf/site.yaml")) == [
        f"conf/site.yaml:7: port: 70000 is out of range 0{EN_DASH}65535"
    ]


def test_every_problem_is_reported_together_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, """\
bogus: 1
port: 70000
timeouts:
  header: 0
workers: 0
log_level: loud
docroot: missing
""")
    assert problems_of(lambda: load_config(str(path))) == [
        f"{path}:1: bogus: unknown key",
        f"{path}:2: port: 70000 is out of range 0{EN_DASH}65535",
        f"{path}:4: timeouts.header: 0 is out of range (must be > 0 and ≤ 86400)",
        f"{path}:5: workers: 0 is out of range 1{EN_DASH}512",
        f"{path}:6: log_level: 'loud' is not one of debug, info, warning, error",
        f"{path}:7: docroot: 'missing' does not exist (looked for {tmp_path / 'missing'})",
    ]


def test_static_file_keys_are_read_in_file_order(tmp_path: Path) -> None:
    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "404.html").write_text("gone\n")
    path = write(tmp_path, """\
precompressed: false
cache_control:
  "*.css": "public, max-age=31536000, immutable"
  "/assets/**": 'max-age=60, stale-while-revalidate="30"'
  "*.html": null
headers:
  X-Frame-Options: DENY
  Access-Control-Max-Age: 600
mime_types:
  .GLB: model/gltf-binary
  log: text/plain; charset=us-ascii
server_tokens: true
autoindex: true
error_pages:
  404: /errors/404.html
""")
    config = load_config(str(path))
    assert config.precompressed is False and config.server_tokens is True
    assert config.autoindex is True
    assert config.cache_control == (
        ("*.css", "public, max-age=31536000, immutable"),
        ("/assets/**", 'max-age=60, stale-while-revalidate="30"'),
        ("*.html", None),
    )
    assert config.headers == (("X-Frame-Options", "DENY"), ("Access-Control-Max-Age", "600"))
    assert config.mime_types == (("glb", "model/gltf-binary"),
                                 ("log", "text/plain; charset=us-ascii"))
    assert config.error_pages == ((404, "/errors/404.html"),)


@pytest.mark.parametrize("key", ["cache_control", "headers", "mime_types", "error_pages"])
def test_a_mapping_with_every_entry_commented_out_is_empty(tmp_path: Path, key: str) -> None:
    config = load_config(str(write(tmp_path, f"{key}:\n#  a: b\n")))
    assert getattr(config, key) == ()


def test_every_bad_entry_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
headers:
  X-Good: fine
  Bad Name: x
  X-Num: 1.5
port: 70000
cache_control:
  "*": 5
""")
    assert problems_of(lambda: load_config(str(path))) == [
        f"{path}:3: headers: 'Bad Name' is not a header field name "
        "(letters, digits and !#$%&'*+-.^_`|~)",
        f"{path}:4: headers['X-Num']: 1.5 is a number, expected a string",
        f"{path}:5: port: 70000 is out of range 0{EN_DASH}65535",
        f"{path}:7: cache_control['*']: 5 is an integer, expected a Cache-Control value "
        "or null",
    ]


def test_an_error_page_must_stay_inside_the_docroot(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "secret.html").write_text("outside\n")
    os.symlink(tmp_path / "secret.html", tmp_path / "www" / "404.html")
    (tmp_path / "www" / "403").mkdir()
    path = write(tmp_path, "docroot: www\nerror_pages:\n  404: /404.html\n  403: /403\n")
    assert problems_of(lambda: load_config(str(path))) == [
        f"{path}:3: error_pages[404]: '/404.html' leads outside the docroot or to a hidden "
        f"file (looked for {tmp_path / 'www' / '404.html'})",
        f"{path}:4: error_pages[403]: '/403' is not a file in the docroot "
        f"(looked for {tmp_path / 'www' / '403'})",
    ]


# -- files that cannot be read as a configuration -----------------------------------

YAML_ERRORS = [
    ("port: 8080\nhost: [oops\n", "3:1",
     "expected ',' or ']', but got '<stream end>' (while parsing a flow sequence that "
     "starts at line 2, column 7)"),
    ('port: 8080\nhost: "oops\n', "3:1",
     "found unexpected end of stream (while scanning a quoted scalar that starts at "
     "line 2, column 7)"),
    ("host: ::\n", "1:8", "mapping values are not allowed here"),
    ("port: 8080\n  host: x\n", "2:7", "mapping values are not allowed here"),
    ("timeouts:\n\theader: 5\n", "2:1",
     "found character '\\t' that cannot start any token (while scanning for the next token)"),
    ("error_log: -\n", "1:12",
     'sequence entries are not allowed here (for stderr write the dash in quotes: "-")'),
    ("port: 1\n\x07\n", "2:1", "special characters are not allowed: #x0007"),
    ("port: 1\n---\nport: 2\n", "2:1",
     "but found another document (expected a single document in the stream)"),
]


@pytest.mark.parametrize(("text", "where", "message"), YAML_ERRORS, ids=[c[0] for c in YAML_ERRORS])
def test_yaml_syntax_errors_give_line_and_column(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = write(tmp_path, text)
    assert problems_of(lambda: load_config(str(path))) == [
        f"{path}:{where}: YAML syntax error: {message}"
    ]


@pytest.mark.parametrize(
    ("text", "found"), [("- port: 8080\n", "a list"), ("port 8080\n", "a single value")]
)
def test_a_top_level_that_is_not_a_mapping_is_one_problem(
    tmp_path: Path, text: str, found: str
) -> None:
    path = write(tmp_path, text)
    assert problems_of(lambda: load_config(str(path))) == [
        f"{path}:1: the top level must be a mapping of keys such as 'port: 8080', not {found}"
    ]


def test_a_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert problems_of(lambda: load_config(str(path))) == [
        f"{path}: cannot read the configuration file: No such file or directory"
    ]


def test_a_directory_given_as_the_file_is_one_clear_problem(tmp_path: Path) -> None:
    assert problems_of(lambda: load_config(str(tmp_path))) == [
        f"{tmp_path}: cannot read the configuration file: Is a directory"
    ]


def test_a_file_that_is_not_utf8_is_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"port: 8080\nhost: caf\xe9\n")
    assert problems_of(lambda: load_config(str(path))) == [
        f"{path}:2: the file is not UTF-8 text"
    ]


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfport: 9000\n")
    assert load_config(str(path)).port == 9000


def test_x_keys_at_the_top_level_hold_anchors_and_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "x-anything: {port: 1, bogus: [2]}\nx-d: &d {send: 9}\n"
                           "timeouts: {<<: *d}\n")
    assert load_config(str(path)).timeouts == Timeouts(send=9.0)
    inside = write(tmp_path, "timeouts:\n  x-d: 1\n")  # only at the top level
    (problem,) = problems_of(lambda: load_config(str(inside)))
    assert problem.startswith(f"{inside}:2: timeouts.x-d: unknown key")


def test_a_merged_top_level_does_not_merge_inside_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "x-base: &b {port: 9000, timeouts: {send: 1}}\n<<: *b\n"
                           "timeouts: {header: 2}\n")
    config = load_config(str(path))
    assert config.port == 9000 and config.timeouts == Timeouts(header=2.0)


def test_standard_scalar_tags_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "!!str port: !!int 8081\nhost: !!str 127.0.0.1\n"
                           "daemon: !!bool false\npidfile: !!null ~\n"
                           "timeouts: {send: !!float 5}\n")
    config = load_config(str(path))
    assert (config.port, config.host, config.daemon, config.pidfile) == (
        8081, "127.0.0.1", False, None)
    assert config.timeouts.send == 5.0


def test_python_tags_never_construct_anything(tmp_path: Path) -> None:
    path = write(tmp_path, "host: !!python/object/apply:os.getcwd []\n")
    (problem,) = problems_of(lambda: load_config(str(path)))
    assert problem.startswith(
        f"{path}:1:7: YAML error: the tag !!python/object/apply:os.getcwd is not accepted"
    )


# -- paths ----------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "conf").mkdir(parents=True)
    (site / "static").mkdir()
    write(site / "conf", """\
docroot: ../static
pidfile: run/forkserver.pid
access_log: logs/access.log
error_log: ./logs/../logs/error.log
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config("../site/conf/site.yaml")
    assert config.docroot == str(site / "static")
    assert config.pidfile == str(site / "conf/run/forkserver.pid")
    assert config.access_log == str(site / "conf/logs/access.log")
    assert config.error_log == str(site / "conf/logs/error.log")
    assert config.source == str(site / "conf/site.yaml")


@pytest.mark.parametrize(
    ("text", "access_log", "error_log"),
    [
        ('access_log: "-"\nerror_log: "-"\n', "-", "-"),
        ("access_log: '-'\n", "-", "-"),
        ("access_log: null\n", None, "-"),
        ("access_log: ~\n", None, "-"),
        ("access_log: /var/log/a.log\nerror_log: /var/log/e.log\n",
         "/var/log/a.log", "/var/log/e.log"),
    ],
)
def test_dash_and_null_keep_their_meaning(
    tmp_path: Path, text: str, access_log: str | None, error_log: str
) -> None:
    config = load_config(str(write(tmp_path, text)))
    assert (config.access_log, config.error_log) == (access_log, error_log)


# -- command-line overrides -----------------------------------------------------------


def test_overrides_win_over_the_file_and_their_paths_follow_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    path = write(conf, "host: 127.0.0.1\nport: 8080\nworkers: 2\ndaemon: true\n"
                 "pidfile: file.pid\ndocroot: .\n")
    (tmp_path / "cwd" / "www").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    config = load_config(str(path), {
        "host": "0.0.0.0", "port": "8081", "workers": "4", "daemon": False,
        "pidfile": "cli.pid", "docroot": "www",
    })
    assert (config.host, config.port, config.workers, config.daemon) == ("0.0.0.0", 8081, 4, False)
    assert config.pidfile == str(tmp_path / "cwd" / "cli.pid")
    assert config.docroot == str(tmp_path / "cwd" / "www")


def test_overrides_may_arrive_already_typed(tmp_path: Path) -> None:
    config = load_config(None, {"port": 0, "workers": 3, "docroot": str(tmp_path)})
    assert (config.port, config.workers, config.docroot) == (0, 3, str(tmp_path))


def test_auto_workers_from_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 2\n")
    assert load_config(str(path), {"workers": "auto"}).workers == CPUS


def test_relative_override_paths_can_follow_a_given_directory(tmp_path: Path) -> None:
    # A master reloading after daemonizing (cwd "/") passes the directory it started in.
    (tmp_path / "www").mkdir()
    config = load_config(None, {"docroot": "www"}, cwd=str(tmp_path))
    assert config.docroot == str(tmp_path / "www")


OVERRIDE_PROBLEMS = [
    ({"port": "99999"}, f"command line: --port: 99999 is out of range 0{EN_DASH}65535"),
    ({"port": "eighty"}, "command line: --port: 'eighty' is not an integer"),
    ({"port": "80.0"}, "command line: --port: '80.0' is not an integer"),
    ({"workers": "0"}, f"command line: --workers: 0 is out of range 1{EN_DASH}512"),
    ({"workers": "x"}, "command line: --workers: 'x' is not an integer"),
    ({"host": ""}, "command line: --host: '' is empty"),
    ({"host": "0.0.0.0:80"},
     "command line: --host: '0.0.0.0:80' is an address and a port "
     "(use host: 0.0.0.0 and port: 80)"),
    ({"pidfile": ""}, "command line: --pidfile: '' is empty"),
    ({"daemon": "maybe"}, "command line: --daemon: 'maybe' is not true or false"),
    ({"docroot": "no/such/dir"}, "command line: --docroot: 'no/such/dir' does not exist "
                                 "(looked for {cwd}/no/such/dir)"),
    ({"colour": "blue"}, "command line: --colour: not a configuration key"),
]


@pytest.mark.parametrize(("overrides", "message"), OVERRIDE_PROBLEMS)
def test_overrides_are_validated_by_the_same_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, object], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert problems_of(lambda: load_config(None, overrides)) == [
        message.format(cwd=tmp_path)
    ]


def test_file_problems_come_first_then_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 70000\nworkers: 0\n")
    assert problems_of(lambda: load_config(str(path), {"port": "-1", "workers": "2"})) == [
        # The file's own mistakes are reported even where the command line overrides
        # them: the file must be valid on its own for a reload or another command.
        f"{path}:1: port: 70000 is out of range 0{EN_DASH}65535",
        f"{path}:2: workers: 0 is out of range 1{EN_DASH}512",
        f"command line: --port: -1 is out of range 0{EN_DASH}65535",
    ]


def test_an_overridden_docroot_is_not_required_to_exist_in_the_file(tmp_path: Path) -> None:
    # Existence is a property of the value in use, not a rule of the file's syntax.
    path = write(tmp_path, "docroot: gone\n")
    assert load_config(str(path), {"docroot": str(tmp_path)}).docroot == str(tmp_path)


# -- the sample configuration ---------------------------------------------------------


def test_the_sample_configuration_loads_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(str(REPO / "conf" / "site.yaml"))
    assert config == Config(docroot=str(REPO / "static"), workers=CPUS,
                            pidfile=str(REPO / "conf" / "forkserver.pid"),
                            source=str(REPO / "conf" / "site.yaml"))
    assert environment_problems(config) == []


def test_the_sample_configuration_shows_every_key_with_its_default() -> None:
    document = yaml.safe_load((REPO / "conf" / "site.yaml").read_text())
    sections = {key.split(".")[0] for key in SCHEMA if "." in key}
    shown = {
        f"{key}.{inner}" if key in sections else key: inner_value
        for key, value in document.items()
        for inner, inner_value in (value.items() if key in sections else [(key, value)])
    }
    assert set(shown) == set(SCHEMA)
    for key, setting in SCHEMA.items():
        # The sample serves ../static, and names a pidfile so that -s works from the checkout.
        if key not in ("docroot", "pidfile"):
            assert shown[key] == setting.default, key


def test_every_key_is_documented_in_the_configuration_reference() -> None:
    reference = (REPO / "docs" / "configuration.md").read_text()
    for key in SCHEMA:
        assert f"| `{key}` |" in reference, key


# -- robustness -----------------------------------------------------------------------

YAMLISH = st.text(alphabet="abcdeilmoprstuw:{}[],-#'\"!&*?|>. \n\t0123456789", max_size=80)


@settings(max_examples=300, deadline=None)
@given(YAMLISH)
def test_any_text_gives_a_config_or_a_config_error_never_a_crash(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "fuzz.yaml")
        with open(path, "w") as stream:
            stream.write(text)
        try:
            load_config(path)
        except ConfigError as exc:
            assert exc.problems and all(p.startswith(path) for p in exc.problems)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_a_port_is_accepted_exactly_when_it_is_in_range(port: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "port.yaml")
        with open(path, "w") as stream:
            stream.write(f"port: {port}\n")
        if 0 <= port <= 65535:
            assert load_config(path).port == port
        else:
            with pytest.raises(ConfigError, match=f"out of range 0{EN_DASH}65535"):
                load_config(path)


# -- environment_problems ------------------------------------------------------------


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may enter (tmp_path's parents are 0700, which would hide it)."""
    directory = Path(tempfile.mkdtemp(prefix="forkserver-config-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def config_in(tmp_path: Path, **changes: Any) -> Config:
    return dataclasses.replace(load_config(None, {"docroot": str(tmp_path)}), **changes)


def test_a_sound_environment_has_no_problems(tmp_path: Path) -> None:
    config = config_in(
        tmp_path, access_log=str(tmp_path / "access.log"), error_log=str(tmp_path / "e.log"),
        pidfile=str(tmp_path / "forkserver.pid"),
    )
    (tmp_path / "e.log").write_text("an existing log is appended to\n")
    assert environment_problems(config) == []


def test_stderr_and_disabled_logs_need_no_checks(tmp_path: Path) -> None:
    assert environment_problems(config_in(tmp_path, access_log=None, error_log="-")) == []


def test_unwritable_log_and_pid_paths_are_each_reported(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    config = config_in(
        tmp_path,
        access_log=str(tmp_path / "missing" / "access.log"),
        error_log=str(tmp_path / "a-file" / "error.log"),
        pidfile=str(tmp_path / "a-dir"),
    )
    assert environment_problems(config) == [
        f"access_log: '{tmp_path}/missing/access.log' cannot be created: "
        f"directory {tmp_path}/missing does not exist",
        f"error_log: '{tmp_path}/a-file/error.log' cannot be created: "
        f"{tmp_path}/a-file is not a directory",
        f"pidfile: '{tmp_path}/a-dir' is a directory",
    ]


def test_a_log_path_that_is_a_directory_is_reported(tmp_path: Path) -> None:
    config = config_in(tmp_path, access_log=str(tmp_path))
    assert environment_problems(config) == [f"access_log: '{tmp_path}' is a directory"]


def test_a_pidfile_in_a_missing_directory_is_reported(tmp_path: Path) -> None:
    config = config_in(tmp_path, pidfile=str(tmp_path / "run" / "x.pid"))
    assert environment_problems(config) == [
        f"pidfile: '{tmp_path}/run/x.pid' cannot be written: "
        f"directory {tmp_path}/run does not exist"
    ]


def test_a_docroot_removed_after_loading_is_reported(tmp_path: Path) -> None:
    config = config_in(tmp_path, docroot=str(tmp_path / "gone"))
    assert environment_problems(config) == [
        f"docroot: '{tmp_path}/gone' is not an existing directory"
    ]


def test_a_unix_socket_path_is_checked_against_the_filesystem(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a socket")
    for host, problem in [
        (f"unix:{tmp_path}/http.sock", None),
        (f"unix:{tmp_path}/missing/http.sock",
         f"host: 'unix:{tmp_path}/missing/http.sock' cannot be created: directory "
         f"{tmp_path}/missing does not exist"),
        (f"unix:{tmp_path}/plain",
         f"host: 'unix:{tmp_path}/plain' exists and is not a socket; forkserver replaces "
         "only a stale socket"),
    ]:
        assert environment_problems(config_in(tmp_path, host=host)) == (
            [problem] if problem else []), host


def test_a_socket_owner_must_exist(tmp_path: Path) -> None:
    config = config_in(tmp_path, host=f"unix:{tmp_path}/s.sock",
                       socket_owner="no-such-user-x:no-such-group-x")
    assert environment_problems(config) == [
        "socket_owner: 'no-such-user-x:no-such-group-x': user 'no-such-user-x' does not exist",
        "socket_owner: 'no-such-user-x:no-such-group-x': group 'no-such-group-x' does not exist",
    ]
    assert environment_problems(dataclasses.replace(config, socket_owner="root:root")) == []
    assert environment_problems(dataclasses.replace(config, socket_owner=":root")) == []


def test_missing_user_and_group_are_reported(tmp_path: Path) -> None:
    config = config_in(tmp_path, user="no-such-user-x", group="no-such-group-x")
    assert environment_problems(config) == [
        "user: 'no-such-user-x' does not exist",
        "group: 'no-such-group-x' does not exist",
    ]


def unprivileged_account() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


NOBODY = unprivileged_account()
needs_root_and_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or NOBODY is None, reason="needs root and a 'nobody' account"
)


@needs_root_and_nobody
def test_the_workers_user_must_be_able_to_reach_the_docroot(open_dir: Path) -> None:
    assert NOBODY is not None
    private = open_dir / "private"
    (private / "www").mkdir(parents=True)
    private.chmod(0o700)
    config = config_in(open_dir, docroot=str(private / "www"), user="nobody")
    assert environment_problems(config) == [
        f"user: 'nobody' (uid {NOBODY.pw_uid}) could not read docroot {private / 'www'}: "
        f"{private} needs search permission but has mode 0700 (owner uid 0, gid 0)"
    ]


@needs_root_and_nobody
def test_the_workers_user_must_be_able_to_list_the_docroot(open_dir: Path) -> None:
    www = open_dir / "www"
    www.mkdir()
    www.chmod(0o711)  # searchable but not listable by others
    (problem,) = environment_problems(config_in(open_dir, docroot=str(www), user="nobody"))
    assert problem.endswith(
        f"{www} needs read and search permission but has mode 0711 (owner uid 0, gid 0)"
    )


@needs_root_and_nobody
def test_owner_and_group_grants_are_honoured(open_dir: Path) -> None:
    assert NOBODY is not None
    owned = open_dir / "owned"
    owned.mkdir()
    owned.chmod(0o700)
    os.chown(owned, NOBODY.pw_uid, -1)
    grouped = open_dir / "grouped"
    grouped.mkdir()
    grouped.chmod(0o750)
    os.chown(grouped, 0, NOBODY.pw_gid)
    for docroot in (owned, grouped):
        config = config_in(open_dir, docroot=str(docroot), user="nobody")
        assert environment_problems(config) == [], docroot


@needs_root_and_nobody
def test_the_owner_class_decides_even_when_other_would_allow(open_dir: Path) -> None:
    # The kernel uses the owner bits alone for the owner: 0077 locks the owner out.
    assert NOBODY is not None
    locked = open_dir / "locked"
    locked.mkdir()
    locked.chmod(0o077)
    os.chown(locked, NOBODY.pw_uid, -1)
    (problem,) = environment_problems(config_in(open_dir, docroot=str(locked), user="nobody"))
    assert f"{locked} needs read and search permission but has mode 0077" in problem


@needs_root_and_nobody
def test_a_symlinked_docroot_is_judged_by_its_target(open_dir: Path) -> None:
    hidden = open_dir / "hidden"
    (hidden / "www").mkdir(parents=True)
    hidden.chmod(0o700)
    (open_dir / "link").symlink_to(hidden / "www")
    config = config_in(open_dir, docroot=str(open_dir / "link"), user="nobody")
    (problem,) = environment_problems(config)
    assert problem.endswith(
        f"{hidden} needs search permission but has mode 0700 (owner uid 0, gid 0)"
    )


def test_the_readability_check_is_skipped_when_not_root_or_user_is_root(tmp_path: Path) -> None:
    # Not root: workers keep our identity and os.access already judged the docroot.
    # user "root": nothing is dropped. Either way the mode-bit walk does not apply.
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    assert environment_problems(config_in(private, user="root")) == []
