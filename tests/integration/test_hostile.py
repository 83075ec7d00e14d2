"""Hostile clients against the real server: slow clients and a full descriptor table.

Slow clients come from slowhttptest (slowloris, slow body, slow read), hundreds at a
time against two workers, while a normal client is timed alongside; the deadlines in
``timeouts`` must be what ends them. Descriptor exhaustion starts the server under a
small RLIMIT_NOFILE (``prlimit``) and opens more connections than it can hold.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.load import read_response
from tests.support import (
    Server,
    cpu_seconds,
    get,
    open_fds,
    rss_bytes,
    running,
    status_of,
    wait_for,
)

INDEX = b"<!DOCTYPE html><title>home</title>hello\n"
# Above the open-file cache's size limit, so every answer opens the file and sends it
# with sendfile: the path that needs a free descriptor, and the one a slow reader holds.
MEDIUM = os.urandom(256 * 1024)


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "sub" / "medium.bin").write_bytes(MEDIUM)
    (root / "big.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    return root


class KeepAlive:
    """One persistent connection that sends a GET at a time and checks the answer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = bytearray()

    def get(self, path: str) -> tuple[int, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        status, body, closes = read_response(self.sock, self.buffer)
        assert not closes, f"the server closed the keep-alive connection after {path}"
        return status, body

    def close(self) -> None:
        self.sock.close()


def _paused_worker_pids(error_log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"\[(\d+)\] accept failed .*pausing accepts",
                                           error_log)]


# -- slow clients ---------------------------------------------------------------------
SLOW_CONNECTIONS = 300
SLOW_RATE = 100  # new slow connections a second: all 300 are open after 3 s
# The deadlines under test, short so that they end the attack well within its length.
SLOW_TIMEOUTS = {"header": 4, "send": 4, "keepalive": 15}
# A normal request that took this long waited for a slow client (the earliest a slow
# connection's deadline frees anything is 4 s), not for a loaded 2-core machine.
# How fast the normal client is served under attack is the bench's to measure.
BLOCKED_SECONDS = min(SLOW_TIMEOUTS.values()) / 2


@dataclass
class Watch:
    """What the normal client and the /proc sampler saw during an attack."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # (seconds since the attack began, descriptors the workers hold above their idle
    # count, largest worker RSS in bytes, the server port's sockets in the kernel)
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[tuple[float, int, int, int]]:
        return [sample for sample in self.samples if start <= sample[0] <= end]


def kernel_sockets(port: int) -> int:
    """Connections on the server's side of ``port`` the kernel still holds, whether or
    not a process has them open (an orphan keeps its unsent data), from /proc/net."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split(maxsplit=4)
                # Not LISTEN (0A) nor TIME_WAIT (06), which holds no data.
                if fields[3] not in ("0A", "06") and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def time_normal_client(server: Server, stop: threading.Event, seen: Watch) -> None:
    """Fetch /index.html on a new connection every 50 ms, timing each."""
    for _ in range(2000):  # bounded: the attacks last seconds, not minutes
        if stop.is_set():
            return
        started = time.monotonic()
        try:
            response = get(server.port, "/index.html")
        except OSError as exc:
            seen.failures.append(f"{type(exc).__name__}: {exc}")
        else:
            seen.latencies.append(time.monotonic() - started)
            if status_of(response) != 200 or not response.endswith(INDEX):
                seen.failures.append(f"unexpected answer: {response[:80]!r}")
        stop.wait(0.05)


def sample_proc(server: Server, stop: threading.Event, seen: Watch) -> None:
    """Every 0.2 s: the workers' descriptors and RSS, the port's kernel sockets."""
    workers = server.workers()
    idle = sum(open_fds(pid) for pid in workers)
    began = time.monotonic()
    for _ in range(500):
        try:
            extra = sum(open_fds(pid) for pid in workers) - idle
            rss = max(rss_bytes(pid) for pid in workers)
        except OSError as exc:
            seen.failures.append(f"a worker went away: {exc}")
            return
        seen.samples.append((time.monotonic() - began, extra, rss, kernel_sockets(server.port)))
        if stop.wait(0.2):
            return


def slowhttptest(server: Server, mode: list[str], path: str, seconds: int, report: Path,
                 *, ends_early: bool) -> tuple[list[dict[str, int]], Watch]:
    """Run one slowhttptest attack with the normal client alongside, and check both.

    Checks that the service was available throughout, that the normal client was
    never held up behind a slow client, that no worker died, and with ``ends_early``
    that the server closed every slow connection before the attack's ``seconds`` were
    up. Returns
    slowhttptest's per-second statistics and what the normal client saw.
    """
    workers = server.workers()
    seen = Watch()
    stop = threading.Event()
    watchers = [threading.Thread(target=target, args=(server, stop, seen))
                for target in (time_normal_client, sample_proc)]
    command = [
        "slowhttptest", *mode, "-c", str(SLOW_CONNECTIONS), "-r", str(SLOW_RATE),
        "-l", str(seconds), "-p", "1", "-u", server.url(path),
        "-g", "-o", str(report), "-v", "1",
    ]
    for watcher in watchers:
        watcher.start()
    try:
        done = subprocess.run(command, capture_output=True, timeout=seconds + 30, check=False)
    finally:
        stop.set()
        for watcher in watchers:
            watcher.join(timeout=30)
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output[-2000:]
    with open(f"{report}.csv", newline="") as table:
        rows = [{name: int(value) for name, value in row.items()}
                for row in csv.DictReader(table)]
    assert rows, f"slowhttptest wrote no statistics: {output[-2000:]}"
    assert_always_available(rows, seen)
    if ends_early:
        # slowhttptest stops when it has no open connection left.
        assert "No open connections left" in output, output[-2000:]
        assert rows[-1]["Seconds"] < seconds
    assert server.workers() == workers, "a worker died during the attack"
    return rows, seen


def assert_always_available(rows: list[dict[str, int]], seen: Watch) -> None:
    # slowhttptest probes with a normal request every second; a probe unanswered
    # within -p (1 s) turns "Service Available" from the connection count to 0.
    down = [row["Seconds"] for row in rows if row["Service Available"] == 0]
    assert not down, f"slowhttptest found the service unavailable at seconds {down}"
    seconds = rows[-1]["Seconds"] + 1
    assert len(rows) >= seconds * 0.7, f"statistics for only {len(rows)} of {seconds} seconds"
    assert not seen.failures, seen.failures[:5]
    assert len(seen.latencies) >= 20, f"the normal client made {len(seen.latencies)} requests"
    blocked = sorted(latency for latency in seen.latencies if latency >= BLOCKED_SECONDS)
    assert not blocked, (
        f"{len(blocked)} of {len(seen.latencies)} normal requests waited "
        f">= {BLOCKED_SECONDS}s, as if behind a slow client: {blocked}"
    )


def logged(server: Server, text: str) -> int:
    """How many access-log lines hold ``text`` (the log is flushed about once a second)."""
    return server.access_log.count(text)


@pytest.fixture
def slow_server(tmp_path: Path, docroot: Path):  # type: ignore[no-untyped-def]
    settings = {"docroot": str(docroot), "workers": 2, "log_level": "info",
                "timeouts": SLOW_TIMEOUTS}
    with running(tmp_path, settings) as server:
        yield server


def test_slowloris_is_cut_off_by_the_header_deadline(slow_server: Server,
                                                    tmp_path: Path) -> None:
    # Headers trickled: an X-…: … field every second, never the final empty line.
    # timeouts.header (4 s) ends each with a 408, long before the attack's 15 s.
    _, seen = slowhttptest(slow_server, ["-H", "-i", "1", "-x", "24"], "/", 15,
                           tmp_path / "slowloris", ends_early=True)
    held = max(sample[1] for sample in seen.samples)
    assert held >= SLOW_CONNECTIONS * 0.8, f"only {held} slow connections were ever open"
    wait_for(lambda: logged(slow_server, '"GET / HTTP/1.1" 408 ') == SLOW_CONNECTIONS,
             timeout=5, what="a 408 logged for each slow head")


def test_slow_body_is_answered_without_waiting_for_it(slow_server: Server,
                                                     tmp_path: Path) -> None:
    # POSTs announcing 8 KiB of body, sent a few bytes a second. The server never
    # reads a request body: each POST is answered (405) and closed as soon as its head
    # is in, so no connection waits on the trickle.
    slowhttptest(slow_server, ["-B", "-i", "1", "-s", "8192"], "/", 10,
                 tmp_path / "slowbody", ends_early=True)
    wait_for(lambda: logged(slow_server, '"POST / HTTP/1.1" 405 ') == SLOW_CONNECTIONS,
             timeout=5, what="a 405 logged for each slow POST")


def test_slow_reader_is_bounded_by_the_send_deadline_and_costs_no_memory(
    slow_server: Server, tmp_path: Path
) -> None:
    rss_before = max(rss_bytes(pid) for pid in slow_server.workers())
    # 16 MiB downloads read 32 bytes a second through a receive window of 1-512 bytes.
    # slowhttptest only notices the server's reset when it next reads, and keeps
    # counting its sockets as connected to the end.
    _, seen = slowhttptest(
        slow_server, ["-X", "-k", "1", "-n", "1", "-w", "1", "-y", "512", "-z", "32"],
        "/big.bin", 12, tmp_path / "slowread", ends_early=False,
    )
    # Each reader held a socket and the file's descriptor (sendfile reads from it)...
    held = max(sample[1] for sample in seen.samples)
    assert held >= SLOW_CONNECTIONS, f"only {held} descriptors were ever held"
    # ... and nothing in memory: buffering the files would take gigabytes.
    grown = max(sample[2] for sample in seen.samples) - rss_before
    assert grown < 16 * 1024 * 1024, f"a worker grew by {grown} bytes"
    # timeouts.send (4 s without progress) dropped them all by the attack's end, and
    # with a reset: no orphan socket keeps megabytes of queued response in the kernel.
    late = seen.between(9.5, 11.5)
    assert late, "no samples late in the attack"
    assert max(sample[1] for sample in late) < 10, f"descriptors still held: {late}"
    assert max(sample[3] for sample in late) < 10, f"sockets left in the kernel: {late}"


# -- descriptor exhaustion -------------------------------------------------------------
NOFILE = 48  # per process: about 25 connections per worker after its own descriptors
FLOOD = 150  # more than two such workers hold, and far below the listen backlog (1024)
KEEPERS = 6


def test_descriptor_exhaustion_backs_off_serves_existing_connections_and_recovers(
    tmp_path: Path, docroot: Path
) -> None:
    settings = {
        "docroot": str(docroot), "workers": 2, "log_level": "info",
        # Long enough that the flood's silent connections outlive the test.
        "timeouts": {"header": 60, "keepalive": 60},
    }
    with running(tmp_path, settings,
                 command_prefix=["prlimit", f"--nofile={NOFILE}", "--"]) as server:
        workers = server.workers()
        baseline = {pid: open_fds(pid) for pid in workers}
        keepers = [KeepAlive(server.port) for _ in range(KEEPERS)]
        flood: list[socket.socket] = []
        try:
            for keeper in keepers:
                assert keeper.get("/sub/medium.bin") == (200, MEDIUM)
            for _ in range(FLOOD):
                # Completes in the kernel's backlog whether or not a worker accepts it.
                flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            wait_for(lambda: set(_paused_worker_pids(server.error_log)) == set(workers),
                     timeout=15, what="both workers to hit the descriptor limit and pause")
            assert "Too many open files" in server.error_log
            assert server.workers() == workers, "a worker died at the descriptor limit"

            # Backing off: a worker that retried accept() at once would burn a whole CPU.
            before = {pid: cpu_seconds(pid) for pid in workers}
            started = time.monotonic()
            time.sleep(2.0)  # deliberately let time pass: CPU use shows only over a window
            elapsed = time.monotonic() - started
            for pid in workers:
                used = cpu_seconds(pid) - before[pid]
                assert used < 0.25 * elapsed, f"worker {pid} used {used:.2f}s CPU in {elapsed:.1f}s"

            # Connections already open keep working, including a file that must be
            # opened (a subdirectory walk and a sendfile body) while the table is full.
            for _ in range(2):
                for keeper in keepers:
                    assert keeper.get("/sub/medium.bin") == (200, MEDIUM)
                    assert keeper.get("/index.html") == (200, INDEX)
        finally:
            for sock in flood:
                sock.close()

        # Recovery: the backlog's dead connections are drained and new ones served.
        wait_for(lambda: status_of(get(server.port, "/index.html")) == 200, timeout=15,
                 what="a new connection to be served after the flood")
        for _ in range(20):
            response = get(server.port, "/sub/medium.bin")
            assert status_of(response) == 200
            assert response.endswith(MEDIUM)
        for keeper in keepers:
            assert keeper.get("/index.html") == (200, INDEX)
            keeper.close()
        assert server.workers() == workers, "a worker died during the exhaustion"
        wait_for(lambda: {pid: open_fds(pid) for pid in workers} == baseline, timeout=10,
                 what=f"workers' descriptors back to {baseline}")
        # One warning per worker, not one per failed accept (two a second).
        paused = _paused_worker_pids(server.error_log)
        assert sorted(paused) == sorted(workers), paused
