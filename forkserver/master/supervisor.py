"""The master process's cycle: its loop, the signals it is sent, and its named state.

Owns the State machine (STARTING, SERVING, RELOADING, STOPPING, QUITTING; an upgrade
is a second, orthogonal state in upgrade.py), the loop (reap, supervise, wait for
signals), dispatching each signal to its handle_* method, promoting a generation
once it serves, stopping, and what the master tells systemd and its part of the
scoreboard. The pool (pool.py), reload (reload.py), upgrade (upgrade.py), socket
files (sockets.py) and outcomes (outcome.py) do the work. Must never accept a
connection or parse HTTP, and never imports the worker package.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from enum import Enum

from forkserver.capacity import MAX_WORKERS
from forkserver.config import Config
from forkserver.listeners import describe
from forkserver.logs import ErrorLog
from forkserver.master.generations import Generation, Generations
from forkserver.master.memorycap import MemoryCap
from forkserver.master.notify import Notifier
from forkserver.master.outcome import Outcomes
from forkserver.master.pool import KILL_MARGIN_SECONDS, Pool
from forkserver.master.process import MASTER_SIGNALS, SYSTEM, ProcessOps, StartInfo
from forkserver.master.reload import reload_generation
from forkserver.master.sockets import SocketFiles
from forkserver.master.upgrade import UPGRADE_FROM_ENV, Handoff, Upgrade
from forkserver.scoreboard import Scoreboard
from forkserver.service import Pidfile, remove_outcome, set_title
from forkserver.signals import SignalPipe
from forkserver.workerspec import WorkerMain

LOOP_SECONDS = 0.2  # longest sleep of the master loop: bounds respawn and readiness delay
BOOT_POLL_SECONDS = 0.02  # sleep while a generation boots, so readiness is seen promptly
FAST_STOP_SECONDS = 1.0  # INT/QUIT: workers get this long before SIGKILL


class State(Enum):
    STARTING = "starting"  # the first generation boots; nothing serves yet
    SERVING = "serving"  # the current generation serves in full
    RELOADING = "reloading"  # a new generation boots; the previous one serves meanwhile
    STOPPING = "stopping"  # TERM: workers drain, then the master exits
    QUITTING = "quitting"  # INT/QUIT: workers exit at once


# Which states accept what. An upgrade (upgrade.Upgrade) runs beside these: it may
# begin in SERVING or RELOADING, a HUP may start a generation while it runs, and the
# successor's TERM moves us to STOPPING with it still UPGRADING (its sockets are ours).
LIVE = frozenset({State.STARTING, State.SERVING, State.RELOADING})  # HUP, TTIN, TTOU act
UP = frozenset({State.SERVING, State.RELOADING})  # some generation serves: USR2, watchdog
BOOTING = frozenset({State.STARTING, State.RELOADING})  # a generation is not yet ready
ENDING = frozenset({State.STOPPING, State.QUITTING})


class Master:
    def __init__(
        self, config: Config, listeners: list[socket.socket], worker_main: WorkerMain,
        start: StartInfo, pidfile: Pidfile | None = None, socket_activated: bool = False,
        processes: ProcessOps = SYSTEM,
    ) -> None:
        self.start = start
        self.pidfile = pidfile
        self.socket_activated = socket_activated
        self.processes = processes
        self.pid = os.getpid()
        self.start_time = time.time()
        self.scoreboard = Scoreboard()
        self.generations = Generations()
        self.generations.add(self.generations.make(1, config, listeners))
        self.signals = SignalPipe()
        self.pool = Pool(self.generations, self.scoreboard, processes, worker_main,
                         self.leave_master)
        self.memory = MemoryCap(self.pool)  # worker_memory_limit (SPEC §9)
        self.state = State.STARTING
        self.stop_deadline = 0.0
        self.handoff = Handoff(processes, int(os.environ.pop(UPGRADE_FROM_ENV, "0") or 0))
        self.outcomes = Outcomes(pidfile)
        self.notify = Notifier(self.pid, self.pool.status_line)
        self.on_ready: Callable[[], None] | None = None  # daemon mode: tell the launcher
        self.sockets = SocketFiles()  # never systemd's: the .socket unit owns those
        if not socket_activated:
            self.sockets.remember(listeners)

    @property
    def generation(self) -> Generation:
        return self.generations.current

    @property
    def log(self) -> ErrorLog:
        return self.generations.current.error_log

    def leave_master(self) -> None:
        """In a forked worker: let go of what only the master may hold."""
        self.signals.release()
        if self.pidfile is not None:
            self.pidfile.forget()

    def close_listener(self, sock: socket.socket) -> None:
        """Close our copy of a listener; its socket file goes too, unless a successor
        started by USR2 listens on the same one."""
        self.sockets.close(sock, self.handoff.state is Upgrade.UPGRADING, self.log)

    def preserved_fds(self) -> list[int]:
        """Descriptors that must survive daemonizing."""
        fds = [self.signals.read_fd, self.signals.write_fd]
        fds += [s.fileno() for s in self.generations.listeners()]
        fds += [f.fd for f in self.generations.log_files.values() if f.fd > 2]
        return fds

    # -- the loop -------------------------------------------------------------------
    def run(self) -> int:
        self.pid = self.pool.master_pid = os.getpid()  # daemonizing changes it
        self.notify.started(self.pid)
        self.signals.install(MASTER_SIGNALS)
        tls = self.generation.tls
        for sock in self.generation.listeners:
            secure = tls is not None and sock.fileno() in tls.secure_fds
            self.log.info(f"listening on {describe(sock, secure)}")
        if tls is not None:  # once at start: can the kernel encrypt bodies (sendfile)?
            why = tls.ktls.reason
            self.log.info(f"TLS in userspace: {why}" if why is not None else
                          "kTLS: asked of OpenSSL; file bodies use sendfile on each "
                          "connection whose socket the kernel encrypts (TLS_TX)")
        self.log.info(
            f"master started (pid {self.pid}), generation 1 with {self.generation.target} workers"
        )
        set_title(f"forkserver: master [{self.generation.config.source or 'defaults'}]")
        if self.handoff.state is not Upgrade.TAKING_OVER:  # recorded once it serves
            self.outcomes.report("start", True, f"master {self.pid} started")
        while self.turn():
            # While a generation boots, look at the scoreboard often so readiness (and
            # the retirement of the old generation) is not delayed by a whole turn.
            timeout = BOOT_POLL_SECONDS if self.state in BOOTING else LOOP_SECONDS
            for signum in self.wait_for_signals(timeout):
                self.dispatch(signum)
        return self.exit()

    def turn(self) -> bool:
        """One turn of the loop, without waiting; False once the master may exit."""
        self.publish()
        self.reap()
        now = self.processes.monotonic()
        if self.state in ENDING:
            if not self.pool.workers:
                return False
            if now >= self.stop_deadline:
                self.pool.kill_all(signal.SIGKILL)
                self.stop_deadline = now + FAST_STOP_SECONDS
            return True
        self.pool.check_heartbeats(now)
        self.pool.enforce_retirement(now)
        self.pool.maintain(now)
        if self.state is State.SERVING:  # not while a reload's generation boots
            self.memory.check(now)
        self.advance_generations()
        for old in self.generations.finished(self.pool.has_workers):
            self.generations.forget(old, self.close_listener)
        if self.state in UP:
            self.notify.ping(now, self.pool.healthy)
        return True

    def exit(self) -> int:
        self.log.info("master exiting")
        if self.pidfile is not None:
            if self.pidfile.is_ours():  # after an upgrade both files are the successor's
                remove_outcome(self.pidfile.path)
            self.pidfile.release()
        return 0

    def publish(self) -> None:
        """The master's part of the scoreboard, read by the status endpoint."""
        generation = self.generation
        self.scoreboard.publish_master(
            self.pid, generation.number, generation.config.workers, generation.target,
            self.start_time,
        )

    def reap(self) -> None:
        """Collect every child that ended: a worker, or the successor of an upgrade."""
        while True:
            try:
                pid, status = self.processes.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.handoff.successor:
                self.handoff.successor_exited(status, self.log, self.outcomes)
                continue
            record = self.pool.reaped(pid, status, stopping=self.state in ENDING)
            if record is not None:
                self.memory.forget(pid, self.processes.monotonic())
                self.outcomes.generation_failed(record, status, self.generations.all)

    def advance_generations(self) -> None:
        """When the newest generation serves in full, retire every older one."""
        if self.state not in BOOTING:
            return
        generation = self.generation
        serving = self.pool.serving(generation)
        if serving < generation.target:
            return
        generation.ready = True
        self.outcomes.generation_ready(generation, serving)
        retired = self.pool.retire_older(generation)
        for sock in self.generations.abandoned_listeners():
            # The retiring workers accept what is already queued and then close theirs,
            # so a client of an address given up by a reload is refused cleanly from now.
            self.close_listener(sock)
        if self.state is State.STARTING:
            self.state = State.SERVING
            self.log.info(f"{serving} workers serving")
            self.announce_ready()
        else:
            self.state = State.SERVING
            self.log.info(
                f"reload: generation {generation.number} serving with {serving} workers; "
                f"retiring {retired} old workers"
            )
            self.notify.reload_done()

    def announce_ready(self) -> None:
        if self.handoff.state is Upgrade.TAKING_OVER:
            self.handoff.take_over(self.pid, self.pidfile, self.log, self.outcomes)
        self.notify.ready(self.processes.monotonic())
        if self.on_ready is not None:
            self.on_ready()
            self.on_ready = None

    # -- signals ----------------------------------------------------------------------
    def wait_for_signals(self, timeout: float) -> bytes:
        with contextlib.suppress(InterruptedError):
            select.select([self.signals.read_fd], [], [], timeout)
        return self.signals.received()

    def dispatch(self, signum: int) -> None:
        handler: Callable[[], None] | None = {
            signal.SIGHUP: self.handle_hup,
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_quit,
            signal.SIGQUIT: self.handle_quit,
            signal.SIGTTIN: self.handle_ttin,
            signal.SIGTTOU: self.handle_ttou,
            signal.SIGUSR1: self.handle_usr1,
            signal.SIGUSR2: self.handle_usr2,
        }.get(signal.Signals(signum))
        if handler is not None:
            handler()

    def handle_term(self) -> None:
        """TERM: graceful stop; workers drain for up to timeouts.graceful."""
        if self.state in ENDING:
            return
        self.log.info("TERM received: graceful stop")
        if self.handoff.state is not Upgrade.UPGRADING:
            # After an upgrade the TERM comes from our successor, which systemd already
            # knows as MAINPID: a STOPPING=1 from us would stop the whole service.
            self.notify.stopping()
        self.state = State.STOPPING
        graceful = max(g.config.timeouts.graceful for g in self.generations.all)
        self.stop_deadline = self.processes.monotonic() + graceful + KILL_MARGIN_SECONDS
        self.close_listeners()
        self.pool.kill_all(signal.SIGTERM)

    def handle_quit(self) -> None:
        """INT, QUIT: fast stop; workers exit at once, SIGKILL after a second."""
        if self.state is State.QUITTING:
            return
        self.log.info("fast stop")
        self.notify.stopping()
        self.state = State.QUITTING
        self.stop_deadline = self.processes.monotonic() + FAST_STOP_SECONDS
        self.close_listeners()
        self.pool.kill_all(signal.SIGQUIT)

    def close_listeners(self) -> None:
        # New connections are refused at once instead of waiting in a backlog that no
        # worker will accept from again.
        for sock in self.generations.listeners():
            self.close_listener(sock)

    def handle_ttin(self) -> None:
        """TTIN: one worker more, up to MAX_WORKERS."""
        if self.state not in LIVE:
            return
        if self.generation.target >= MAX_WORKERS:
            self.log.warning(f"TTIN refused: {self.generation.target} workers is the most "
                             f"there is room for (MAX_WORKERS {MAX_WORKERS})")
            return
        self.generation.target += 1
        self.log.info(f"TTIN: {self.generation.target} workers wanted")

    def handle_ttou(self) -> None:
        """TTOU: one worker fewer, never fewer than one; the youngest retires."""
        if self.state not in LIVE or self.generation.target <= 1:
            return
        self.generation.target -= 1
        self.log.info(f"TTOU: {self.generation.target} workers wanted")
        self.pool.scale_down(self.generation)

    def handle_usr1(self) -> None:
        """USR1: reopen the log files here, then in every worker."""
        self.generations.reopen_logs(self.log)
        self.log.info("log files reopened")
        self.pool.kill_all(signal.SIGUSR1)

    def handle_hup(self) -> None:
        """HUP: reload the file into a new generation, or keep the current one."""
        if self.state not in LIVE:
            return
        source = self.generation.config.source
        self.notify.reloading()
        self.log.info(f"HUP received: reloading {source or 'built-in defaults'}")
        try:
            self.reload(source)
        finally:
            if self.state is State.SERVING:  # refused: tell systemd the reload is over
                self.notify.reload_done()

    def reload(self, source: str | None) -> None:
        """Start a new generation from the file, or log why not and change nothing."""
        generation, refusal = reload_generation(
            source, start=self.start, generations=self.generations, sockets=self.sockets,
            socket_activated=self.socket_activated, close_listener=self.close_listener,
        )
        if generation is None:
            self.outcomes.reload_refused(refusal)
            return
        self.generations.add(generation)
        self.pool.restart_backoff()
        self.outcomes.reload_started(generation)  # done once it serves (advance_generations)
        if self.state is State.SERVING:
            self.state = State.RELOADING  # STARTING stays: nothing served before either

    def handle_usr2(self) -> None:
        """USR2: start a new master on our sockets; it retires us once it serves."""
        if self.state not in UP:
            return
        if self.handoff.state is Upgrade.UPGRADING:
            self.log.warning(
                f"upgrade already in progress (new master pid {self.handoff.successor})")
            return
        try:
            pid = self.handoff.begin(self.generation.listeners, self.start, self.pid,
                                     self.socket_activated)
        except OSError as exc:
            self.log.error(f"upgrade: cannot fork: {exc.strerror}")
            self.outcomes.report("upgrade", False, f"upgrade: cannot fork: {exc.strerror}")
            return
        self.log.info(f"USR2: upgrading; new master pid {pid}")
