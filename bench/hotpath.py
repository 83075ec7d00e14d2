"""CPU cost of one request through a real worker, in process: ``python -m bench.hotpath``.

Owns the in-process harness only: a real ``Worker`` (real parser, site, cache, access
log) answers real requests on a real loopback TCP connection, driven one request at
a time, and the CPU time per request is reported. Wall-clock load tests (``make
bench``) swing with whatever else the machine runs; CPU time of one process does
not swing nearly as much, so this is the instrument for judging a hot-path change.
It must not be used for the published comparison with other servers.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import socket
import statistics
import tempfile
import time
from pathlib import Path

from forkserver.config import load_config
from forkserver.logs import AccessLog, ErrorLog, LogFile
from forkserver.scoreboard import Scoreboard
from forkserver.worker import Connection, Worker, WorkerSpec

REQUESTS_PER_ROUND = 20_000
ROUNDS = 5
SMALL_BYTES = 1024
RECEIVE_BYTES = 256 * 1024


def build_worker(docroot: Path, access_log: str | None) -> Worker:
    overrides: dict[str, object] = {"docroot": str(docroot), "host": "127.0.0.1", "port": 0}
    config = load_config(None, overrides, cwd=str(docroot))
    errors = LogFile(os.devnull)
    scoreboard = Scoreboard(4)
    slot = scoreboard.claim(1)
    spec = WorkerSpec(
        1, 1, slot, config, [], scoreboard, os.getppid(), ErrorLog(errors),
        AccessLog(LogFile(access_log) if access_log else None), 0,
    )
    return Worker(spec)


def connected_pair(worker: Worker) -> tuple[socket.socket, Connection]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server_side, address = listener.accept()
    listener.close()
    server_side.setblocking(False)
    server_side.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connection = Connection(server_side, address[0], time.monotonic() + 60)
    worker.connections[connection.fd] = connection
    worker.epoll.register(connection.fd, 1)
    return client, connection


def run_round(worker: Worker, request: bytes, expected: int, count: int) -> float:
    """CPU microseconds per request (both ends of the connection are this process)."""
    client, connection = connected_pair(worker)
    on_readable = worker.reader.on_readable
    try:
        started = time.process_time()
        for _ in range(count):
            client.send(request)
            on_readable(connection)
            received = 0
            while received < expected:
                received += len(client.recv(RECEIVE_BYTES))
        return (time.process_time() - started) / count * 1e6
    finally:
        worker.responder.close(connection)
        client.close()


def run_close_round(worker: Worker, request: bytes, count: int) -> float:
    """CPU microseconds per request when every request has a connection of its own."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    listener.setblocking(False)
    acceptor = worker.acceptor
    acceptor.listeners[listener.fileno()] = listener
    acceptor.families[listener] = socket.AF_INET
    accept_batch = acceptor.accept_batch
    on_readable = worker.reader.on_readable
    close = worker.responder.close
    address = listener.getsockname()
    try:
        started = time.process_time()
        for _ in range(count):
            client = socket.create_connection(address)
            accept_batch(listener)
            client.send(request)
            connection = worker.connections[max(worker.connections)]
            on_readable(connection)
            while client.recv(RECEIVE_BYTES):
                pass
            client.close()
            close(connection)  # had it lingered, the client's close ends it
        return (time.process_time() - started) / count * 1e6
    finally:
        del acceptor.listeners[listener.fileno()]
        listener.close()


def response_length(worker: Worker, request: bytes) -> int:
    """Bytes of one whole response, read until the head's Content-Length is covered."""
    client, connection = connected_pair(worker)
    try:
        client.send(request)
        worker.reader.on_readable(connection)
        data = b""
        while b"\r\n\r\n" not in data:
            data += client.recv(RECEIVE_BYTES)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += client.recv(RECEIVE_BYTES)
        return len(head) + 4 + length
    finally:
        worker.responder.close(connection)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--access-log", action="store_true", help="log each request to a file")
    parser.add_argument("--size", type=int, default=SMALL_BYTES, help="file size in bytes")
    parser.add_argument("--close", action="store_true", help="Connection: close, one per request")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--requests", type=int, default=REQUESTS_PER_ROUND)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forkserver-hotpath-") as scratch:
        docroot = Path(scratch, "root")
        docroot.mkdir()
        Path(docroot, "file.bin").write_bytes(os.urandom(options.size))
        log_path = str(Path(scratch, "access.log")) if options.access_log else None
        worker = build_worker(docroot, log_path)
        request = b"GET /file.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hotpath\r\n\r\n"
        if options.close:
            request = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")

            def one_round() -> float:
                return run_close_round(worker, request, options.requests)
        else:
            expected = response_length(worker, request)

            def one_round() -> float:
                return run_round(worker, request, expected, options.requests)
        if options.profile:
            profiler = cProfile.Profile()
            profiler.runcall(one_round)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return
        costs = [one_round() for _ in range(options.rounds)]
        print(
            f"{options.size} B{' + access log' if options.access_log else ''}"
            f"{', close' if options.close else ''}: "
            f"median {statistics.median(costs):.2f} us CPU per request "
            f"(min {min(costs):.2f}, max {max(costs):.2f}, {options.rounds} rounds "
            f"of {options.requests})"
        )


if __name__ == "__main__":
    main()
