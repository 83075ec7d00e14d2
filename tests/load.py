"""A bounded client load for tests of live operations (reload, stop, scale, …).

Threads of keep-alive clients and new-connection clients fetch known files and
check every byte. A reused keep-alive connection that the server closed while idle
(EOF before any byte of the response) is retried on a new connection, as RFC 9112
§9.3.1 allows for idempotent requests and as every HTTP client does; that is
counted as ``retried``, not as a failure. Anything else — a reset, a timeout, a
wrong status or body, a refused connection — is a failure.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# The expected (status, body) for each path; a callable lets the expectation change
# mid-run (e.g. a docroot switch), accepting either the old or the new content.
Expectation = Callable[[str, int, bytes], bool]


@dataclass
class LoadResult:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    resets: int = 0
    # Resets of a fresh connection before any byte of an answer: the kernel dropped it
    # from a listener's queue when the last copy of the listener was closed.
    unaccepted_resets: int = 0
    retried: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)

    def summary(self) -> str:
        return (f"{self.requests} requests, {len(self.failures)} failures, "
                f"{self.resets} resets ({self.unaccepted_resets} never accepted), "
                f"{self.retried} idle-close retries; "
                f"first failures: {self.failures[:5]}")


class IdleClosed(Exception):
    """The server closed a reused connection before answering: retry elsewhere."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    closes: bool  # the server said Connection: close


def read_message(sock: socket.socket, buffer: bytearray, head_only: bool = False) -> Response:
    """One response, framed by Content-Length (none for HEAD, 204 and 304).

    Raises IdleClosed on EOF before its first byte, ConnectionError on EOF inside it.
    """
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            if not buffer:
                raise IdleClosed
            raise ConnectionError("connection closed inside a response head")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only or status in (204, 304) else int(headers.get("content-length", 0))
    while len(buffer) < length:
        chunk = sock.recv(max(65536, length - len(buffer)))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buffer)} of {length} body bytes")
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    return Response(status, headers, body, headers.get("connection", "").lower() == "close")


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes, bool]:
    """(status, body, server_closes) of one response to a GET; see read_message."""
    response = read_message(sock, buffer)
    return response.status, response.body, response.closes


def run_load(
    port: int,
    paths: list[str],
    expect: Expectation,
    seconds: float = 3.0,
    keepalive_clients: int = 4,
    fresh_clients: int = 2,
    max_requests: int = 20000,
    port_of: Callable[[], int] | None = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """Run the load for ``seconds`` (bounded by ``max_requests``); return the tally.

    The tally is ``result`` when given, so another thread can watch it grow (e.g. wait
    until requests flow before acting)."""
    result = result if result is not None else LoadResult()
    stop_at = time.monotonic() + seconds
    current_port = port_of or (lambda: port)

    def one(sock: socket.socket, buffer: bytearray, path: str) -> bool:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        status, body, closes = read_response(sock, buffer)
        with result.lock:
            result.requests += 1
        if not expect(path, status, body):
            result.fail(f"{path}: unexpected {status} ({len(body)} bytes)")
        return closes

    def client(keep_alive: bool, offset: int) -> None:
        index = offset
        sock: socket.socket | None = None
        buffer = bytearray()
        reused = False
        port_used = 0

        def connect() -> socket.socket:
            nonlocal port_used, reused
            port_used = current_port()
            buffer.clear()
            reused = False
            return socket.create_connection(("127.0.0.1", port_used), timeout=10)

        while time.monotonic() < stop_at and result.requests < max_requests:
            path = paths[index % len(paths)]
            index += 1
            try:
                if sock is None:
                    sock = connect()
                try:
                    closes = one(sock, buffer, path)
                except IdleClosed:
                    if not reused:
                        raise ConnectionError("fresh connection closed unanswered") from None
                    with result.lock:
                        result.retried += 1
                    sock.close()
                    sock = connect()
                    closes = one(sock, buffer, path)
                reused = True
                if closes or not keep_alive:
                    sock.close()
                    sock = None
            except ConnectionResetError as exc:
                with result.lock:
                    result.resets += 1
                    if not reused and not buffer:
                        result.unaccepted_resets += 1
                result.fail(f"{path} on port {port_used}: reset ({exc})")
                _discard(sock)
                sock = None
            except (OSError, ConnectionError, ValueError, IndexError) as exc:
                result.fail(f"{path} on port {port_used}: {type(exc).__name__}: {exc}")
                _discard(sock)
                sock = None
        _discard(sock)

    threads = [threading.Thread(target=client, args=(True, i)) for i in range(keepalive_clients)]
    threads += [threading.Thread(target=client, args=(False, i)) for i in range(fresh_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    return result


def _discard(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()
