"""The master process: supervises generations of workers.

Owns the worker table, generations, signals, respawn back-off, heartbeat checks,
reload, scaling, log reopening, graceful and fast stop, upgrade by re-exec, and its
part of the scoreboard (its own header, and why each worker ended). Must
never accept a connection or parse HTTP, and never imports the worker module: the
worker's entry function is handed in.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from forkserver.config import Config, environment_problems, load_config
from forkserver.errors import ConfigError, StartupError
from forkserver.listeners import (
    INHERIT_ENV,
    FileIdentity,
    bind_listener,
    describe,
    remove_socket_file,
    same_address,
    set_socket_permissions,
    socket_file_identity,
    unix_socket_path,
)
from forkserver.logs import AccessLog, ErrorLog, LogFile
from forkserver.scoreboard import Scoreboard, SlotState
from forkserver.service import (
    Pidfile,
    hand_over_logs,
    remove_outcome,
    sd_notify,
    set_title,
    watchdog_interval,
    write_outcome,
)
from forkserver.signals import SignalPipe

LOOP_SECONDS = 0.2  # longest sleep of the master loop: bounds respawn and readiness delay
BOOT_POLL_SECONDS = 0.02  # sleep while a generation boots, so readiness is seen promptly
HEALTHY_SECONDS = 5.0  # a worker that lived this long was not part of a crash loop
BACKOFF_FIRST = 0.5  # delay before the second quick respawn in a row
BACKOFF_CAP = 30.0  # longest delay between respawns of a crashing pool
ABORT_GRACE_SECONDS = 2.0  # SIGABRT → SIGKILL for a worker that missed its heartbeat
FAST_STOP_SECONDS = 1.0  # INT/QUIT: workers get this long before SIGKILL
KILL_MARGIN_SECONDS = 1.0  # after timeouts.graceful, before SIGKILL of a draining worker
UPGRADE_FROM_ENV = "FORKSERVER_UPGRADE_FROM"  # pid of the master we are replacing
SOCKET_ACTIVATED_ENV = "FORKSERVER_SOCKET_ACTIVATED"  # "1": inherited fds came from systemd
FRESH_HEARTBEAT_SECONDS = 2.0  # a worker that beat this recently is alive (it beats at 4 Hz)
STATUS_SECONDS = 5.0  # how often systemd's STATUS= is refreshed while serving
EXIT_CANNOT_START = 3  # a worker's exit status when it could not get ready to serve

_MASTER_SIGNALS = (
    signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
    signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD,
)


class WorkerMain(Protocol):
    def __call__(
        self, *, number: int, generation: int, slot: int, config: Config,
        listeners: list[socket.socket], scoreboard: Scoreboard, master_pid: int,
        error_log: ErrorLog, access_log: AccessLog, max_requests: int,
    ) -> int: ...


class Phase(Enum):
    STARTING = "starting"  # first generation booting
    SERVING = "serving"
    STOPPING = "stopping"  # graceful: workers drain
    QUITTING = "quitting"  # fast: workers exit at once


@dataclass(eq=False)
class Generation:
    number: int
    config: Config
    listeners: list[socket.socket]
    error_log: ErrorLog
    access_log: AccessLog
    target: int  # workers wanted (TTIN/TTOU move it; HUP resets it)
    ready: bool = False  # every wanted worker has reached SERVING once
    restarts: dict[int, int] = field(default_factory=dict)  # worker number → times replaced


@dataclass(eq=False)
class WorkerRecord:
    pid: int
    slot: int
    generation: Generation
    number: int
    started: float
    retiring: bool = False
    kill_at: float = 0.0  # monotonic deadline for SIGKILL once retiring or aborted
    aborted: bool = False
    retired_for: str = ""  # "reload" or "scale_down" once retiring
    max_requests: int = 0  # its recycling limit, jitter included (0 = never)


@dataclass
class StartInfo:
    """How this master was started, so an upgrade can start the same program."""

    argv: list[str]
    cwd: str
    overrides: dict[str, object] = field(default_factory=dict)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return f"killed by signal {name}"
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return f"exited with status {code}" + (
            " (could not start)" if code == EXIT_CANNOT_START else ""
        )
    return f"ended (wait status {status})"


class RecordingErrorLog(ErrorLog):
    """Writes like the error log it stands in for, and keeps the error lines."""

    def __init__(self, original: ErrorLog) -> None:
        super().__init__(original.file)
        self.threshold = original.threshold
        self.original = original
        self.errors: list[str] = []

    def log(self, level: str, message: str) -> None:
        if level == "error":
            self.errors.append(message)
        super().log(level, message)


class Master:
    def __init__(
        self,
        config: Config,
        listeners: list[socket.socket],
        worker_main: WorkerMain,
        start: StartInfo,
        pidfile: Pidfile | None = None,
        socket_activated: bool = False,
    ) -> None:
        self.worker_main = worker_main
        self.start = start
        self.pidfile = pidfile
        self.socket_activated = socket_activated
        self.pid = os.getpid()
        self.start_time = time.time()
        self.scoreboard = Scoreboard()
        self.log_files: dict[str, LogFile] = {}
        self.generation = self.make_generation(1, config, listeners)
        self.generations: list[Generation] = [self.generation]
        self.workers: dict[int, WorkerRecord] = {}
        self.phase = Phase.STARTING
        self.stop_deadline = 0.0
        self.crash_streak = 0
        self.next_spawn_at = 0.0
        self.upgrade_child = 0
        self.upgrade_from = int(os.environ.pop(UPGRADE_FROM_ENV, "0") or 0)
        self.pending_reload = 0  # the generation whose start `-s reload` waits for
        self.watchdog_interval = watchdog_interval(os.getpid())
        self.next_watchdog = 0.0
        self.next_status = 0.0
        self.on_ready: Callable[[], None] | None = None  # daemon mode: tell the launcher
        self.signals = SignalPipe()
        # Unix socket files this master removes when it stops listening on them. Not
        # systemd's: the .socket unit owns those.
        self.socket_files: dict[str, FileIdentity] = {}
        if not socket_activated:
            self.remember_socket_files(listeners)

    # -- logs and generations -----------------------------------------------------
    @property
    def log(self) -> ErrorLog:
        return self.generation.error_log

    def log_file(self, path: str) -> LogFile:
        if path not in self.log_files:
            self.log_files[path] = LogFile(path)
        return self.log_files[path]

    def make_generation(
        self, number: int, config: Config, listeners: list[socket.socket]
    ) -> Generation:
        error_log = ErrorLog(self.log_file(config.error_log), config.log_level)
        access_file = self.log_file(config.access_log) if config.access_log else None
        # A root master's workers run as config.user: they must be able to reopen.
        hand_over_logs([error_log.file.fd, access_file.fd if access_file else -1],
                       config.user, config.group)
        return Generation(
            number, config, listeners, error_log,
            AccessLog(access_file, config.access_log_format, error_log), config.workers,
        )

    def stop_listening_on_abandoned_addresses(self) -> None:
        """Close our copy of listeners the current generation no longer uses.

        The retiring workers accept what is already queued and then close theirs, so
        a client of an address given up by a reload is refused cleanly from then on,
        instead of waiting in a backlog nobody reads and being reset later.
        """
        keep = {id(sock) for sock in self.generation.listeners}
        for generation in self.generations:
            for sock in generation.listeners:
                if id(sock) not in keep:
                    self.close_listener(sock)

    def release_finished_generations(self) -> None:
        """Forget older generations whose last worker has gone."""
        for old in self.generations:
            if old is not self.generation and not any(
                w.generation is old for w in self.workers.values()
            ):
                self.forget_generation(old)

    def forget_generation(self, old: Generation) -> None:
        """Close what only a finished generation used: listeners and log files."""
        self.generations.remove(old)
        in_use = {s.fileno() for g in self.generations for s in g.listeners}
        for sock in old.listeners:
            if sock.fileno() not in in_use:
                self.close_listener(sock)
        paths = {g.config.error_log for g in self.generations}
        paths |= {g.config.access_log for g in self.generations if g.config.access_log}
        for path in list(self.log_files):
            if path not in paths:
                self.log_files.pop(path).close()

    # -- unix socket files --------------------------------------------------------
    def remember_socket_files(self, listeners: list[socket.socket]) -> None:
        for sock in listeners:
            path = unix_socket_path(sock)
            identity = socket_file_identity(path) if path else None
            if path and identity:
                self.socket_files[path] = identity

    def close_listener(self, sock: socket.socket) -> None:
        """Close our copy of a listener; a unix socket's file goes with it.

        Not while an upgrade is under way: the new master listens on the same socket
        and file, and removes the file when it stops. Only our own file is removed (a
        server started after we stopped listening may have replaced it).
        """
        path = unix_socket_path(sock)
        sock.close()
        identity = self.socket_files.pop(path, None) if path else None
        if path and identity and not self.upgrade_child and remove_socket_file(path, identity):
            self.log.info(f"removed socket file {path}")

    # -- the loop -----------------------------------------------------------------
    def preserved_fds(self) -> list[int]:
        """Descriptors that must survive daemonizing."""
        fds = [self.signals.read_fd, self.signals.write_fd]
        fds += [s.fileno() for g in self.generations for s in g.listeners]
        fds += [f.fd for f in self.log_files.values() if f.fd > 2]
        return fds

    def run(self) -> int:
        self.pid = os.getpid()  # daemonizing changes it after __init__
        self.watchdog_interval = watchdog_interval(self.pid)
        self.install_signals()
        for sock in self.generation.listeners:
            self.log.info(f"listening on {describe(sock)}")
        self.log.info(
            f"master started (pid {self.pid}), generation 1 with {self.generation.target} workers"
        )
        set_title(f"forkserver: master [{self.start_label()}]")
        if not self.upgrade_from:  # an upgrade's outcome is recorded once it serves
            self.report("start", True, f"master {self.pid} started")
        while True:
            self.publish()
            self.reap()
            now = time.monotonic()
            if self.phase in (Phase.STOPPING, Phase.QUITTING):
                if not self.workers:
                    break
                if now >= self.stop_deadline:
                    self.kill_all(signal.SIGKILL)
                    self.stop_deadline = now + FAST_STOP_SECONDS
            else:
                self.check_heartbeats(now)
                self.enforce_retirement(now)
                self.maintain_pool(now)
                self.advance_generations()
                self.release_finished_generations()
                self.ping_watchdog(now)
            # While a generation boots, look at the scoreboard often so readiness (and
            # the retirement of the old generation) is not delayed by a whole turn.
            booting = not self.generation.ready and self.phase != Phase.QUITTING
            for signum in self.wait_for_signals(BOOT_POLL_SECONDS if booting else LOOP_SECONDS):
                self.dispatch(signum)
        return self.exit()

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

    def start_label(self) -> str:
        return self.generation.config.source or "defaults"

    # -- signals ------------------------------------------------------------------
    def install_signals(self) -> None:
        self.signals.install(_MASTER_SIGNALS)

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
        if self.phase in (Phase.STOPPING, Phase.QUITTING):
            return
        self.log.info("TERM received: graceful stop")
        if not self.upgrade_child:
            # After an upgrade the TERM comes from our successor, which systemd already
            # knows as MAINPID: a STOPPING=1 from us would stop the whole service.
            sd_notify("STOPPING=1")
        self.phase = Phase.STOPPING
        graceful = max(g.config.timeouts.graceful for g in self.generations)
        self.stop_deadline = time.monotonic() + graceful + KILL_MARGIN_SECONDS
        self.close_listeners()
        self.kill_all(signal.SIGTERM)

    def handle_quit(self) -> None:
        if self.phase == Phase.QUITTING:
            return
        self.log.info("fast stop")
        sd_notify("STOPPING=1")
        self.phase = Phase.QUITTING
        self.stop_deadline = time.monotonic() + FAST_STOP_SECONDS
        self.close_listeners()
        self.kill_all(signal.SIGQUIT)

    def handle_ttin(self) -> None:
        if self.phase not in (Phase.STARTING, Phase.SERVING):
            return
        self.generation.target += 1
        self.log.info(f"TTIN: {self.generation.target} workers wanted")

    def handle_ttou(self) -> None:
        if self.phase not in (Phase.STARTING, Phase.SERVING) or self.generation.target <= 1:
            return
        self.generation.target -= 1
        self.log.info(f"TTOU: {self.generation.target} workers wanted")
        current = [w for w in self.workers.values()
                   if w.generation is self.generation and not w.retiring]
        if len(current) > self.generation.target:
            self.retire(max(current, key=lambda w: w.started), "scale_down")

    def handle_usr1(self) -> None:
        for log_file in self.log_files.values():
            try:
                log_file.reopen()
            except OSError as exc:
                self.log.error(f"cannot reopen {log_file.path}: {exc.strerror}")
        config = self.generation.config
        try:
            hand_over_logs([f.fd for f in self.log_files.values()], config.user, config.group)
        except (OSError, StartupError) as exc:
            self.log.error(f"cannot hand the log files to {config.user}: {exc}")
        self.log.info("log files reopened")
        self.kill_all(signal.SIGUSR1)

    def handle_hup(self) -> None:
        if self.phase not in (Phase.STARTING, Phase.SERVING):
            return
        source = self.generation.config.source
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        self.log.info(f"HUP received: reloading {source or 'built-in defaults'}")
        try:
            self.reload_and_report(source)
        finally:
            if self.phase == Phase.SERVING and self.generation.ready:
                sd_notify("READY=1\n" + self.status_line())

    def reload_and_report(self, source: str | None) -> None:
        """Reload, and record a refusal for `-s reload`; success is recorded later,
        when the new generation serves (advance_generations).

        The error lines reload() logs are the reason; they are collected by lending
        the current generation a recording error log for the duration, so reload()
        itself needs no reporting code.
        """
        old = self.generation
        recorder = RecordingErrorLog(old.error_log)
        old.error_log = recorder
        try:
            self.reload(source)
        finally:
            old.error_log = recorder.original
        if self.generation is old:
            reason = "; ".join(recorder.errors) or "reload failed (see the error log)"
            self.report("reload", False, reason)
        else:
            self.pending_reload = self.generation.number

    def reload(self, source: str | None) -> None:
        """Start a new generation from the file, or log why not and change nothing.

        No reload may end the master: whatever a file or the system does to the
        loading and preparing below (a bug of ours included) is an Exception logged
        as "reload failed", and the old generation goes on serving. Only what is not
        an Exception (SystemExit, KeyboardInterrupt) goes through.
        """
        old = self.generation
        try:
            self.start_generation(source)
        except Exception as exc:
            where = traceback.format_exc().rstrip().replace("\n", " | ")
            self.log.error(
                f"reload failed: unexpected {type(exc).__name__}: {exc}; still serving "
                f"generation {old.number} ({where})"
            )

    def start_generation(self, source: str | None) -> None:
        old = self.generation
        try:
            # Relative command-line paths mean what they meant at start-up, even after
            # daemonizing changed the working directory to /.
            config = load_config(source, self.start.overrides, cwd=self.start.cwd)
            # What --check and start-up refuse (docroot unreadable, log directory
            # missing, unknown user) is refused by a reload too, before anything changes.
            problems = environment_problems(config)
        except ConfigError as exc:
            problems = exc.problems
        if problems:
            for problem in problems:
                self.log.error(f"reload: {problem}")
            self.log.error(f"reload failed; still serving generation {old.number}")
            return
        listeners = old.listeners
        if not self.socket_activated and not all(
            same_address(s, config.host, config.port) for s in old.listeners
        ):
            try:
                listeners = [bind_listener(config.host, config.port, config.backlog,
                                           config.socket_mode, config.socket_owner)]
            except StartupError as exc:
                self.log.error(f"reload: {exc}; still serving generation {old.number}")
                return
            self.remember_socket_files(listeners)
            self.log.info(f"reload: now listening on {describe(listeners[0])}")
        elif config.socket_mode or config.socket_owner:
            self.update_socket_permissions(config)
        try:
            generation = self.make_generation(old.number + 1, config, listeners)
        except BaseException as exc:
            # A listener bound for this reload serves nobody now: close it (and its
            # socket file), or the new port would stay bound with no worker behind it.
            for sock in listeners:
                if sock not in old.listeners:
                    self.close_listener(sock)
            if not isinstance(exc, OSError):
                raise
            self.log.error(f"reload: cannot open log file: {exc.strerror}; still serving")
            return
        changes = describe_changes(old.config, config)
        self.generation = generation
        self.generations.append(generation)
        self.log.info(
            f"reload: generation {generation.number} starting with {generation.target} "
            f"workers ({changes or 'no changes'}); generation {old.number} serves until it is ready"
        )
        self.next_spawn_at = 0.0
        self.crash_streak = 0

    def update_socket_permissions(self, config: Config) -> None:
        """A reload that keeps a unix socket applies its (possibly new) mode and owner."""
        for sock in self.generation.listeners:
            path = unix_socket_path(sock)
            if path is None or path not in self.socket_files:
                continue
            try:
                set_socket_permissions(path, config.socket_mode, config.socket_owner)
            except (OSError, StartupError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                self.log.error(f"reload: cannot set the mode or owner of {path}: {reason}")

    def handle_usr2(self) -> None:
        if self.phase != Phase.SERVING:
            return
        if self.upgrade_child:
            self.log.warning(f"upgrade already in progress (new master pid {self.upgrade_child})")
            return
        listeners = self.generation.listeners
        for sock in listeners:
            sock.set_inheritable(True)
        env = dict(os.environ)
        env[INHERIT_ENV] = ",".join(str(s.fileno()) for s in listeners)
        env[UPGRADE_FROM_ENV] = str(self.pid)
        if self.socket_activated:
            env[SOCKET_ACTIVATED_ENV] = "1"
        argv = [sys.executable, "-m", "forkserver", *self.start.argv]
        try:
            pid = os.fork()
        except OSError as exc:
            self.log.error(f"upgrade: cannot fork: {exc.strerror}")
            self.report("upgrade", False, f"upgrade: cannot fork: {exc.strerror}")
            return
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                os.chdir(self.start.cwd)
                if "WATCHDOG_PID" in env:  # the watchdog follows MAINPID to the new master
                    env["WATCHDOG_PID"] = str(os.getpid())
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(1)
        for sock in listeners:
            sock.set_inheritable(False)
        self.upgrade_child = pid
        self.log.info(f"USR2: upgrading; new master pid {pid}")

    # -- workers ------------------------------------------------------------------
    def spawn_worker(self, generation: Generation, number: int) -> None:
        slot = self.scoreboard.claim(generation.number, generation.restarts.get(number, 0))
        if slot < 0:
            self.log.error("scoreboard full; cannot start another worker")
            return
        config = generation.config
        max_requests = 0
        if config.max_requests:
            max_requests = config.max_requests + random.randint(0, config.max_requests_jitter)
        # Signals stay blocked from before fork() until the worker has installed its
        # own handlers (worker.install_signals unblocks them), so a TERM sent to a
        # booting worker is delivered late instead of being swallowed by ours.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self.scoreboard.release(slot)
            self.log.error(f"cannot fork a worker: {exc.strerror}")
            self.note_crash(time.monotonic())
            return
        if pid == 0:
            self.become_worker(generation, number, slot, max_requests)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.scoreboard.set_pid(slot, pid)
        self.workers[pid] = WorkerRecord(
            pid, slot, generation, number, time.monotonic(), max_requests=max_requests
        )
        self.log.debug(f"worker {number} of generation {generation.number} started: pid {pid}")

    def become_worker(
        self, generation: Generation, number: int, slot: int, max_requests: int
    ) -> None:
        """In the child: drop what belongs to the master, run the worker, never return."""
        code = 1
        try:
            self.signals.release()
            if self.pidfile is not None:
                self.pidfile.forget()
            for other in self.generations:
                if other is not generation:
                    for sock in other.listeners:
                        if sock not in generation.listeners:
                            sock.close()
            set_title(f"forkserver: worker {number} (generation {generation.number})")
            code = self.worker_main(
                number=number, generation=generation.number, slot=slot,
                config=generation.config, listeners=generation.listeners,
                scoreboard=self.scoreboard, master_pid=self.pid,
                error_log=generation.error_log, access_log=generation.access_log,
                max_requests=max_requests,
            )
        except StartupError as exc:
            generation.error_log.error(f"worker cannot start: {exc}")
            code = EXIT_CANNOT_START
        except BaseException:
            text = traceback.format_exc().rstrip().replace("\n", " | ")
            generation.error_log.error(f"worker crashed: {text}")
        finally:
            os._exit(code)

    def maintain_pool(self, now: float) -> None:
        if now < self.next_spawn_at:
            return
        generation = self.generation
        current = [w for w in self.workers.values()
                   if w.generation is generation and not w.retiring]
        taken = {w.number for w in current}
        missing = generation.target - len(current)
        number = 1
        while missing > 0:
            if number not in taken:
                self.spawn_worker(generation, number)
                missing -= 1
            number += 1

    def advance_generations(self) -> None:
        """When the newest generation serves in full, retire every older one."""
        generation = self.generation
        if generation.ready:
            return
        serving = [
            w for w in self.workers.values()
            if w.generation is generation and not w.retiring
            and self.scoreboard.read(w.slot).state == SlotState.SERVING
        ]
        if len(serving) < generation.target:
            return
        generation.ready = True
        self.report_generation_ready(generation, len(serving))
        old = [w for w in self.workers.values() if w.generation is not generation]
        for record in old:
            self.retire(record, "reload")
        self.stop_listening_on_abandoned_addresses()
        if self.phase == Phase.STARTING:
            self.phase = Phase.SERVING
            self.log.info(f"{len(serving)} workers serving")
            self.announce_ready()
        else:
            self.log.info(
                f"reload: generation {generation.number} serving with {len(serving)} workers; "
                f"retiring {len(old)} old workers"
            )
            sd_notify("READY=1\n" + self.status_line())

    def announce_ready(self) -> None:
        if self.upgrade_from:
            if self.pidfile is not None:
                try:
                    self.pidfile.write(self.pid)
                except StartupError as exc:
                    self.log.error(str(exc))
            sd_notify(f"MAINPID={self.pid}")
            self.report("upgrade", True, f"new master {self.pid} serving")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.upgrade_from, signal.SIGTERM)
            self.log.info(f"upgrade: serving; asked the old master {self.upgrade_from} to retire")
            self.upgrade_from = 0
        sd_notify("READY=1\n" + self.status_line())
        self.next_status = time.monotonic() + STATUS_SECONDS
        if self.on_ready is not None:
            self.on_ready()
            self.on_ready = None

    # -- outcomes for `forkserver -s reload|upgrade` (service.write_outcome) -----------
    def report(self, action: str, ok: bool, message: str) -> None:
        if self.pidfile is not None:
            write_outcome(self.pidfile.path, action, ok, message)

    def report_generation_ready(self, generation: Generation, serving: int) -> None:
        if self.pending_reload and generation.number >= self.pending_reload:
            self.pending_reload = 0
            self.report("reload", True,
                        f"generation {generation.number} serving with {serving} workers")

    def report_generation_failure(self, record: WorkerRecord, status: int) -> None:
        """A worker of the reload's new generation died before that generation served:
        the reload has failed for now (the old generation goes on; the master keeps
        retrying with back-off, and a later success is not waited for by anyone)."""
        generation = record.generation
        if generation.number != self.pending_reload or generation.ready or record.retiring:
            return
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return
        self.pending_reload = 0
        previous = [g.number for g in self.generations if g.ready]
        still = f"; still serving generation {previous[-1]}" if previous else ""
        self.report("reload", False,
                    f"generation {generation.number} cannot start: worker {record.pid} "
                    f"{describe_status(status)} (the error log says why){still}")

    def status_line(self) -> str:
        live = [self.scoreboard.read(w.slot) for w in self.workers.values()]
        serving = sum(1 for s in live if s.state == SlotState.SERVING)
        requests = sum(s.requests for s in live)
        return (
            f"STATUS=generation {self.generation.number}, {serving} workers serving, "
            f"{requests} requests served by live workers"
        )

    def retire(self, record: WorkerRecord, why: str) -> None:
        if record.retiring:
            return
        record.retiring = True
        record.retired_for = why
        graceful = record.generation.config.timeouts.graceful
        record.kill_at = time.monotonic() + graceful + KILL_MARGIN_SECONDS
        self.signal_worker(record, signal.SIGTERM)

    def enforce_retirement(self, now: float) -> None:
        for record in list(self.workers.values()):
            if (record.retiring or record.aborted) and now >= record.kill_at:
                self.log.warning(f"worker {record.pid} did not exit in time; SIGKILL")
                self.signal_worker(record, signal.SIGKILL)
                record.kill_at = now + ABORT_GRACE_SECONDS

    def check_heartbeats(self, now: float) -> None:
        for record in list(self.workers.values()):
            if record.aborted:
                continue
            slot = self.scoreboard.read(record.slot)
            limit = record.generation.config.timeouts.worker
            silent = now - slot.heartbeat
            if silent > limit:
                self.log.error(
                    f"worker {record.pid} silent for {silent:.1f}s "
                    f"(timeouts.worker {limit:g}s); SIGABRT"
                )
                record.aborted = True
                record.kill_at = now + ABORT_GRACE_SECONDS
                self.signal_worker(record, signal.SIGABRT)

    def signal_worker(self, record: WorkerRecord, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signum)

    def kill_all(self, signum: int) -> None:
        for record in list(self.workers.values()):
            self.signal_worker(record, signum)

    def close_listeners(self) -> None:
        # New connections are refused at once instead of waiting in a backlog that no
        # worker will accept from again.
        for generation in self.generations:
            for sock in generation.listeners:
                self.close_listener(sock)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.upgrade_child:
                self.upgrade_child = 0
                self.log.error(
                    f"upgrade failed: new master {pid} {describe_status(status)}; still serving"
                )
                self.report("upgrade", False, f"new master {pid} {describe_status(status)} "
                            f"(its error log says why); still serving")
                continue
            record = self.workers.pop(pid, None)
            if record is None:
                continue  # not ours (we may be PID 1 in a container)
            reason = self.restart_reason(record, status)
            if reason is not None and not record.retiring:
                numbers = record.generation.restarts
                numbers[record.number] = numbers.get(record.number, 0) + 1
            self.scoreboard.release(record.slot, reason)
            self.on_worker_exit(record, status)
            self.report_generation_failure(record, status)

    def restart_reason(self, record: WorkerRecord, status: int) -> str | None:
        """Why a worker ended, as counted by the status endpoint; None if it was asked to.

        Stopping and scaling down end workers for good; everything else makes way
        for a replacement (a reload's new generation, or maintain_pool's respawn).
        """
        if self.phase in (Phase.STOPPING, Phase.QUITTING):
            return None
        if record.aborted:
            return "heartbeat_timeout"
        if record.retiring:
            return "reload" if record.retired_for == "reload" else None
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            served = self.scoreboard.read(record.slot).requests
            if record.max_requests and served >= record.max_requests:
                return "max_requests"
            return "exit"  # drained on a signal sent to the worker itself
        return "crash"

    def on_worker_exit(self, record: WorkerRecord, status: int) -> None:
        now = time.monotonic()
        how = describe_status(status)
        name = f"worker {record.pid} (generation {record.generation.number})"
        if record.retiring or self.phase in (Phase.STOPPING, Phase.QUITTING):
            self.log.debug(f"{name} {how}")
            return
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if clean:
            self.log.info(f"{name} {how}; replacing it")
            return
        level = "error"
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL and not record.aborted:
            how += " (out of memory, or killed by an operator)"
        if now - record.started < HEALTHY_SECONDS:
            self.note_crash(now)
            delay = max(0.0, self.next_spawn_at - now)
            self.log.log(level, f"{name} {how}; respawning in {delay:.1f}s")
        else:
            self.crash_streak = 0
            self.log.log(level, f"{name} {how}; replacing it")

    def note_crash(self, now: float) -> None:
        """Exponential back-off for a pool whose workers die soon after they start."""
        self.crash_streak += 1
        if self.crash_streak >= 2:
            delay = min(BACKOFF_FIRST * 2 ** (self.crash_streak - 2), BACKOFF_CAP)
            self.next_spawn_at = max(self.next_spawn_at, now + delay)

    def ping_watchdog(self, now: float) -> None:
        """WATCHDOG=1 while healthy (STATUS= rides along), and STATUS= every few seconds.

        Healthy: serving, and at least one worker has beaten its heartbeat lately. A
        pool stuck in a crash loop or wedged as a whole stops the pings, so systemd's
        WatchdogSec= restarts the service; a hung master stops them by itself.
        """
        if self.phase != Phase.SERVING:
            return
        if self.watchdog_interval and now >= self.next_watchdog and self.healthy(now):
            sd_notify("WATCHDOG=1\n" + self.status_line())
            self.next_watchdog = now + self.watchdog_interval
            self.next_status = now + STATUS_SECONDS
        elif now >= self.next_status:
            sd_notify(self.status_line())
            self.next_status = now + STATUS_SECONDS

    def healthy(self, now: float) -> bool:
        for record in self.workers.values():
            slot = self.scoreboard.read(record.slot)
            if slot.state == SlotState.SERVING and now - slot.heartbeat < FRESH_HEARTBEAT_SECONDS:
                return True
        return False


def describe_changes(old: Config, new: Config) -> str:
    """``workers 2→3, docroot /a→/b`` for the keys that differ."""
    changes = []
    for name in old.__dataclass_fields__:
        if name == "source":
            continue
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            changes.append(f"{name} {before}→{after}")
    return ", ".join(changes)

