"""A client connection's state, and the send path that answers on it.

Owns ``Connection`` (buffers, phase, deadline, the response in flight) and
``Responder``: a ``Plan`` turned into a head and sent (send, sendfile, resumed on
EPOLLOUT), the end of a response (access log, keep-alive or close), lingering close
and close, and the worker's request and byte counters. Must not read or parse
requests (reading.py), accept (accepting.py), or decide what a request means (the
static site, status.py).
"""

from __future__ import annotations

import _socket
import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from email.utils import formatdate

from forkserver.config import Config
from forkserver.errors import HttpError
from forkserver.http import HeadScan, Request
from forkserver.http.response import (
    REASONS,
    BodyStream,
    Cancellable,
    FileBody,
    Plan,
    close_body,
    encode_fields,
    file_version,
    keeps_alive,
    status_line,
)
from forkserver.logs import AccessLog, ErrorLog
from forkserver.protect import Admission, SendRate
from forkserver.static import StaticSite
from forkserver.tls.transport import TlsStream
from forkserver.worker.streams import abandon_changed_file, pull_slice, release_bodies

RECV_BYTES = 64 * 1024  # one recv; a request head is far smaller (limits.header_bytes)
SENDFILE_CHUNK = 2 * 1024 * 1024  # per call, so one large download cannot starve the loop
LINGER_SECONDS = 2.0  # how long a closing connection's unread input is drained
# SO_LINGER on with a zero timeout: close() resets the connection and drops what is
# still queued for the client, instead of leaving it to the kernel to deliver.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)

# A connection's phase; the worker's loop dispatches on it (an index into its table
# of handlers, so the numbers matter). CLOSED connections are out of the table.
READING, WRITING, LINGERING, CLOSED = 0, 1, 2, 3
AWAITING_PROXY = 4  # proxy_protocol: the PROXY header has not arrived in full yet
HANDSHAKING = 5  # a TLS listener's connection before its handshake is done (tlsphase.py)
PARKED = 6  # its answer waits for a job off the loop (parking.py, siterouting.py)


class Connection:
    __slots__ = (
        "admission",
        "client",
        "close_after",
        "deadline",
        "fd",
        "file",
        "head_length",
        "head_scan",
        "head_started",
        "inbuf",
        "log_line",
        "log_request",
        "log_status",
        "outbuf",
        "parked",
        "phase",
        "request_started",
        "response_sent",
        "rest",
        "send_rate",
        "served",
        "sock",
        "tls",
    )

    def __init__(self, sock: _socket.socket, client: str, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.inbuf = bytearray()
        self.head_scan = HeadScan()  # how far the unfinished head in inbuf was looked at
        # What is left to send of the head and in-memory body; a memoryview after a
        # partial send, so the rest of a 64 KiB answer is not copied on every send.
        self.outbuf: bytes | memoryview = b""
        self.file: FileBody | None = None
        self.rest: list[bytes | FileBody | BodyStream] | None = None  # after ``file``
        self.parked: Cancellable | None = None  # the job its answer waits for (parking.py)
        self.phase = READING
        self.deadline = deadline
        self.head_started = 0.0  # monotonic time the current head's first byte arrived
        self.close_after = False
        self.request_started = 0.0
        # The response being sent, for the access log once it is done (or aborted).
        self.log_request: Request | None = None
        self.log_line = ""  # the raw request line, when the request did not parse
        self.log_status = 0
        self.head_length = 0
        self.response_sent = 0
        self.served = 0  # responses completed on this connection
        self.admission: Admission | None = None  # worker/guard.py: per-client standing
        self.send_rate: SendRate | None = None  # worker/guard.py: slow-reader tracker
        # TLS (worker/tlsphase.py): the stream that is also ``sock``, else None.
        self.tls: TlsStream | None = None


class Responder:
    """Answers on connections: head, body, sendfile, then keep-alive, linger or close.

    Shares the worker's connection table and epoll set (it moves a connection between
    EPOLLIN and EPOLLOUT and drops it on close). ``draining`` is set by the worker
    when it stops accepting: from then on every answer says Connection: close.
    ``recycle`` is the worker's drain, called once ``max_requests`` is reached.
    """

    def __init__(
        self, config: Config, site: StaticSite, epoll: select.epoll,
        connections: dict[int, Connection], access_log: AccessLog, error_log: ErrorLog,
        max_requests: int, recycle: Callable[[float, str], None],
        clock: Callable[[], float],
    ) -> None:
        self.site = site
        self.epoll = epoll
        self.connections = connections
        self.access_log = access_log
        self.error_log = error_log
        self.max_requests = max_requests  # 0 = never recycle
        self.recycle = recycle
        self.graceful_seconds = config.timeouts.graceful
        self.send_seconds = config.timeouts.send
        self.keepalive_seconds = config.timeouts.keepalive
        self.clock = clock
        self.draining = False
        self.requests = 0
        self.bytes_sent = 0
        # Responses by status class (index status // 100), except 200s: those are the
        # rest of ``requests``, so the common case costs one comparison, not a count.
        self.not_ok = [0] * 6
        self.date_second = -1
        self.date_header = b""
        self.status_lines = {code: status_line(code) for code in REASONS}
        self.release: Callable[[Connection], None] | None = None  # worker/guard.py
        self.forget: Callable[[str], None] = site.forget  # a file changed mid-send

    # -- answering ------------------------------------------------------------------
    def respond_error(self, connection: Connection, error: HttpError) -> None:
        plan = self.site.error_plan(error.status)
        plan.close = plan.close or error.close
        if not connection.request_started:
            connection.request_started = connection.head_started or self.clock()
        line = bytes(connection.inbuf[:1024]).split(b"\r\n", 1)[0].decode("latin-1")
        self.respond(connection, None, plan, line)

    def respond(
        self, connection: Connection, request: Request | None, plan: Plan, line: str = "",
        *, logged: bool = True,
    ) -> None:
        # HTTP's rule (the client's wish, an unread body, the plan), then the worker's
        # own reasons: draining, or this answer reaches max_requests.
        keep_alive = (
            request is not None
            and keeps_alive(request, plan)
            and not self.draining
            and not (self.max_requests and self.requests + 1 >= self.max_requests)
        )
        if not keep_alive:
            ending = b"Connection: close\r\n\r\n"
        elif request is not None and request.minor == 0:
            ending = b"Connection: keep-alive\r\n\r\n"
        else:
            ending = b"\r\n"
        body = plan.body
        data = b"".join((
            self.status_lines.get(plan.status) or status_line(plan.status),
            self.date(),
            plan.encoded or encode_fields(plan.headers),
            ending,
            body,
        ))
        connection.head_length = len(data) - len(body)
        connection.close_after = not keep_alive
        connection.log_request = request
        connection.log_line = line
        connection.log_status = plan.status if logged else 0  # 0: no access-log line
        if request is None:
            connection.inbuf.clear()  # after a framing error the rest is not trustworthy
        if plan.log:
            self.error_log.error(f"{request.path if request else line}: {plan.log}")
        self.requests += 1
        if plan.status != 200:
            self.not_ok[plan.status // 100] += 1
        if plan.file is None and plan.rest is None:
            # Head and body in memory (a cache hit, an error page): usually one send
            # takes it all, so skip the segment machinery of flush_output.
            try:
                sent = connection.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                connection.response_sent = 0
                self.close(connection)
                return
            self.bytes_sent += sent
            connection.response_sent = sent
            if sent == len(data):
                self.response_done(connection)
                return
            connection.outbuf = memoryview(data)[sent:]
        else:
            connection.outbuf = data
            connection.response_sent = 0
        connection.file = plan.file
        connection.rest = plan.rest
        self.flush_output(connection)

    def date(self) -> bytes:
        now = int(time.time())
        if now != self.date_second:
            self.date_second = now
            self.date_header = (
                f"Date: {formatdate(now, usegmt=True)}\r\nServer: {self.site.server}\r\n".encode()
            )
        return self.date_header

    # -- sending --------------------------------------------------------------------
    def flush_output(self, connection: Connection) -> None:
        """Send as much as the socket takes; switch to EPOLLOUT if it is full."""
        while True:
            if not self.send_segment(connection):
                return  # closed
            if connection.outbuf or connection.file is not None or not connection.rest:
                break
            segment = connection.rest.pop(0)
            if isinstance(segment, bytes):
                connection.outbuf = segment
            elif isinstance(segment, FileBody):
                connection.file = segment
            elif not pull_slice(self, connection, segment):
                return  # cut and closed
        if connection.outbuf or connection.file is not None:
            connection.deadline = self.clock() + self.send_seconds
            if connection.phase != WRITING:
                connection.phase = WRITING
                self.epoll.modify(connection.fd, select.EPOLLOUT)
            return
        self.response_done(connection)

    def send_segment(self, connection: Connection) -> bool:
        """Send ``outbuf`` then ``file`` as far as the socket takes. False if closed."""
        sock = connection.sock
        try:
            if connection.outbuf:
                more = connection.file is not None or bool(connection.rest)
                sent = sock.send(connection.outbuf, socket.MSG_MORE if more else 0)
                connection.response_sent += sent
                self.bytes_sent += sent
                connection.outbuf = memoryview(connection.outbuf)[sent:]
            body = connection.file
            while not connection.outbuf and body is not None:
                if body.version is not None and file_version(os.fstat(body.fd)) != body.version:
                    # Written or truncated since the head went out: what is left would
                    # not be the bytes the head describes. A short body and EOF tell
                    # the client; a mix of two versions would not.
                    abandon_changed_file(self, connection)
                    return False
                tls = connection.tls
                if tls is not None and tls.offloaded:
                    tls = None  # kTLS: the kernel encrypts what sendfile sends
                if tls is None:
                    count = os.sendfile(
                        connection.fd, body.fd, body.offset, min(body.length, SENDFILE_CHUNK)
                    )
                else:  # sendfile cannot cross userspace TLS: pread, encrypt, send
                    count = tls.send_file(body.fd, body.offset, body.length)
                if count == 0:
                    abandon_changed_file(self, connection)  # shrank since the fstat
                    return False
                body.offset += count
                body.length -= count
                connection.response_sent += count
                self.bytes_sent += count
                if body.length == 0:
                    close_body(body)
                    connection.file = body = None
                elif count < SENDFILE_CHUNK or tls is not None:
                    # The socket buffer is full; wait for EPOLLOUT. Over TLS, one chunk
                    # per turn of the loop: encrypting is CPU, and others are waiting.
                    break
        except BlockingIOError:
            pass
        except OSError:
            self.close(connection)
            return False
        return True

    def response_done(self, connection: Connection) -> None:
        connection.served += 1
        if self.access_log.enabled and connection.log_status:
            self.log_access(connection)
        if connection.phase == WRITING:
            connection.phase = READING
            self.epoll.modify(connection.fd, select.EPOLLIN)
        if connection.close_after:
            if connection.inbuf or connection.log_request is None:
                self.linger(connection)
            else:
                self.close(connection)
            self.maybe_recycle()
            return
        self.maybe_recycle()
        if connection.inbuf:
            return  # the caller answers what is pipelined (while draining, with close)
        if self.draining:
            # Its head went out before the drain began, without Connection: close, so
            # the client may be sending its next request right now: half-close and
            # drain, so it sees a clean EOF (and retries) rather than a RST.
            self.linger(connection)
        else:
            connection.deadline = self.clock() + self.keepalive_seconds

    def maybe_recycle(self) -> None:
        limit = self.max_requests
        if limit and self.requests >= limit and not self.draining:
            self.error_log.info(f"worker served {self.requests} requests; recycling")
            self.recycle(self.graceful_seconds, "recycling")

    def log_access(self, connection: Connection) -> None:
        self.access_log.add(
            connection.client, connection.log_request or connection.log_line,
            connection.log_status, connection.response_sent - connection.head_length,
            connection.request_started, self.clock(), time.time(), connection.tls is not None,
        )
        connection.log_status = 0

    # -- closing --------------------------------------------------------------------
    def linger(self, connection: Connection) -> None:
        """Half-close and drain unread input before closing.

        Closing a socket with unread bytes makes the kernel send RST, which can destroy
        the response we just sent before the client reads it (RFC 9112 §9.6).
        """
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(connection)
            return
        connection.inbuf.clear()
        connection.phase = LINGERING
        connection.deadline = self.clock() + LINGER_SECONDS
        self.epoll.modify(connection.fd, select.EPOLLIN)

    def on_lingering(self, connection: Connection) -> None:
        if self.receive(connection) == b"":
            self.close(connection)

    @staticmethod
    def receive(connection: Connection) -> bytes | None:
        """One recv: the bytes, b"" when the peer is gone (EOF or an error), None when
        nothing is waiting after all. (on_readable does the same inline: it runs for
        every request.)"""
        try:
            return connection.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    @staticmethod
    def reset_on_close(connection: Connection) -> None:
        """Make close() abort a stalled response rather than hand it to the kernel.

        A normal close leaves the unsent part queued (up to tcp_wmem's maximum, 4 MiB
        by default) in an orphan socket that lives as long as the client keeps
        acknowledging with a zero window: a slow reader would go on holding kernel
        memory after its deadline. The response is abandoned anyway.
        """
        # An OSError means the client already reset it: nothing is queued.
        with contextlib.suppress(OSError):
            connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)

    def close(self, connection: Connection) -> None:
        if self.connections.pop(connection.fd, None) is None:
            return
        phase, connection.phase = connection.phase, CLOSED
        if connection.log_status and phase == WRITING and self.access_log.enabled:
            self.log_access(connection)  # an aborted response is still a response
        release_bodies(connection)  # file descriptors, decoding streams, a parked job
        if connection.admission is not None and self.release is not None:
            self.release(connection)
        # Closing the only descriptor of the socket also removes it from the epoll set.
        connection.sock.close()
