"""The TLS handshake phase of a connection accepted on a TLS listener.

Owns turning an accepted socket into a TLS stream (forkserver/tls/transport.py)
with the generation's contexts (built by the master before fork), driving its
handshake from the loop (waiting for input or output as TLS asks), and the
handshake counters (ok, failed) the metrics show. A failed or garbage handshake
closes that connection only, counted, never logged per connection (SPEC §6). Must
not read requests (reading.py) or send answers (connection.py): once the handshake
is done the connection is READING like any other, with a TLS stream as its socket.
"""

from __future__ import annotations

import select
from collections.abc import Callable

from forkserver.tls.generation import GenerationTls
from forkserver.tls.transport import DONE, FILE_CHUNK, WANT_WRITE, HandshakeFailed, TlsStream
from forkserver.worker.connection import HANDSHAKING, READING, Connection


class TlsPhase:
    def __init__(
        self, tls: GenerationTls, epoll: select.epoll, close: Callable[[Connection], None],
        header_seconds: float, clock: Callable[[], float],
    ) -> None:
        self.contexts = tls.contexts
        self.secure_fds = tls.secure_fds
        self.ktls = tls.ktls  # the master's detection: may the kernel encrypt at all?
        self.epoll = epoll
        self.close = close
        self.header_seconds = header_seconds
        self.clock = clock
        # One scratch buffer for file chunks, shared by every connection of the worker
        # (a chunk is read from the file again before each retry: see TlsStream).
        self.buffer = bytearray(FILE_CHUNK)
        self.writing: set[int] = set()  # handshakes waiting for EPOLLOUT
        self.ok = 0
        self.failed = 0

    def admit(self, connection: Connection) -> bool:
        """Wrap a connection accepted on a TLS listener; False (closed) if that fails."""
        try:
            stream = TlsStream(connection.sock, self.contexts.base, self.buffer)
        except (OSError, ValueError):
            self.failed += 1
            connection.sock.close()
            return False
        connection.sock = stream  # type: ignore[assignment]
        connection.tls = stream
        connection.phase = HANDSHAKING
        return True

    def on_handshake(self, connection: Connection) -> None:
        """One step of the handshake; it must be done by the deadline set at accept
        (timeouts.header), and the first request head then has its own."""
        stream = connection.tls
        assert stream is not None
        fd = connection.fd
        try:
            state = stream.handshake()
        except HandshakeFailed:
            self.failed += 1
            self.writing.discard(fd)
            self.close(connection)
            return
        if state == WANT_WRITE:
            if fd not in self.writing:
                self.writing.add(fd)
                self.epoll.modify(fd, select.EPOLLOUT)
            return
        if fd in self.writing:
            self.writing.discard(fd)
            self.epoll.modify(fd, select.EPOLLIN)
        if state == DONE:
            self.ok += 1
            # kTLS: the kernel's word on this socket decides how file bodies go out
            # (sendfile only when it really encrypts; connection.py send_segment).
            stream.check_offload(self.ktls)
            connection.phase = READING
            connection.deadline = self.clock() + self.header_seconds

    def timed_out(self, connection: Connection) -> None:
        """The deadline passed mid-handshake (a ClientHello that never came, a stall)."""
        self.failed += 1
        self.writing.discard(connection.fd)
