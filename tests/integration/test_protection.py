"""Protection on the real server (issue 18, SPEC §9): per-client connection and request
limits across two workers, exempt networks, the PROXY protocol's clients, a full
client table, a slow reader reset by limits.min_send_rate, and worker_memory_limit
with a load running.

Clients are told apart by their source address: every 127.0.0.0/8 address is this
machine's loopback, so a socket bound to 127.0.0.N before connecting is client N.
To make a connection land on a chosen worker, the other one is stopped (SIGSTOP)
while it is accepted: a stopped process is not waiting in epoll, so EPOLLEXCLUSIVE
wakes the one that is.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.exposition import parse_exposition
from tests.support import (
    Server,
    alive,
    read_until_closed,
    rss_bytes,
    running,
    status_of,
    wait_for,
)

STATUS = "/server-status"
MONITOR = "127.0.0.200"  # exempt: the status endpoint is read from here
SMALL = b"small file\n"
KEEP = b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "small.txt").write_bytes(SMALL)
    return root


def settings(docroot: Path, **limits: object) -> dict[str, object]:
    return {
        "docroot": str(docroot), "workers": 2,
        "status": {"path": STATUS, "allow": ["127.0.0.0/8"]},
        "limits": {"exempt": [f"{MONITOR}/32"], **limits},
    }


def connect(server: Server, source: str, timeout: float = 10.0,
            receive_buffer: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body (or none, as for a 503 with close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split(" ")[1]), headers, body


def ask(sock: socket.socket, request: bytes = KEEP) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(request)
    return read_response(sock)


def metrics(server: Server, family: str, label: str) -> dict[str, float]:
    """One Prometheus family by label, read from the exempt monitoring address (named
    by a PROXY header when the server expects one)."""
    request = (f"GET {STATUS}?format=prometheus HTTP/1.1\r\nHost: x\r\n"
               "Connection: close\r\n\r\n").encode()
    if server.settings.get("proxy_protocol"):
        sock = connect(server, "127.0.0.1")
        request = f"PROXY TCP4 {MONITOR} 127.0.0.1 40000 80\r\n".encode() + request
    else:
        sock = connect(server, MONITOR)
    with sock:
        sock.sendall(request)
        response = read_until_closed(sock)
    assert status_of(response) == 200
    families = parse_exposition(response.partition(b"\r\n\r\n")[2].decode())
    return {dict(labels)[label]: value for labels, value in families[family].samples.items()}


def limited(server: Server) -> dict[str, float]:
    """forkserver_limited_total by limit."""
    return metrics(server, "forkserver_limited_total", "limit")


def settled_limited(server: Server, limit: str, expected: float) -> None:
    """Heartbeats publish the counts 4 times a second: poll until they agree."""
    wait_for(lambda: limited(server).get(limit) == expected, timeout=10,
             what=f"forkserver_limited_total{{limit={limit!r}}} == {expected}")


def stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "Tt"


@contextlib.contextmanager
def only(server: Server, worker: int) -> Iterator[None]:
    """While inside, only ``worker`` accepts: every other worker is stopped."""
    others = [pid for pid in server.workers() if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        for pid in others:
            wait_for(functools.partial(stopped, pid), what=f"worker {pid} stopped")
        yield
    finally:
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def on_worker(server: Server, worker: int, source: str) -> socket.socket:
    """A keep-alive connection of client ``source`` served by ``worker`` (one request
    answered, so the worker has accepted and counted it)."""
    with only(server, worker):
        sock = connect(server, source)
        status, _, _ = ask(sock)
    assert status == 200
    return sock


def refused_with_503(server: Server, source: str) -> dict[str, str]:
    with connect(server, source) as sock:
        status, headers, _ = ask(sock)
        assert status == 503
        assert headers["connection"] == "close"
        assert int(headers["retry-after"]) >= 1
        assert read_until_closed(sock) == b""  # and closed
    return headers


# -- connections_per_client -------------------------------------------------------------


def test_connections_per_client_counts_across_both_workers(tmp_path: Path,
                                                            docroot: Path) -> None:
    with running(tmp_path, settings(docroot, connections_per_client=3)) as server:
        first, second = server.workers()
        held = [on_worker(server, first, "127.0.0.10"), on_worker(server, second, "127.0.0.10"),
                on_worker(server, second, "127.0.0.10")]
        # Either worker refuses the fourth: each sees the other's counts.
        for worker in (first, second):
            with only(server, worker):
                refused_with_503(server, "127.0.0.10")
        # Another client, and the exempt address, are not affected.
        extra = [on_worker(server, first, "127.0.0.11") for _ in range(3)]
        extra += [connect(server, MONITOR) for _ in range(5)]
        for sock in extra[3:]:
            assert ask(sock)[0] == 200
        # The refused connections cost the client nothing: its held ones still work.
        assert all(ask(sock)[0] == 200 for sock in held)
        held.pop().close()
        sock = wait_for(lambda: try_admitted(server, "127.0.0.10"), what="a free place")
        sock.close()
        settled_limited(server, "connections", 2)
        for sock in held + extra:
            sock.close()
        # In the access log with their status; never an error-log line per refusal.
        wait_for(lambda: server.access_log.count('" 503 ') == 2, what="two 503 lines")
        assert "[error]" not in server.error_log and " 503" not in server.error_log


def try_admitted(server: Server, source: str) -> socket.socket | None:
    sock = connect(server, source)
    status, _, _ = ask(sock)
    if status == 200:
        return sock
    sock.close()
    return None


def test_a_worker_killed_while_holding_connections_frees_them(tmp_path: Path,
                                                              docroot: Path) -> None:
    with running(tmp_path, settings(docroot, connections_per_client=2)) as server:
        first, second = server.workers()
        held = [on_worker(server, second, "127.0.0.12") for _ in range(2)]
        with only(server, first):
            refused_with_503(server, "127.0.0.12")
        os.kill(second, signal.SIGKILL)
        wait_for(lambda: not alive(second), what="the killed worker to be reaped")
        for sock in held:
            sock.close()
        # The master reaped it and cleared its counts: the client is served again,
        # by the survivor or the replacement.
        sock = wait_for(lambda: try_admitted(server, "127.0.0.12"), timeout=10,
                        what="the client admitted again")
        sock.close()
        server.wait_serving()


# -- requests_per_second and burst ------------------------------------------------------


def test_rate_limit_is_one_bucket_across_workers_and_keeps_the_connection(
    tmp_path: Path, docroot: Path,
) -> None:
    # A bucket of 3 (burst 2 + 1) refilled every 2 s.
    with running(tmp_path, settings(docroot, requests_per_second=0.5, burst=2)) as server:
        first, second = server.workers()
        on_first = on_worker(server, first, "127.0.0.20")  # 1 token
        on_second = on_worker(server, second, "127.0.0.20")  # 2 tokens
        assert ask(on_first)[0] == 200  # 3: the bucket is empty
        status, headers, body = ask(on_second)
        assert status == 429
        assert 1 <= int(headers["retry-after"]) <= 2
        assert "connection" not in headers  # the connection stays usable
        assert b"429" in body or body == b""
        status, headers, _ = ask(on_first)
        assert status == 429
        # Another client has its own bucket; the exempt address has none.
        other = connect(server, "127.0.0.21")
        assert [ask(other)[0] for _ in range(3)] == [200, 200, 200]
        assert ask(other)[0] == 429
        monitor = connect(server, MONITOR)
        assert {ask(monitor)[0] for _ in range(10)} == {200}
        # After Retry-After, the same connections are served again.
        wait_for(lambda: ask(on_second)[0] == 200, timeout=10, interval=0.5,
                 what="a token back")
        settled_limited(server, "requests", limited(server)["requests"])
        assert limited(server)["requests"] >= 3
        for sock in (on_first, on_second, other, monitor):
            sock.close()
        wait_for(lambda: '" 429 ' in server.access_log, what="429 in the access log")
        assert "429" not in server.error_log


def test_burst_without_a_rate_is_refused_at_start(tmp_path: Path, docroot: Path) -> None:
    server = Server(tmp_path, settings(docroot, burst=5), [])
    with pytest.raises(AssertionError, match=r"limits\.burst: 5 needs limits\.requests_per_second"):
        server.start()
    server.stop()


# -- the PROXY protocol's clients -------------------------------------------------------


def proxied(server: Server, client: str, request: bytes = KEEP) -> socket.socket:
    sock = connect(server, "127.0.0.1")
    sock.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 80\r\n".encode() + request)
    return sock


def test_limits_apply_to_the_client_the_proxy_names(tmp_path: Path, docroot: Path) -> None:
    config = settings(docroot, connections_per_client=1, requests_per_second=0.001)
    config.update(proxy_protocol=True, proxy_protocol_from=["127.0.0.1/32"])
    config["limits"]["exempt"] = ["198.51.100.0/24"]  # type: ignore[index]
    with running(tmp_path, config) as server:
        first = proxied(server, "203.0.113.5")
        assert read_response(first)[0] == 200
        second = proxied(server, "203.0.113.5")  # same proxy peer, same named client
        assert read_response(second)[0] == 503
        second.close()
        assert ask(first)[0] == 429  # its bucket (one request per 1000 s) is empty
        # A different client behind the same proxy is not limited by the first.
        other = proxied(server, "203.0.113.6")
        assert read_response(other)[0] == 200
        # An exempt client behind the proxy: no limit at all.
        exempt = [proxied(server, "198.51.100.7") for _ in range(3)]
        assert [read_response(sock)[0] for sock in exempt] == [200, 200, 200]
        assert ask(exempt[0])[0] == 200
        for sock in (first, other, *exempt):
            sock.close()
        wait_for(lambda: '203.0.113.5 - - [' in server.access_log and '" 503 ' in
                 server.access_log, what="the named client's refusal in the access log")


def test_a_flood_of_proxy_sources_fills_the_table_and_refuses_nobody(
    tmp_path: Path, docroot: Path,
) -> None:
    """More distinct clients than the table has rows (16,384), each sending one request
    and keeping its row busy for 1000 s: every first request is served, the clients
    without a row are counted as untracked, and the workers' memory stays bounded."""
    config = settings(docroot, requests_per_second=0.001)
    config.update(proxy_protocol=True, proxy_protocol_from=["127.0.0.1/32"],
                  access_log=None)
    sources = 17_000
    close = b"GET /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with running(tmp_path, config) as server:
        before = {pid: rss_bytes(pid) for pid in server.workers()}
        statuses: dict[int, int] = {}
        for n in range(sources):
            with proxied(server, f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", close) as sock:
                response = read_until_closed(sock)
            statuses[status_of(response)] = statuses.get(status_of(response), 0) + 1
        assert statuses == {200: sources}  # nobody refused for the others' flood
        counts = wait_for(lambda: (c := limited(server)) and c.get("untracked", 0) > 0 and c,
                          what="untracked clients counted")
        assert counts["untracked"] < sources
        assert counts["requests"] == 0
        # A client tracked early still has its (empty) bucket: it is limited.
        with proxied(server, "10.0.0.0", close) as sock:
            assert status_of(read_until_closed(sock)) == 429
        for pid, rss in before.items():
            assert rss_bytes(pid) - rss < 16 * 1024 * 1024  # the table is 2.4 MiB, fixed


# -- min_send_rate ----------------------------------------------------------------------


def test_a_slow_reader_is_reset_by_min_send_rate_and_a_fast_one_is_not(
    tmp_path: Path, docroot: Path,
) -> None:
    big = docroot / "big.bin"
    big.write_bytes(os.urandom(16 * 1024 * 1024))  # far more than the socket buffers
    config = settings(docroot, min_send_rate=256 * 1024)
    config["timeouts"] = {"send": 60}
    with running(tmp_path, config) as server:
        # Fast: the whole file, well above the minimum.
        with connect(server, "127.0.0.30", timeout=30) as sock:
            status, _, body = ask(sock, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n"
                                              b"Connection: close\r\n\r\n")
            assert status == 200 and len(body) == big.stat().st_size
        # Slow: 4 KiB every 0.1 s, about 40 KiB/s, through a small receive buffer.
        sock = connect(server, "127.0.0.31", timeout=5, receive_buffer=4096)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        reset = False
        deadline = time.monotonic() + 60
        started = time.monotonic()
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    reset = True
                    break
                if not chunk:
                    reset = True  # closed before the body was complete
                    break
                received += len(chunk)
                time.sleep(0.1)
        finally:
            sock.close()
        elapsed = time.monotonic() - started
        assert reset and received < big.stat().st_size
        assert elapsed >= 10  # never within the first window
        settled_limited(server, "min_send_rate", 1)
        assert all(alive(pid) for pid in server.workers())


# -- worker_memory_limit ----------------------------------------------------------------


FILES = 400
FILE_BYTES = 15 * 1024  # kept in memory by the open-file cache (at most 16 KiB each)


def fresh_worker_rss(tmp_path: Path, docroot: Path) -> int:
    with running(tmp_path / "probe", {"docroot": str(docroot), "workers": 2}) as server:
        return max(rss_bytes(pid) for pid in server.workers())


def test_memory_limit_replaces_workers_one_at_a_time_under_load(
    tmp_path: Path, docroot: Path,
) -> None:
    """Workers grow by keeping small files in memory (the open-file cache: up to 4 MiB
    of files of at most 16 KiB each); a limit 2 MiB above a fresh worker's memory is
    crossed after a few hundred requests. Under a steady load, each is replaced by a
    successor that serves first, never more than workers + 1 alive, and no request
    fails."""
    for n in range(FILES):
        (docroot / f"f{n}.bin").write_bytes(os.urandom(FILE_BYTES))
    (tmp_path / "probe").mkdir()
    limit = fresh_worker_rss(tmp_path, docroot) + 2 * 1024 * 1024
    config = settings(docroot)
    config["worker_memory_limit"] = limit
    failures: list[str] = []
    done = threading.Event()
    served = [0]

    def load(source: str) -> None:
        n = 0
        while not done.is_set():
            n += 1
            try:
                with connect(server, source, timeout=10) as sock:
                    sock.sendall(f"GET /f{n % FILES}.bin HTTP/1.1\r\nHost: x\r\n"
                                 "Connection: close\r\n\r\n".encode())
                    response = read_until_closed(sock)
                if status_of(response) != 200 or len(response) < FILE_BYTES:
                    failures.append(f"{response[:60]!r}")
                served[0] += 1
            except OSError as exc:
                failures.append(repr(exc))

    with running(tmp_path, config) as server:
        threads = [threading.Thread(target=load, args=(f"127.0.0.{40 + i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
        most = 0
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                most = max(most, len(server.workers()))
                if server.error_log.count("is above worker_memory_limit") >= 2:
                    break
                time.sleep(0.05)
        finally:
            done.set()
            for thread in threads:
                thread.join(timeout=30)
        assert server.error_log.count("is above worker_memory_limit") >= 2, (
            server.error_log[-2000:])
        assert not failures, failures[:5]
        assert served[0] > 0
        assert most <= 3  # workers + 1
        restarts = wait_for(lambda: restarts_by_reason(server).get("memory", 0) >= 2 and
                            restarts_by_reason(server), what="memory restarts counted")
        assert restarts.get("crash", 0) == 0
        server.wait_serving()


def restarts_by_reason(server: Server) -> dict[str, float]:
    return metrics(server, "forkserver_worker_restarts_total", "reason")


def test_a_limit_below_a_fresh_worker_is_reported_and_backs_off(
    tmp_path: Path, docroot: Path,
) -> None:
    config = settings(docroot)
    config["worker_memory_limit"] = "2MiB"
    with running(tmp_path, config) as server:
        wait_for(lambda: "below a fresh worker's resident memory" in server.error_log,
                 timeout=20, what="the report")
        # Backing off: over a few seconds, only a few replacements, never more than 3 alive.
        most = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            most = max(most, len(server.workers()))
            time.sleep(0.05)
        assert most <= 3
        with connect(server, "127.0.0.50") as sock:
            assert ask(sock)[0] == 200
