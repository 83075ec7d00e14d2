"""The worker process: one epoll event loop that accepts, reads, answers and logs.

Owns connections (their buffers, deadlines and in-flight file bodies), the accept
loop, response serialisation, the worker's signals and its scoreboard slot. Must not
parse HTTP (http.py does), decide what a request means (static.py does, and
status.py for the status path), or know about other workers and generations (the
master does).
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass
from email.utils import formatdate

from forkserver.config import Config
from forkserver.errors import HttpError
from forkserver.http import HeadParser, Request
from forkserver.logs import AccessLog, ErrorLog
from forkserver.proxy import UNIX_CLIENT, ProxyError, TrustedSources, parse_proxy_header
from forkserver.scoreboard import Scoreboard, SlotState
from forkserver.service import drop_privileges
from forkserver.signals import SignalPipe
from forkserver.static import (
    REASONS,
    FileBody,
    Plan,
    StaticSite,
    close_body,
    encode_fields,
    file_version,
)
from forkserver.status import NO_STATUS_PATH, StatusPage

RECV_BYTES = 64 * 1024  # one recv; a request head is far smaller (limits.header_bytes)
# Accepts per wake-up. One: with EPOLLEXCLUSIVE the first idle worker is woken for
# every new connection, so a larger batch lets one worker take a whole burst while the
# other idles (measured: 50 wrk connections split 51/1 in half the trials with 64,
# halving throughput; with 1 they split evenly and 1 KiB keep-alive ran 29-38k req/s
# instead of 10-35k, while Connection: close throughput stayed within 3%).
ACCEPT_BATCH = 1
SENDFILE_CHUNK = 2 * 1024 * 1024  # per call, so one large download cannot starve the loop
SWEEP_SECONDS = 0.25  # how often deadlines, heartbeat, log flush and parent are checked
EMFILE_PAUSE_SECONDS = 0.5  # accept pause when the descriptor table is full
EMFILE_WARN_SECONDS = 60.0  # one "pausing accepts" warning per this long, not one per pause
# Descriptors held in reserve and given back when accept() finds the table full, so the
# connections already open can still open the files they ask for (a walk holds at most
# a directory and a file at once; a response in flight keeps its file until it is sent).
RESERVE_DESCRIPTORS = 8
LINGER_SECONDS = 2.0  # how long a closing connection's unread input is drained
ORPHAN_DRAIN_SECONDS = 1.0  # in-flight time granted when the master has died
# SO_LINGER on with a zero timeout: close() resets the connection and drops what is
# still queued for the client, instead of leaving it to the kernel to deliver.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)

READING, WRITING, LINGERING, CLOSED = 0, 1, 2, 3
AWAITING_PROXY = 4  # proxy_protocol: the PROXY header has not arrived in full yet

_SIGNALS_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)


@dataclass(slots=True)
class WorkerSpec:
    """What the master hands a freshly forked worker."""

    number: int  # 1-based position in its generation, for the process title
    generation: int
    slot: int
    config: Config
    listeners: list[socket.socket]
    scoreboard: Scoreboard
    master_pid: int
    error_log: ErrorLog
    access_log: AccessLog
    max_requests: int  # 0 = never recycle; jitter already added by the master


class Connection:
    __slots__ = (
        "client",
        "close_after",
        "deadline",
        "fd",
        "file",
        "head_length",
        "head_started",
        "inbuf",
        "log_line",
        "log_request",
        "log_status",
        "outbuf",
        "phase",
        "request_started",
        "response_sent",
        "rest",
        "served",
        "sock",
    )

    def __init__(self, sock: _socket.socket, client: str, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.inbuf = bytearray()
        # What is left to send of the head and in-memory body; a memoryview after a
        # partial send, so the rest of a 64 KiB answer is not copied on every send.
        self.outbuf: bytes | memoryview = b""
        self.file: FileBody | None = None
        self.rest: list[bytes | FileBody] | None = None  # segments after ``file``
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


def _client_address(address: object) -> str:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host[7:] if host.startswith("::ffff:") else host
    return UNIX_CLIENT  # AF_UNIX peers have no address


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        config = spec.config
        self.config = config
        self.parse_head = HeadParser(config.limits).parse
        self.timeouts = config.timeouts
        self.site = StaticSite(config)
        self.error_log = spec.error_log
        self.access_log = spec.access_log
        self.scoreboard = spec.scoreboard
        self.slot = spec.slot
        self.epoll = select.epoll()
        self.listeners = {sock.fileno(): sock for sock in spec.listeners}
        self.families = {sock: int(sock.family) for sock in spec.listeners}
        self.connections: dict[int, Connection] = {}
        self.requests = 0
        self.bytes_sent = 0
        # Responses by status class (index status // 100), except 200s: those are the
        # rest of ``requests``, so the common case costs one comparison, not a count.
        self.not_ok = [0] * 6
        self.status_path = config.status.path or NO_STATUS_PATH
        self.status_page = StatusPage(config, self.site, spec.scoreboard)
        self.draining = False
        self.drain_deadline = 0.0
        self.accept_paused_until = 0.0
        self.accept_warned_at = -EMFILE_WARN_SECONDS
        self.reserve: list[int] = []
        self.next_sweep = 0.0
        self.date_second = -1
        self.date_header = b""
        self.status_lines = {
            code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in REASONS.items()
        }
        self.signals = SignalPipe()
        # None when proxy_protocol is off: then accepting costs one `is not None` more.
        self.proxy_sources = (
            TrustedSources(config.proxy_protocol_from) if config.proxy_protocol else None
        )

    # -- set-up -------------------------------------------------------------------
    def install_signals(self) -> None:
        self.signals.install(_SIGNALS_HANDLED)
        # A stray `pkill -HUP` must not kill workers; reload is the master's business.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for signum in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    def start_accepting(self) -> None:
        for fd, sock in self.listeners.items():
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # Accepted sockets inherit it, which saves a setsockopt per connection.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # EPOLLEXCLUSIVE: one idle worker wakes per incoming connection, not all.
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self.epoll.register(self.signals.read_fd, select.EPOLLIN)
        self.fill_reserve()

    # -- main loop ----------------------------------------------------------------
    def run(self) -> int:
        self.install_signals()
        self.start_accepting()
        self.scoreboard.set_state(self.slot, SlotState.SERVING)
        self.beat()
        connections = self.connections
        listeners = self.listeners
        wakeup = self.signals.read_fd
        poll = self.epoll.poll
        while True:
            now = time.monotonic()
            if now >= self.next_sweep:
                self.sweep(now)
                if self.draining and (not connections or now >= self.drain_deadline):
                    return self.finish()
            timeout = max(0.0, self.next_sweep - now)
            for fd, _events in poll(timeout):
                connection = connections.get(fd)
                if connection is not None:
                    if connection.phase == WRITING:
                        self.on_writable(connection)
                    elif connection.phase == READING:
                        self.on_readable(connection)
                    elif connection.phase == LINGERING:
                        self.on_lingering(connection)
                    else:
                        self.on_proxy_header(connection)
                elif fd in listeners:
                    self.accept_batch(listeners[fd])
                elif fd == wakeup:
                    exit_code = self.on_signals()
                    if exit_code is not None:
                        return exit_code
            if self.draining and not connections:
                return self.finish()

    def finish(self) -> int:
        self.beat()
        self.access_log.flush()
        for connection in list(self.connections.values()):
            self.close(connection)
        return 0

    # -- signals ------------------------------------------------------------------
    def on_signals(self) -> int | None:
        for signum in self.signals.received():
            if signum in (signal.SIGINT, signal.SIGQUIT):
                self.access_log.flush()
                return 0
            if signum == signal.SIGTERM:
                self.begin_drain(self.timeouts.graceful, "stopping gracefully")
            elif signum == signal.SIGUSR1:
                self.reopen_logs()
        return None

    def reopen_logs(self) -> None:
        self.access_log.flush()
        files = {id(f): f for f in (self.access_log.file, self.error_log.file) if f}
        for log_file in files.values():
            try:
                log_file.reopen()
            except OSError as exc:
                self.error_log.error(f"cannot reopen {log_file.path}: {exc.strerror}")

    def begin_drain(self, seconds: float, why: str) -> None:
        """Stop accepting; finish in-flight responses; close idle keep-alive connections."""
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + seconds
        self.scoreboard.set_state(self.slot, SlotState.DRAINING)
        self.error_log.debug(f"worker {why}: {len(self.connections)} connections open")
        for fd, sock in self.listeners.items():
            # Take what already waits in the accept queue: when the last copy of the
            # socket closes, the kernel resets queued connections (they would see a
            # RST for a request nobody refused). They are answered with Connection: close.
            while self.accept_batch(sock) == ACCEPT_BATCH:
                pass
            if not self.accept_paused_until:
                self.epoll.unregister(fd)
            sock.close()
        self.listeners.clear()
        self.accept_paused_until = 0.0
        for connection in list(self.connections.values()):
            # Idle keep-alive connections go now. A fresh connection that has not sent
            # its first request yet is in flight: its client is about to ask.
            if connection.phase == READING and not connection.inbuf and connection.served:
                self.linger(connection)

    # -- periodic work ------------------------------------------------------------
    def sweep(self, now: float) -> None:
        self.next_sweep = now + SWEEP_SECONDS
        self.beat()
        self.access_log.tick(now)
        self.site.drop_expired(now)
        if os.getppid() != self.spec.master_pid and not self.draining:
            self.error_log.warning("master is gone; worker exiting")
            self.begin_drain(ORPHAN_DRAIN_SECONDS, "orphaned")
        if self.accept_paused_until and now >= self.accept_paused_until:
            self.resume_accepting(now)
        expired = [c for c in self.connections.values() if c.deadline <= now]
        for connection in expired:
            self.on_deadline(connection)

    def beat(self) -> None:
        not_ok = self.not_ok
        ok = self.requests - not_ok[1] - not_ok[3] - not_ok[4] - not_ok[5]
        by_class = (not_ok[1], ok, not_ok[3], not_ok[4], not_ok[5])
        self.scoreboard.beat(
            self.slot, self.requests, self.bytes_sent, len(self.connections), by_class
        )

    def on_deadline(self, connection: Connection) -> None:
        if connection.phase == READING and connection.inbuf:
            # RFC 9110 §15.5.9: the head did not arrive in time.
            self.respond_error(connection, HttpError(408, "request head timed out"))
        else:
            # Idle keep-alive, a silent new connection, a stalled send, or done lingering.
            if connection.phase == WRITING:
                self.reset_on_close(connection)
            self.close(connection)

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

    # -- accepting ----------------------------------------------------------------
    def accept_batch(self, listener: socket.socket) -> int:
        """Accept up to ACCEPT_BATCH connections; return how many were accepted."""
        deadline = time.monotonic() + self.timeouts.header
        for accepted in range(ACCEPT_BATCH):
            try:
                # The C-level accept (accept4 with SOCK_CLOEXEC) and a bare _socket
                # object: socket.socket.accept() converts family and type to enums and
                # runs a Python __init__ per connection (about 2 us, measured with
                # bench/hotpath.py --close); workers use nothing socket.socket adds.
                fd, address = listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return accepted
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.pause_accepting(exc)
                # ECONNABORTED and friends: that client is gone; others may be waiting.
                return accepted
            sock = _socket.socket(self.families[listener], socket.SOCK_STREAM, 0, fd)
            sock.setblocking(False)  # O_NONBLOCK is not inherited; TCP_NODELAY is
            connection = Connection(sock, _client_address(address), deadline)
            if self.proxy_sources is not None and not self.expect_proxy_header(
                connection, address
            ):
                continue
            self.connections[connection.fd] = connection
            self.epoll.register(connection.fd, select.EPOLLIN)
        return ACCEPT_BATCH

    def expect_proxy_header(self, connection: Connection, address: object) -> bool:
        """proxy_protocol: a TCP peer outside proxy_protocol_from is closed unanswered.

        A unix socket's peers are whoever its mode and owner let in, so they may send
        the header too.
        """
        assert self.proxy_sources is not None
        if isinstance(address, tuple) and connection.client not in self.proxy_sources:
            self.error_log.debug(
                f"PROXY protocol: {connection.client} is not in proxy_protocol_from; closed"
            )
            connection.sock.close()
            return False
        connection.phase = AWAITING_PROXY
        return True

    def on_proxy_header(self, connection: Connection) -> None:
        """Read the PROXY header; the client it names is the connection's client.

        It must be complete by the deadline set at accept (timeouts.header); a bad one
        closes the connection without a byte of answer: what follows cannot be trusted.
        """
        data = self.receive(connection)
        if data is None:
            return
        if not data:
            self.close(connection)
            return
        connection.inbuf += data
        try:
            parsed = parse_proxy_header(connection.inbuf)
        except ProxyError as exc:
            self.error_log.debug(f"PROXY protocol: {connection.client} sent {exc}; closed")
            self.close(connection)
            return
        if parsed is None:
            return
        header, consumed = parsed
        if header.client is not None:
            connection.client = header.client
        del connection.inbuf[:consumed]
        connection.phase = READING
        if connection.inbuf:
            connection.head_started = time.monotonic()
            self.serve_buffered(connection)

    def pause_accepting(self, exc: OSError) -> None:
        """Stop accepting for a moment and give the reserve to the open connections."""
        # Level-triggered EPOLLIN would wake us again at once and spin the CPU; stop
        # listening for a moment and let connections finish and free descriptors. The
        # listener is unregistered, not modified: epoll refuses EPOLL_CTL_MOD on an
        # EPOLLEXCLUSIVE registration (EINVAL).
        now = time.monotonic()
        if not self.accept_paused_until:
            for fd in self.listeners:
                self.epoll.unregister(fd)
        self.accept_paused_until = now + EMFILE_PAUSE_SECONDS
        self.release_reserve()
        if now - self.accept_warned_at >= EMFILE_WARN_SECONDS:
            self.accept_warned_at = now
            self.error_log.warning(f"accept failed ({exc.strerror}); pausing accepts")

    def resume_accepting(self, now: float) -> None:
        # The reserve comes back first: if it cannot, the open connections are using
        # those descriptors, and accepting more would only take them away.
        if not self.fill_reserve():
            self.accept_paused_until = now + EMFILE_PAUSE_SECONDS
            return
        self.accept_paused_until = 0.0
        for fd in self.listeners:
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)

    def fill_reserve(self) -> bool:
        """Hold RESERVE_DESCRIPTORS spare descriptors; False if the table is too full."""
        try:
            while len(self.reserve) < RESERVE_DESCRIPTORS:
                # A copy of the epoll descriptor: needs no file, and nothing waits on it.
                self.reserve.append(os.dup(self.epoll.fileno()))
        except OSError:
            return False
        return True

    def release_reserve(self) -> None:
        for fd in self.reserve:
            os.close(fd)
        self.reserve.clear()

    # -- reading and answering ----------------------------------------------------
    def on_readable(self, connection: Connection) -> None:
        try:
            data = connection.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            self.close(connection)
            return
        if not data:
            self.close(connection)
            return
        if not connection.inbuf:
            connection.head_started = time.monotonic()
        connection.inbuf += data
        self.serve_buffered(connection)

    def serve_buffered(self, connection: Connection) -> None:
        """Answer every complete request in the buffer, in order, until one blocks.

        The only place that walks a pipeline: a response that completes at once
        returns here for the next request (a loop, never a recursion, however many
        requests one packet holds); one that had to wait resumes from on_writable.
        """
        while connection.phase == READING and connection.inbuf:
            try:
                parsed = self.parse_head(connection.inbuf)
            except HttpError as error:
                self.respond_error(connection, error)
                return
            if parsed is None:
                # RFC 9110 §15.5.9: the head must be complete within timeouts.header.
                connection.deadline = connection.head_started + self.timeouts.header
                return
            request, consumed = parsed
            del connection.inbuf[:consumed]
            connection.request_started = connection.head_started
            if connection.inbuf:
                # Pipelined: the next head's clock starts now.
                connection.head_started = time.monotonic()
            if request.path == self.status_path:
                self.beat()  # so this worker's own numbers are current
                plan = self.status_page.plan(request, connection.client)
                logged = self.status_page.logged(request, connection.client)
                self.respond(connection, request, plan, logged=logged)
                continue
            self.respond(connection, request, self.site.plan(request))

    def respond_error(self, connection: Connection, error: HttpError) -> None:
        plan = self.site.error_plan(error.status)
        plan.close = plan.close or error.close
        if not connection.request_started:
            connection.request_started = connection.head_started or time.monotonic()
        line = bytes(connection.inbuf[:1024]).split(b"\r\n", 1)[0].decode("latin-1")
        self.respond(connection, None, plan, line)

    def respond(
        self, connection: Connection, request: Request | None, plan: Plan, line: str = "",
        *, logged: bool = True,
    ) -> None:
        # A request with a body we never read cannot be followed on this connection:
        # the body bytes would be parsed as the next request (RFC 9112 §6.3).
        keep_alive = (
            request is not None
            and request.keep_alive
            and not request.content_length
            and not plan.close
            and not self.draining
            and not (self.spec.max_requests and self.requests + 1 >= self.spec.max_requests)
        )
        if not keep_alive:
            ending = b"Connection: close\r\n\r\n"
        elif request is not None and request.minor == 0:
            ending = b"Connection: keep-alive\r\n\r\n"
        else:
            ending = b"\r\n"
        body = plan.body
        data = b"".join((
            self.status_lines.get(plan.status) or _status_line(plan.status),
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
            else:
                connection.file = segment
        if connection.outbuf or connection.file is not None:
            connection.deadline = time.monotonic() + self.timeouts.send
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
                    self.abandon_changed_file(connection)
                    return False
                count = os.sendfile(
                    connection.fd, body.fd, body.offset, min(body.length, SENDFILE_CHUNK)
                )
                if count == 0:
                    self.abandon_changed_file(connection)  # shrank between fstat and here
                    return False
                body.offset += count
                body.length -= count
                connection.response_sent += count
                self.bytes_sent += count
                if body.length == 0:
                    close_body(body)
                    connection.file = body = None
                elif count < SENDFILE_CHUNK:
                    break  # the socket buffer is full; wait for EPOLLOUT
        except BlockingIOError:
            pass
        except OSError:
            self.close(connection)
            return False
        return True

    def abandon_changed_file(self, connection: Connection) -> None:
        request = connection.log_request
        what = request.path if request is not None else "an error page"
        if request is not None:
            # A cached descriptor of it would fail the same way until the entry expires.
            self.site.forget(request.path)
        self.error_log.error(
            f"{what} changed while being sent to {connection.client}; closing the "
            f"connection after {connection.response_sent} bytes"
        )
        self.close(connection)

    def on_writable(self, connection: Connection) -> None:
        self.flush_output(connection)
        if connection.phase == READING and connection.inbuf:
            self.serve_buffered(connection)  # requests pipelined behind the one just sent

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
            connection.deadline = time.monotonic() + self.timeouts.keepalive

    def maybe_recycle(self) -> None:
        limit = self.spec.max_requests
        if limit and self.requests >= limit and not self.draining:
            self.error_log.info(f"worker served {self.requests} requests; recycling")
            self.begin_drain(self.timeouts.graceful, "recycling")

    def log_access(self, connection: Connection) -> None:
        self.access_log.add(
            connection.client, connection.log_request or connection.log_line,
            connection.log_status, connection.response_sent - connection.head_length,
            connection.request_started, time.monotonic(), time.time(),
        )
        connection.log_status = 0

    def date(self) -> bytes:
        now = int(time.time())
        if now != self.date_second:
            self.date_second = now
            self.date_header = (
                f"Date: {formatdate(now, usegmt=True)}\r\nServer: {self.site.server}\r\n".encode()
            )
        return self.date_header

    # -- closing ------------------------------------------------------------------
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
        connection.deadline = time.monotonic() + LINGER_SECONDS
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

    def close(self, connection: Connection) -> None:
        if self.connections.pop(connection.fd, None) is None:
            return
        phase, connection.phase = connection.phase, CLOSED
        if connection.log_status and phase == WRITING and self.access_log.enabled:
            self.log_access(connection)  # an aborted response is still a response
        if connection.file is not None:
            close_body(connection.file)
            connection.file = None
        for segment in connection.rest or ():
            if isinstance(segment, FileBody):
                close_body(segment)
        connection.rest = None
        # Closing the only descriptor of the socket also removes it from the epoll set.
        connection.sock.close()



def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n".encode()


def run_worker(
    *, number: int, generation: int, slot: int, config: Config,
    listeners: list[socket.socket], scoreboard: Scoreboard, master_pid: int,
    error_log: ErrorLog, access_log: AccessLog, max_requests: int,
) -> int:
    """Entry point in the forked child; returns the exit status for ``os._exit``.

    Privileges are dropped before the docroot is first touched, so the docroot is
    read as the configured user.
    """
    drop_privileges(config.user, config.group)
    spec = WorkerSpec(
        number, generation, slot, config, listeners, scoreboard, master_pid,
        error_log, access_log, max_requests,
    )
    return Worker(spec).run()
