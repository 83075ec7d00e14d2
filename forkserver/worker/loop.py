"""The worker process's cycle: one epoll loop, its signals, the drain and the sweep.

Owns the event loop (which dispatches each ready connection by its phase), the
worker's signals, drain and exit, the periodic sweep (deadlines, heartbeat, log
flush, the master still alive) and the worker's scoreboard slot. It reads the clock
and passes ``now`` on. Must not parse HTTP (http.py), decide what a request means
(static.py, status.py), send (connection.py) or accept (accepting.py) itself, or
know about other workers and generations (the master does).
"""

from __future__ import annotations

import gc
import os
import select
import signal
import time
from collections.abc import Callable

from forkserver.errors import HttpError
from forkserver.http.proxy import TrustedSources
from forkserver.offload import Offload
from forkserver.scoreboard import LIMITED, SlotState
from forkserver.service import drop_privileges
from forkserver.signals import SignalPipe
from forkserver.static import StaticSite
from forkserver.worker.accepting import Acceptor
from forkserver.worker.connection import (
    HANDSHAKING,
    READING,
    WRITING,
    Connection,
    Responder,
)
from forkserver.worker.guard import Guard, guarded
from forkserver.worker.proxyphase import ProxyPhase
from forkserver.worker.reading import RequestReader
from forkserver.worker.siterouting import SiteRouting, needs_routing
from forkserver.worker.status import StatusPage
from forkserver.worker.tlsphase import TlsPhase
from forkserver.worker.tlsrouting import TlsRouting
from forkserver.workerspec import WorkerSpec

NO_HANDSHAKES = (0, 0)  # the scoreboard's TLS counters of a worker without TLS listeners
SWEEP_SECONDS = 0.25  # how often deadlines, heartbeat, log flush and parent are checked
ORPHAN_DRAIN_SECONDS = 1.0  # in-flight time granted when the master has died

NOT_LIMITED = (0,) * len(LIMITED)
_SIGNALS_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)


class Worker:
    """One worker's loop, driving its Acceptor, RequestReader and Responder.

    ``clock`` is the monotonic clock every deadline is measured with; a test passes
    its own to move time without sleeping.
    """

    def __init__(self, spec: WorkerSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        config = spec.config
        self.config = config
        self.clock = clock
        self.timeouts = config.timeouts
        self.site = StaticSite(config)
        # Slow work (gzip of a large file, content hashes, .gz measuring) runs here,
        # off the loop; threads start on the first job, never in a worker without one.
        self.offload = Offload()
        self.site.codings.attach(self.offload.submit)
        self.error_log = spec.error_log
        self.access_log = spec.access_log
        self.scoreboard = spec.scoreboard
        self.slot = spec.slot
        self.epoll = select.epoll()
        self.connections: dict[int, Connection] = {}
        self.draining = False
        self.drain_deadline = 0.0
        self.next_sweep = 0.0
        self.signals = SignalPipe()
        self.responder = Responder(
            config, self.site, self.epoll, self.connections, spec.access_log,
            spec.error_log, spec.max_requests, self.begin_drain, clock,
        )
        self.status_page = StatusPage(config, self.site, spec.scoreboard)
        self.reader = RequestReader(
            config, self.site, self.status_page, self.responder, self.beat, clock,
        )
        # Sites and rules (worker/siterouting.py); without them None, and the reader
        # plans with the static site as before.
        self.routing = SiteRouting(
            config, self.site, self.offload.submit) if needs_routing(config) else None
        if self.routing is not None:
            self.reader.route = self.reader.parking.route = self.routing.plan
            self.responder.forget = self.routing.forget
            for static in self.routing.statics:  # each site's gzip, hashes, .gz off the loop
                static.codings.attach(self.offload.submit)
            if self.routing.named:
                spec.access_log.site_of = self.routing.site_name
        self.proxy = ProxyPhase(
            TrustedSources(config.proxy_protocol_from), spec.error_log, self.responder,
            self.reader.serve_buffered, clock,
        ) if config.proxy_protocol else None
        self.guard = Guard(
            config, spec.clients, spec.slot, self.site, self.responder, self.connections,
            clock,
        ) if guarded(config) else None
        admit = self.proxy.admit if self.proxy is not None else None
        if self.guard is not None:
            self.responder.release = self.guard.release
            self.reader.refusal = self.guard.refusal
            if self.proxy is not None:
                self.proxy.on_client = self.guard.open  # the client the header names
            else:
                admit = self.guard.admit
        self.acceptor = Acceptor(
            spec.listeners, self.epoll, self.connections, config.timeouts.header,
            spec.error_log, admit, clock,
        )
        self.tls = TlsPhase(
            spec.tls, self.epoll, self.responder.close, config.timeouts.header, clock
        ) if spec.tls is not None else None
        if TlsRouting.wanted(config):
            https_port = spec.tls.https_port if spec.tls is not None else None
            self.reader.tls_routing = TlsRouting(config, https_port, self.site.error_plan).decide
        if self.tls is not None:
            self.acceptor.tls_admit = self.tls.admit
            self.acceptor.secure = {s for s in spec.listeners if s.fileno() in self.tls.secure_fds}
        # What the loop calls for a ready connection, indexed by its phase (READING,
        # WRITING, LINGERING, CLOSED, AWAITING_PROXY, HANDSHAKING). A closed connection is
        # out of the table; no connection awaits a PROXY header when proxy_protocol is
        # off, and none handshakes without a TLS listener.
        self.handlers: tuple[Callable[[Connection], None], ...] = (
            self.reader.on_readable,
            self.reader.on_writable,
            self.responder.on_lingering,
            self.responder.close,
            self.proxy.on_proxy_header if self.proxy is not None else self.responder.close,
            self.tls.on_handshake if self.tls is not None else self.responder.close,
            self.responder.close,  # PARKED: only a hang-up or an error wakes it
        )

    # -- set-up -------------------------------------------------------------------
    def install_signals(self) -> None:
        self.signals.install(_SIGNALS_HANDLED)
        # A stray `pkill -HUP` must not kill workers; reload is the master's business.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for signum in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    # -- main loop ----------------------------------------------------------------
    def run(self) -> int:
        self.install_signals()
        self.acceptor.start()
        self.epoll.register(self.signals.read_fd, select.EPOLLIN)
        self.epoll.register(self.offload.fileno(), select.EPOLLIN)
        self.scoreboard.set_state(self.slot, SlotState.SERVING)
        self.beat()
        # What the worker built to serve (its site, tables, compiled rules) lives as
        # long as it does: frozen, the collector's full passes skip it, and only the
        # objects requests create are walked (perf put gc at ~2% of a site-mix worker).
        gc.freeze()
        connections = self.connections
        listeners = self.acceptor.listeners
        accept_batch = self.acceptor.accept_batch
        handlers = self.handlers
        wakeup = self.signals.read_fd
        finished_jobs = self.offload.fileno()
        poll = self.epoll.poll
        clock = self.clock
        while True:
            now = clock()
            if now >= self.next_sweep:
                self.sweep(now)
                if self.draining and (not connections or now >= self.drain_deadline):
                    return self.finish()
            timeout = max(0.0, self.next_sweep - now)
            for fd, _events in poll(timeout):
                connection = connections.get(fd)
                if connection is not None:
                    handlers[connection.phase](connection)
                elif fd in listeners:
                    accept_batch(listeners[fd])
                elif fd == wakeup:
                    exit_code = self.on_signals()
                    if exit_code is not None:
                        return exit_code
                elif fd == finished_jobs:
                    self.offload.deliver()  # parked requests resume (parking.py)
            if self.draining and not connections:
                return self.finish()

    def finish(self) -> int:
        self.beat()
        self.access_log.flush()
        for connection in list(self.connections.values()):
            self.responder.close(connection)
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
        self.draining = self.responder.draining = True
        self.drain_deadline = self.clock() + seconds
        self.scoreboard.set_state(self.slot, SlotState.DRAINING)
        self.error_log.debug(f"worker {why}: {len(self.connections)} connections open")
        self.acceptor.stop()
        for connection in list(self.connections.values()):
            # Idle keep-alive connections go now. A fresh connection that has not sent
            # its first request yet is in flight: its client is about to ask.
            if connection.phase == READING and not connection.inbuf and connection.served:
                self.responder.linger(connection)

    # -- periodic work ------------------------------------------------------------
    def sweep(self, now: float) -> None:
        self.next_sweep = now + SWEEP_SECONDS
        self.beat()
        self.access_log.tick(now)
        self.site.drop_expired(now)
        if self.routing is not None:
            self.routing.drop_expired(now)
        if os.getppid() != self.spec.master_pid and not self.draining:
            self.error_log.warning("master is gone; worker exiting")
            self.begin_drain(ORPHAN_DRAIN_SECONDS, "orphaned")
        if self.acceptor.paused_until and now >= self.acceptor.paused_until:
            self.acceptor.resume(now)
        expired = [c for c in self.connections.values() if c.deadline <= now]
        for connection in expired:
            self.on_deadline(connection)
        if self.guard is not None:
            self.guard.sweep(now)

    def beat(self) -> None:
        responder = self.responder
        not_ok = responder.not_ok
        ok = responder.requests - not_ok[1] - not_ok[3] - not_ok[4] - not_ok[5]
        by_class = (not_ok[1], ok, not_ok[3], not_ok[4], not_ok[5])
        self.scoreboard.beat(
            self.slot, responder.requests, responder.bytes_sent, len(self.connections),
            by_class, self.guard.counts() if self.guard is not None else NOT_LIMITED,
            (self.tls.ok, self.tls.failed) if self.tls is not None else NO_HANDSHAKES,
        )

    def on_deadline(self, connection: Connection) -> None:
        if connection.parked is not None:  # its job took longer than timeouts.send
            self.responder.close(connection)
        elif connection.phase == READING and connection.inbuf:
            # RFC 9110 §15.5.9: the head did not arrive in time.
            self.responder.respond_error(connection, HttpError(408, "request head timed out"))
        else:
            # Idle keep-alive, a silent new connection, a stalled send, or done lingering.
            if connection.phase == WRITING:
                self.responder.reset_on_close(connection)
            elif connection.phase == HANDSHAKING and self.tls is not None:
                self.tls.timed_out(connection)  # SPEC §6: within timeouts.header
            self.responder.close(connection)


def run_worker(spec: WorkerSpec) -> int:
    """Entry point in the forked child (``workerspec.WorkerMain``); returns the exit
    status for ``os._exit``.

    Privileges are dropped before the docroot is first touched, so the docroot is
    read as the configured user.
    """
    drop_privileges(spec.config.user, spec.config.group)
    return Worker(spec).run()
