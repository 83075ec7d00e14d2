"""CPU cost of one request through a real worker, in process: ``python -m bench.hotpath``.

Owns the in-process harness only: a real ``Worker`` (real parser, site, cache, access
log) answers real requests on a real loopback TCP connection, driven one request at
a time, and the CPU time per request is reported. Wall-clock load tests (``make
bench``) swing with whatever else the machine runs; CPU time of one process does
not swing nearly as much, so this is the instrument for judging a hot-path change.
It must not be used for the published comparison with other servers.

Variants (``--variants plain,rules,rules-header,auth`` or ``all``) compare what sites
and rules cost on a cache hit (issue 17), one worker each, their rounds taken in turns
so a busy machine slows them alike: ``rules`` has 50 rules of which none matches the
file (48 header rules elsewhere, ``*.html`` headers, a redirect), ``rules-header`` the
same 50 with the header rule on the file's glob, ``auth`` Basic auth on every path and
the right ``Authorization`` on every request (one bcrypt check in the warm-up, then the
worker's memory), to be compared with ``plain-authz``: no rules, the same request (as
bench/sites.py's auth-keepalive compares). ``--instructions`` runs each variant under
``valgrind --tool=callgrind`` twice (N and 2N requests) and reports the difference per
request: user-space instructions of both ends of the connection, steady even on a
loaded machine.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import os
import pstats
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import bcrypt

from forkserver.config import load_config
from forkserver.logs import AccessLog, ErrorLog, LogFile
from forkserver.scoreboard import Scoreboard
from forkserver.worker import Connection, Worker, WorkerSpec

REQUESTS_PER_ROUND = 20_000
ROUNDS = 5
SMALL_BYTES = 1024
RECEIVE_BYTES = 256 * 1024
VARIANTS = ("plain", "rules", "rules-header", "plain-authz", "auth")
USER, PASSWORD = "hotpath", "right-password"
INSTRUCTION_REQUESTS = 2000  # per callgrind run (about 50x slower than native)


def variant_yaml(variant: str, scratch: Path) -> str:
    """The configuration a variant adds to the plain one (YAML)."""
    if variant in ("rules", "rules-header"):
        # As bench/sites.py's rules-50: 48 header rules that never match, one header
        # rule (on the file here for rules-header, on *.html otherwise) and a redirect.
        lines = ["rules:"]
        lines += [f"  - match: '/never{n}/**'\n    headers: {{X-Never-{n}: '1'}}"
                  for n in range(48)]
        glob = "*.bin" if variant == "rules-header" else "*.html"
        lines.append(f"  - match: '{glob}'\n    headers: {{X-Matched: '1'}}")
        lines.append("  - match: '/old/**'\n    redirect: '/new/{rest}{query}'")
        return "\n".join(lines) + "\n"
    if variant == "auth":
        htpasswd = scratch / "hotpath.htpasswd"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        htpasswd.write_text(f"{USER}:{hashed}\n")
        return (f"rules:\n  - match: '/**'\n"
                f"    auth: {{realm: Hotpath, htpasswd: '{htpasswd}'}}\n")
    return ""


def variant_request(variant: str, close: bool) -> bytes:
    fields = "Host: 127.0.0.1\r\nUser-Agent: hotpath\r\n"
    if variant in ("auth", "plain-authz"):
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        fields += f"Authorization: Basic {token}\r\n"
    if close:
        fields += "Connection: close\r\n"
    return f"GET /file.bin HTTP/1.1\r\n{fields}\r\n".encode()


def build_worker(docroot: Path, access_log: str | None, extra_yaml: str = "") -> Worker:
    overrides: dict[str, object] = {"docroot": str(docroot), "host": "127.0.0.1", "port": 0}
    path = None
    if extra_yaml:
        config_file = docroot.parent / f"hotpath-{abs(hash(extra_yaml))}.yaml"
        config_file.write_text(extra_yaml)
        path = str(config_file)
    config = load_config(path, overrides, cwd=str(docroot))
    errors = LogFile(os.devnull)
    scoreboard = Scoreboard(4)
    slot = scoreboard.claim(1)
    spec = WorkerSpec(
        1, 1, slot, config, [], scoreboard, os.getppid(), ErrorLog(errors),
        AccessLog(LogFile(access_log) if access_log else None), 0,
    )
    worker = Worker(spec)
    if worker.routing is not None:
        # The warm-up's one bcrypt check runs inline (the loop that would deliver the
        # pool's answer is not running here); every later request hits the memory.
        router = worker.routing.router
        submit, router.submit = router.submit, None
        probe = variant_request("auth", False)
        response_length(worker, probe)
        router.submit = submit
    return worker


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


def measure(options: argparse.Namespace, scratch: Path, variants: list[str]) -> None:
    """CPU per request of each variant, their rounds in turns."""
    docroot = Path(scratch, "root")
    docroot.mkdir()
    Path(docroot, "file.bin").write_bytes(os.urandom(options.size))
    log_path = str(Path(scratch, "access.log")) if options.access_log else None
    rounds: list[Callable[[], float]] = []
    for variant in variants:
        worker = build_worker(docroot, log_path, variant_yaml(variant, Path(scratch)))
        request = variant_request(variant, options.close)
        if options.close:
            rounds.append(partial(run_close_round, worker, request, options.requests))
        else:
            expected = response_length(worker, request)
            rounds.append(partial(run_round, worker, request, expected, options.requests))
    if options.profile:
        for variant, one_round in zip(variants, rounds, strict=True):
            print(f"--- {variant}")
            profiler = cProfile.Profile()
            profiler.runcall(one_round)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    if options.once:  # one round each, nothing printed (the callgrind runs)
        for one_round in rounds:
            one_round()
        return
    costs: list[list[float]] = [[] for _ in variants]
    for _ in range(options.rounds):
        for index, one_round in enumerate(rounds):
            costs[index].append(one_round())
    base = statistics.median(costs[0])
    for variant, cost in zip(variants, costs, strict=True):
        median = statistics.median(cost)
        against = "" if variant == variants[0] else f", {(median / base - 1) * 100:+.1f}%"
        print(
            f"{variant:>12}: {options.size} B{' + access log' if options.access_log else ''}"
            f"{', close' if options.close else ''}: "
            f"median {median:.2f} us CPU per request "
            f"(min {min(cost):.2f}, max {max(cost):.2f}, {options.rounds} rounds "
            f"of {options.requests}){against}"
        )


def instructions(options: argparse.Namespace, variants: list[str]) -> None:
    """Instructions per request of each variant: callgrind runs of N and 2N requests."""
    counts: list[float] = []
    for variant in variants:
        totals = []
        for requests in (options.requests, 2 * options.requests):
            command = [
                "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                sys.executable, "-m", "bench.hotpath", "--once", "--variants", variant,
                "--requests", str(requests), "--size", str(options.size),
            ]
            if options.close:
                command.append("--close")
            if options.access_log:
                command.append("--access-log")
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            found = re.search(r"Collected : (\d+)", done.stderr)
            if found is None:
                raise SystemExit(f"no instruction count from valgrind:\n{done.stderr}")
            totals.append(int(found.group(1)))
        counts.append((totals[1] - totals[0]) / options.requests)
        print(f"{variant:>12}: {counts[-1]:,.0f} instructions per request"
              f"{'' if len(counts) == 1 else f', {(counts[-1] / counts[0] - 1) * 100:+.1f}%'}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--access-log", action="store_true", help="log each request to a file")
    parser.add_argument("--size", type=int, default=SMALL_BYTES, help="file size in bytes")
    parser.add_argument("--close", action="store_true", help="Connection: close, one per request")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--variants", default="plain",
                        help=f"comma-separated, of {', '.join(VARIANTS)}; or all")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per request under valgrind --tool=callgrind")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    variants = list(VARIANTS) if options.variants == "all" else options.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if options.instructions:
        options.requests = options.requests or INSTRUCTION_REQUESTS
        instructions(options, variants)
        return
    options.requests = options.requests or REQUESTS_PER_ROUND
    with tempfile.TemporaryDirectory(prefix="forkserver-hotpath-") as scratch:
        measure(options, Path(scratch), variants)


if __name__ == "__main__":
    main()
