"""forkserver-only measurements: the access log's cost and 10,000 idle connections.

Owns two experiments that compare forkserver with itself, not with other servers:

- access log: a second forkserver that logs every request to a file takes turns
  with one that does not, at 1 KiB keep-alive; the drop in req/s is reported, and
  the log is checked to hold a whole line for every request wrk completed;
- idle connections: a forkserver with a long keep-alive timeout gets IDLE_CONNECTIONS
  connections that each made one request and then stay open; what that costs the
  workers in memory (PSS delta per connection) and how fast fresh requests are
  answered meanwhile are reported.

Starts and stops its own servers; knows nothing of the report's layout.
"""

from __future__ import annotations

import functools
import resource
import selectors
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.docroot import SMALL_FILE
from bench.load import LoadCase, WrkResult, run_wrk
from bench.processes import process_tree, pss_bytes
from bench.servers import (
    FORKSERVER,
    LOOPBACK,
    RunningServer,
    StartContext,
    start_forkserver,
    start_server,
)

# The drop the access log causes (several percent) is smaller than the spread between
# rounds: each round's connections land on the workers differently. Many short
# rounds, in turns, and their medians give a steadier figure than a few long ones.
ACCESS_LOG_ROUNDS = 10
ACCESS_LOG_ROUND_SECONDS = 1
IDLE_CONNECTIONS = 10_000
# Room for the benchmark's own sockets, pipes and files beyond the idle connections.
DESCRIPTOR_HEADROOM = 1_000
IDLE_KEEPALIVE_SECONDS = 600  # the server must not close them while they are measured
IDLE_OPEN_BATCH = 500  # connections opened (and answered) per step
IDLE_STEP_DEADLINE_SECONDS = 30.0
IDLE_PROBES = 50  # fresh connections timed while the idle ones are open
IDLE_SETTLE_SECONDS = 0.5  # lets the workers take in the last batch before measuring
PROBE_TIMEOUT_SECONDS = 5.0
RECEIVE_BYTES = 64 * 1024


class ExtraFailure(RuntimeError):
    """An experiment could not produce numbers; the message says why."""


@dataclass(frozen=True)
class AccessLogResult:
    plain_rounds: list[float]  # req/s per round, access log off
    logged_rounds: list[float]  # req/s per round, access log to a file
    requests: int  # completed by wrk against the logging server, all rounds
    log_lines: int  # whole lines in its access log afterwards

    @property
    def plain_requests_per_second(self) -> float:
        return statistics.median(self.plain_rounds)

    @property
    def logged_requests_per_second(self) -> float:
        return statistics.median(self.logged_rounds)

    @property
    def drop_percent(self) -> float:
        return (1 - self.logged_requests_per_second / self.plain_requests_per_second) * 100


@dataclass(frozen=True)
class IdleResult:
    connections: int
    worker_pss_before: int  # bytes, workers only, after a warm-up
    worker_pss_after: int  # bytes, with every idle connection open
    probe_p50_seconds: float
    probe_max_seconds: float

    @property
    def bytes_per_connection(self) -> float:
        return (self.worker_pss_after - self.worker_pss_before) / self.connections


def request_bytes(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode()


def workers_pss(server: RunningServer) -> int:
    return sum(pss_bytes(pid) or 0 for pid in process_tree(server.pid) if pid != server.pid)


def measure_access_log(context: StartContext, wrk: str, case: LoadCase) -> AccessLogResult:
    """The same case against two forkservers, access log off and on, in turns."""
    log_path = context.workdir / "logging" / "access.log"
    plain_context = StartContext(context.workdir / "plain", context.docroot, context.workers,
                                 context.programs, context.repo_root, context.probe_path)
    logged_context = StartContext(context.workdir / "logging", context.docroot,
                                  context.workers, context.programs, context.repo_root,
                                  context.probe_path)
    servers: list[RunningServer] = []
    try:
        servers.append(start_server(FORKSERVER, plain_context))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        servers.append(start_server(FORKSERVER, logged_context,
                                    functools.partial(start_forkserver, access_log=log_path)))
        plain, logged = servers
        baseline = log_lines(log_path)  # the readiness probe's requests
        rates: dict[str, list[float]] = {"plain": [], "logged": []}
        requests = 0
        for _ in range(ACCESS_LOG_ROUNDS):
            for label, server in (("plain", plain), ("logged", logged)):
                outcome = run_wrk(wrk, server.url("/" + case.file_name), case,
                                  ACCESS_LOG_ROUND_SECONDS)
                if not isinstance(outcome, WrkResult):
                    raise ExtraFailure(f"access-log experiment, {label}: {outcome.reason}")
                rates[label].append(outcome.requests_per_second)
                if label == "logged":
                    requests += outcome.requests
    finally:
        for server in servers:
            server.stop()  # a graceful stop flushes the access log
    return AccessLogResult(rates["plain"], rates["logged"], requests,
                           log_lines(log_path) - baseline)


def log_lines(path: Path) -> int:
    """Whole lines in ``path`` (a torn last line would not count)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def raise_descriptor_limit(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE; servers started later inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ExtraFailure(f"the descriptor limit is {hard}; {needed} are needed "
                           "(raise the hard limit, e.g. ulimit -Hn)")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def measure_idle_connections(context: StartContext) -> IdleResult:
    """Memory per idle keep-alive connection and latency of fresh requests meanwhile."""
    raise_descriptor_limit(IDLE_CONNECTIONS + DESCRIPTOR_HEADROOM)
    idle_context = StartContext(context.workdir / "idle", context.docroot, context.workers,
                                context.programs, context.repo_root, context.probe_path)
    extra = f"timeouts:\n  keepalive: {IDLE_KEEPALIVE_SECONDS}\n"
    server = start_server(FORKSERVER, idle_context,
                          functools.partial(start_forkserver, extra_yaml=extra))
    idle: list[socket.socket] = []
    try:
        request = request_bytes("/" + SMALL_FILE)
        response_size = len(fetch_once(server.port, request))
        for _ in range(IDLE_PROBES):  # warm up: caches filled, arenas grown
            fetch_once(server.port, request)
        time.sleep(IDLE_SETTLE_SECONDS)
        before = workers_pss(server)
        while len(idle) < IDLE_CONNECTIONS:
            batch = open_answered(server.port, request, response_size,
                                  min(IDLE_OPEN_BATCH, IDLE_CONNECTIONS - len(idle)))
            idle.extend(batch)
        time.sleep(IDLE_SETTLE_SECONDS)
        after = workers_pss(server)
        timings = []
        for _ in range(IDLE_PROBES):
            started = time.monotonic()
            fetch_once(server.port, request)
            timings.append(time.monotonic() - started)
        still_open = sum(1 for sock in idle if is_open(sock))
        if still_open != len(idle):
            raise ExtraFailure(f"the server closed {len(idle) - still_open} idle connections")
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    return IdleResult(len(idle), before, after, statistics.median(timings), max(timings))


def fetch_once(port: int, request: bytes) -> bytes:
    """One request on a fresh connection; the whole response (Connection: close)."""
    with socket.create_connection((LOOPBACK, port), timeout=PROBE_TIMEOUT_SECONDS) as sock:
        sock.sendall(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        chunks = []
        while chunk := sock.recv(RECEIVE_BYTES):
            chunks.append(chunk)
    response = b"".join(chunks)
    if not response.startswith(b"HTTP/1.1 200 "):
        raise ExtraFailure(f"unexpected answer: {response[:80]!r}")
    # The keep-alive answer is the same minus the "Connection: close" line.
    return response.replace(b"Connection: close\r\n", b"")


def open_answered(port: int, request: bytes, response_size: int, count: int
                  ) -> list[socket.socket]:
    """``count`` keep-alive connections that each got one whole response."""
    sockets = []
    with selectors.DefaultSelector() as selector:
        for _ in range(count):
            sock = socket.create_connection((LOOPBACK, port), timeout=PROBE_TIMEOUT_SECONDS)
            sock.setblocking(False)
            sock.send(request)
            sockets.append(sock)
            selector.register(sock, selectors.EVENT_READ, [0])
        deadline = time.monotonic() + IDLE_STEP_DEADLINE_SECONDS
        waiting = count
        while waiting:
            if time.monotonic() > deadline:
                raise ExtraFailure(f"{waiting} of {count} idle connections got no answer "
                                   f"within {IDLE_STEP_DEADLINE_SECONDS:.0f} s")
            for key, _ in selector.select(timeout=1.0):
                received = key.data
                data = key.fileobj.recv(RECEIVE_BYTES)  # type: ignore[union-attr]
                if not data:
                    raise ExtraFailure("an idle connection was closed before its answer")
                received[0] += len(data)
                if received[0] >= response_size:
                    selector.unregister(key.fileobj)
                    waiting -= 1
    return sockets


def is_open(sock: socket.socket) -> bool:
    """True if the peer has not closed it (no EOF, no error waiting)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""  # b"": the server closed it
    except BlockingIOError:  # nothing to read: still open and idle
        return True
    except OSError:
        return False
