"""Hostile clients against the real server: slow clients and a full descriptor table.

Slow clients come from slowhttptest (slowloris, slow body, slow read), hundreds at a
time against two workers, while a normal client is timed alongside; the deadlines in
``timeouts`` must be what ends them. Descriptor exhaustion starts the server under a
small RLIMIT_NOFILE (``prlimit``) and opens more connections than it can hold.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from tests.load import read_response
from tests.support import (
    cpu_seconds,
    get,
    open_fds,
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
            time.sleep(2.0)
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
