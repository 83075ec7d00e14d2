"""The core as users run it: a real master and workers on a loopback port.

Covers the process model (workers share one listening socket, dead workers are
replaced, an orphaned pool exits), stops, file serving over real sockets, keep-alive,
pipelining, timeouts, malformed input, and the logs.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import (
    Server,
    alive,
    children_of,
    get,
    listening_inode,
    port_bindable,
    request,
    running,
    socket_inodes,
    status_of,
    wait_for,
)


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<!DOCTYPE html><title>home</title>hello\n")
    (root / "sub" / "index.html").write_text("<p>nested</p>\n")
    (root / "style.css").write_text("body { color: red }\n")
    (root / "big.bin").write_bytes(os.urandom(10 * 1024 * 1024))
    (root / ".secret").write_text("hidden\n")
    (root / ".well-known" / "acme-challenge").mkdir(parents=True)
    (root / ".well-known" / "acme-challenge" / "t0k3n").write_text("t0k3n.thumbprint")
    (root / ".well-known" / ".htpasswd").write_text("admin:x\n")
    (root / "empty").mkdir()
    return root


@pytest.fixture
def server(tmp_path: Path, docroot: Path):  # type: ignore[no-untyped-def]
    with running(tmp_path, {"docroot": str(docroot), "workers": 2}) as started:
        yield started


def fetch(server: Server, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


# -- processes ------------------------------------------------------------------------
def test_workers_share_the_masters_listening_socket(tmp_path: Path, docroot: Path) -> None:
    with running(tmp_path, {"docroot": str(docroot), "workers": 3}) as server:
        workers = server.workers()
        assert len(workers) == 3
        inode = listening_inode(server.port)
        assert inode is not None
        assert inode in socket_inodes(server.pid)
        for pid in workers:
            assert inode in socket_inodes(pid), f"worker {pid} lacks the listening socket"


def test_port_zero_logs_the_real_port(server: Server) -> None:
    assert f"listening on http://127.0.0.1:{server.port}" in server.error_log
    assert server.port != 0


def test_ipv6_loopback(tmp_path: Path, docroot: Path) -> None:
    with running(tmp_path, {"docroot": str(docroot), "host": "::1", "workers": 1}) as server:
        assert f"listening on http://[::1]:{server.port}" in server.error_log
        response = request(
            server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", host="::1"
        )
        assert status_of(response) == 200


def test_killed_worker_is_replaced_within_a_second(server: Server) -> None:
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    # operations.md promises a replacement "within a second" (the master's loop turns
    # every 0.2 s and respawns at once). The deadline is three times that: on a loaded
    # shared 2-core machine the master may wait for a core before it reaps and forks; a
    # master that never replaces the worker still fails, after 3 s instead of 1 s.
    wait_for(lambda: victim not in server.workers() and len(server.workers()) == 2,
             timeout=3.0, interval=0.01, what="a replacement worker")
    wait_for(lambda: f"worker {victim} " in server.error_log, what="the death logged")
    line = next(x for x in server.error_log.splitlines() if f"worker {victim} " in x)
    assert "SIGKILL" in line
    assert status_of(get(server.port)) == 200


def test_killed_master_takes_its_workers_and_port_with_it(server: Server) -> None:
    workers = server.workers()
    port = server.port
    server.signal(signal.SIGKILL)
    assert server.process is not None
    server.process.wait(timeout=5)
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=2.0, what="workers exit")
    wait_for(lambda: port_bindable(port), timeout=2.0, what="the port freed")


def test_quit_stops_fast_with_status_zero(server: Server) -> None:
    workers = server.workers()
    server.signal(signal.SIGQUIT)
    assert server.process is not None
    # operations.md: the master exits "within about a second" (its workers get
    # FAST_STOP_SECONDS = 1 s, then SIGKILL). The 5 s deadline tolerates a loaded shared
    # 2-core machine and is still far below timeouts.graceful (30 s), which a QUIT must
    # not wait for.
    assert server.process.wait(timeout=5) == 0
    assert not any(alive(pid) for pid in workers)


def test_int_stops_fast_with_status_zero(server: Server) -> None:
    server.signal(signal.SIGINT)
    assert server.process is not None
    assert server.process.wait(timeout=3) == 0


def test_term_lets_a_slow_download_finish(server: Server, docroot: Path) -> None:
    expected = hashlib.sha256((docroot / "big.bin").read_bytes()).hexdigest()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    first = sock.recv(4096)
    assert first.startswith(b"HTTP/1.1 200 ")
    server.signal(signal.SIGTERM)
    # The stop is under way (both workers draining) while the client still reads slowly.
    wait_for(lambda: server.error_log.count("worker stopping gracefully") == 2,
             what="both workers draining")
    data = bytearray(first)
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    received = bytearray(body)
    while len(received) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the download completed"
        received += chunk
    assert b"Connection: close" in head or sock.recv(1) == b""
    sock.close()
    assert hashlib.sha256(received).hexdigest() == expected
    assert server.process is not None
    assert server.process.wait(timeout=10) == 0
    # The master exits only after reaping its last worker: no copy of the listener is
    # left, so the port is free at once.
    assert port_bindable(server.port)


# -- files ----------------------------------------------------------------------------
def test_files_are_served_byte_exact(server: Server, docroot: Path) -> None:
    for name in ("index.html", "style.css", "big.bin"):
        status, headers, body = fetch(server, f"/{name}")
        assert status == 200
        assert body == (docroot / name).read_bytes()
        assert int(headers["content-length"]) == len(body)


def test_head_has_the_get_headers_and_no_body(server: Server) -> None:
    _, get_headers, _ = fetch(server, "/style.css")
    status, head_headers, body = fetch(server, "/style.css", "HEAD")
    assert status == 200 and body == b""
    for name in ("content-length", "content-type", "last-modified", "etag"):
        assert head_headers[name] == get_headers[name]


def test_required_response_headers(server: Server) -> None:
    status, headers, _ = fetch(server, "/style.css")
    assert status == 200
    assert headers["server"].startswith("forkserver")
    assert headers["content-type"] == "text/css; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch(r'"[^"]+"', headers["etag"])
    assert headers["last-modified"].endswith(" GMT")
    assert headers["date"].endswith(" GMT")


def test_directories_index_redirect_and_forbidden(server: Server) -> None:
    status, headers, _ = fetch(server, "/sub?x=1")
    assert status == 301 and headers["location"].endswith("/sub/?x=1")
    status, _, body = fetch(server, "/sub/")
    assert status == 200 and body == b"<p>nested</p>\n"
    assert fetch(server, "/empty/")[0] == 403


def test_missing_dotfiles_and_traversal(server: Server) -> None:
    assert fetch(server, "/nope.txt")[0] == 404
    assert fetch(server, "/.secret")[0] == 404
    # RFC 8615: /.well-known/ is public (an ACME http-01 challenge), dotfiles below it are not.
    status, _, body = fetch(server, "/.well-known/acme-challenge/t0k3n")
    assert (status, body) == (200, b"t0k3n.thumbprint")
    assert fetch(server, "/.well-known/.htpasswd")[0] == 404
    close = b"Host: x\r\nConnection: close\r\n\r\n"
    raw = request(server.port, b"GET /../../etc/passwd HTTP/1.1\r\n" + close)
    assert status_of(raw) == 400
    raw = request(server.port, b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\n" + close)
    assert status_of(raw) == 400
    assert b"root:" not in raw


def test_methods(server: Server) -> None:
    close = b"Host: x\r\nConnection: close\r\n\r\n"
    response = request(server.port, b"POST /style.css HTTP/1.1\r\n" + close)
    assert status_of(response) == 405
    assert b"\r\nAllow: GET, HEAD\r\n" in response
    assert status_of(request(server.port, b"BREW / HTTP/1.1\r\n" + close)) == 501


# -- connections ----------------------------------------------------------------------
def test_keep_alive_and_pipelining(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /sub/ HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    statuses = re.findall(rb"HTTP/1.1 (\d{3})", data)
    assert statuses == [b"200", b"200", b"404"]
    assert data.index(b"body { color: red }") < data.index(b"<p>nested</p>")


def test_thousands_of_pipelined_requests_in_one_packet(server: Server) -> None:
    # Each answer completes at once, so the pipeline must be walked by a loop: a
    # recursion per request once crashed the worker after a few hundred.
    workers = server.workers()
    count = 2000
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n" * count
                     + b"GET /style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = bytearray()
        while chunk := sock.recv(1 << 20):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK\r\n") == count + 1
    assert server.workers() == workers
    assert "crashed" not in server.error_log


def test_http10_keep_alive_only_when_asked(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /style.css HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head = sock.recv(65536)
        assert b"Connection: keep-alive" in head
        sock.sendall(b"GET /style.css HTTP/1.0\r\n\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert rest.startswith(b"HTTP/1.1 200") and b"Connection: close" in rest


def test_idle_keep_alive_connections_do_not_delay_a_new_request(server: Server) -> None:
    idle = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            idle.append(sock)
        # With every idle connection still open, new requests are answered: a server
        # that waited for idle connections to time out (timeouts.keepalive, 15 s)
        # would leave these past get()'s 5 s socket timeout, with no status to read.
        # (How fast they are answered is for `make bench`, not a timed test.)
        for _ in range(5):
            assert status_of(get(server.port, "/style.css")) == 200
    finally:
        for sock in idle:
            sock.close()


def test_header_timeout_answers_408(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 1, "timeouts": {"header": 1}}
    with running(tmp_path, settings) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            data = sock.recv(65536)
            assert status_of(data) == 408
            assert 0.9 < time.monotonic() - started < 3
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            assert sock.recv(100) == b""  # nothing sent: a silent close


def test_keepalive_timeout_closes_idle_connection(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 1, "timeouts": {"keepalive": 1}}
    with running(tmp_path, settings) as server, socket.create_connection(
        ("127.0.0.1", server.port), timeout=5
    ) as sock:
        sock.sendall(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert 0.9 < time.monotonic() - started < 3


MALFORMED = [
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),  # space before colon
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),  # obs-fold
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400),
    (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
     400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 17000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: a\r\n" * 101 + b"\r\n", 431),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),
]


@pytest.mark.parametrize(("raw", "status"), MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_requests_get_their_status(server: Server, raw: bytes, status: int) -> None:
    before = server.workers()
    response = request(server.port, raw)
    assert status_of(response) == status, response[:200]
    # After a framing error the rest of the stream cannot be trusted: always close.
    assert b"Connection: close" in response
    assert server.workers() == before
    assert status_of(get(server.port)) == 200


@pytest.mark.parametrize("path", ["/%00", "/%zz", "/%c0%ae%c0%ae/etc/passwd", "/../x"])
def test_bad_paths_are_400_on_a_connection_that_stays_usable(server: Server, path: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status_of(sock.recv(65536)) == 400
        # The request was well framed, so the connection carries the next one.
        sock.sendall(b"GET /style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert status_of(rest) == 200


# -- logs -----------------------------------------------------------------------------
COMBINED = re.compile(
    r'^(\S+) - - \[(\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "([^"]*)" (\d{3}) (\d+|-) '
    r'"([^"]*)" "([^"]*)" (\d+)$'
)


def test_access_log_is_combined_format_plus_microseconds(server: Server) -> None:
    started = time.monotonic()
    request(server.port, b"GET /style.css HTTP/1.1\r\nHost: x\r\nReferer: http://r/\r\n"
                         b"User-Agent: t\"ua\xe9\r\nConnection: close\r\n\r\n")
    wall_us = (time.monotonic() - started) * 1_000_000
    line = wait_for(lambda: server.access_log.strip().splitlines()[-1:] or None,
                    what="an access-log line")[0]
    match = COMBINED.match(line)
    assert match, line
    client, _, request_line, status, size, referer, agent, micros = match.groups()
    assert (client, request_line, status, size) == ("127.0.0.1", "GET /style.css HTTP/1.1",
                                                    "200", "20")
    assert referer == "http://r/"
    assert agent == "t\\x22ua\\xE9"  # escaped: no forged quotes, no raw 8-bit bytes
    # The server times the request from its first byte to its last: more than nothing,
    # and no longer than the client saw from connecting to reading the close.
    assert 0 < int(micros) <= wall_us, (micros, wall_us)


def test_error_log_format(server: Server) -> None:
    # Every line has the format; the first is info, or the warning a root master
    # without `user:` gives (the suite runs as root in CI).
    lines = server.error_log.splitlines()
    assert lines
    for line in lines:
        assert re.match(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d\] "
                        r"\[(debug|info|warning|error)\] \[\d+\] \S", line), line
    first_level = "warning" if os.geteuid() == 0 else "info"
    assert re.match(rf"^\[[^]]+\] \[{first_level}\] \[{server.pid}\] ", lines[0]), lines[0]


def test_nothing_but_http_reaches_a_client(server: Server) -> None:
    # Error-log lines must never leak into a socket (the fd-reuse pitfall of daemons).
    server.signal(signal.SIGUSR1)
    for _ in range(20):
        assert get(server.port, "/style.css").startswith(b"HTTP/1.1 200 OK\r\n")


# -- command line ---------------------------------------------------------------------
def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forkserver", *args], capture_output=True, text=True,
        timeout=30, cwd=cwd,
    )


def test_check_accepts_a_valid_file(tmp_path: Path, docroot: Path) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text(f"docroot: {docroot}\nport: 0\n")
    result = run_cli("-c", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"forkserver: configuration {config} is valid"


def test_check_reports_every_problem_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("port: 70000\nworkers: 0\nbogus: 1\n")
    result = run_cli("-c", str(config), "-t")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 3
    assert any(f"{config}:1" in x and "port" in x for x in lines)
    assert any(f"{config}:3" in x and "bogus" in x for x in lines)


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("port: 8080\nhost: [oops\n")
    result = run_cli("-c", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.search(rf"{re.escape(str(config))}:\d+:\d+", result.stderr)


def test_bind_failure_exits_1_with_one_line(tmp_path: Path, docroot: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--docroot", str(docroot), "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot listen on 127.0.0.1" in result.stderr


def test_signal_without_pidfile_exits_1(tmp_path: Path, docroot: Path) -> None:
    result = run_cli("--docroot", str(docroot), "-s", "reload")
    assert result.returncode == 1 and "pidfile" in result.stderr


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    result = run_cli("--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_no_config_serves_the_current_directory(tmp_path: Path, docroot: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "forkserver", "--port", "0", "--workers", "1"],
        cwd=docroot, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        port = 0
        deadline = time.monotonic() + 10
        while not port and time.monotonic() < deadline:
            line = process.stderr.readline()
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else 0
        assert port
        wait_for(lambda: children_of(process.pid), what="a worker")
        response = wait_for(lambda: get(port, "/style.css"), what="a response")
        assert status_of(response) == 200 and response.endswith(b"body { color: red }\n")
    finally:
        process.send_signal(signal.SIGQUIT)
        process.wait(timeout=5)
