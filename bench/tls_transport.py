"""Which TLS transport the worker uses: ``SSLSocket`` against ``SSLObject`` + memory BIOs.

A measurement kept with the code it decided (forkserver/tls/transport.py): a forked
server runs a bare epoll loop with one transport or the other and answers 1 KiB
responses; the client is a blocking ``ssl`` socket in this process. Reported: the
server's CPU per keep-alive request and per new connection (handshake plus one
request), from its own rusage, so the client's cost is not counted.

    .venv/bin/python -m bench.tls_transport [--requests 20000] [--connections 1000]
"""

from __future__ import annotations

import _socket
import argparse
import os
import resource
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Protocol

from forkserver.tls.transport import DONE, WANT_WRITE, HandshakeFailed, TlsStream

BODY = b"x" * 1024
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + BODY
)
REQUEST = b"GET /1k HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Stream(Protocol):
    fd: int

    def handshake(self) -> int: ...
    def recv(self, size: int) -> bytes: ...
    def send(self, data: bytes | memoryview, flags: int = 0) -> int: ...
    def close(self) -> None: ...


class MemoryBioStream:
    """The alternative: an SSLObject over memory BIOs, ciphertext moved by Python."""

    def __init__(self, sock: _socket.socket, context: ssl.SSLContext, buffer: bytearray) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.pending = b""

    def flush(self) -> bool:
        """Send queued ciphertext; True when all of it went."""
        if self.outgoing.pending:
            self.pending += self.outgoing.read()
        if self.pending:
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                return False
            self.pending = self.pending[sent:]
        return not self.pending

    def fill(self) -> bool:
        """Move what the socket holds into the incoming BIO; False at EOF."""
        data = self.sock.recv(65536)  # BlockingIOError propagates: wait for input
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def handshake(self) -> int:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                if not self.flush():
                    return WANT_WRITE
                try:
                    if not self.fill():
                        raise HandshakeFailed("eof") from None
                except BlockingIOError:
                    return 1
                continue
            except ssl.SSLError as exc:
                raise HandshakeFailed(str(exc)) from None
            return DONE if self.flush() else WANT_WRITE

    def recv(self, size: int) -> bytes:
        while True:
            try:
                data = self.tls.read(size)
            except ssl.SSLWantReadError:
                self.flush()
                if not self.fill():
                    return b""
                continue
            except ssl.SSLZeroReturnError:
                return b""
            self.flush()
            return data

    def send(self, data: bytes | memoryview, flags: int = 0) -> int:
        if not self.flush():
            raise BlockingIOError
        written = self.tls.write(data)
        self.flush()
        return written

    def close(self) -> None:
        self.sock.close()


Factory = Callable[[_socket.socket, ssl.SSLContext, bytearray], Stream]
TRANSPORTS: dict[str, Factory] = {"SSLSocket": TlsStream, "SSLObject+MemoryBIO": MemoryBioStream}


def serve(listener: socket.socket, context: ssl.SSLContext, make: Factory, total: int) -> None:
    """The forked server: answer ``total`` requests, then exit."""
    epoll = select.epoll()
    listener.setblocking(False)
    epoll.register(listener.fileno(), select.EPOLLIN)
    streams: dict[int, Stream] = {}
    shaking: set[int] = set()
    buffer = bytearray(256 * 1024)
    served = 0
    while served < total:
        for fd, _ in epoll.poll(1.0):
            if fd == listener.fileno():
                try:
                    raw, _ = listener._accept()  # type: ignore[attr-defined]
                except BlockingIOError:
                    continue
                sock = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, raw)
                sock.setblocking(False)
                stream = make(sock, context, buffer)
                streams[stream.fd] = stream
                shaking.add(stream.fd)
                epoll.register(stream.fd, select.EPOLLIN)
                continue
            stream = streams[fd]
            if fd in shaking:
                try:
                    if stream.handshake() != DONE:
                        continue
                except HandshakeFailed:
                    epoll.unregister(fd)
                    stream.close()
                    del streams[fd]
                    continue
                shaking.discard(fd)
            try:
                data = stream.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                epoll.unregister(fd)
                stream.close()
                del streams[fd]
                continue
            for _ in range(data.count(b"\r\n\r\n")):
                stream.send(RESPONSE)
                served += 1


def client(port: int, cafile: str, requests: int, connections: int) -> None:
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    expected = len(RESPONSE)
    if requests:
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"
        ) as sock:
            for _ in range(requests):
                sock.sendall(REQUEST)
                got = 0
                while got < expected:
                    got += len(sock.recv(65536))
    for _ in range(connections):
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"
        ) as sock:
            sock.sendall(REQUEST)
            got = 0
            while got < expected:
                got += len(sock.recv(65536))


def measure(name: str, cert: str, key: str, requests: int, connections: int) -> float:
    """Server CPU seconds per request (requests) or per connection (connections)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    listener = socket.create_server(("127.0.0.1", 0))
    # As the worker's listeners: accepted sockets inherit it. Without it a transport that
    # writes each TLS record with its own send waits out Nagle and delayed ACKs.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = listener.getsockname()[1]
    total = requests or connections
    pid = os.fork()
    if pid == 0:
        try:
            serve(listener, context, TRANSPORTS[name], total)
        finally:
            os._exit(0)
    listener.close()
    client(port, cert, requests, connections)
    _, _, usage = os.wait4(pid, 0)
    return (usage.ru_utime + usage.ru_stime) / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost"],
            check=True, capture_output=True,
        )
        print(f"server CPU, best of {args.rounds} (TLS 1.3, ECDSA P-256, 1 KiB responses)")
        for name in TRANSPORTS:
            started = time.monotonic()
            keepalive = min(measure(name, cert, key, args.requests, 0) for _ in range(args.rounds))
            fresh = min(measure(name, cert, key, 0, args.connections) for _ in range(args.rounds))
            print(
                f"  {name:20} {keepalive * 1e6:7.1f} us/keep-alive request   "
                f"{fresh * 1e6:7.1f} us/new connection   ({time.monotonic() - started:.0f} s)"
            )
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"  (client CPU {usage.ru_utime + usage.ru_stime:.1f} s, not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
