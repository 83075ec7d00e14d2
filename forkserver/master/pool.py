"""The worker pool: spawning, retiring, reaping and replacing workers.

Owns the worker records, forking a worker (and, in the child, handing it its
WorkerSpec), filling the current generation up to its target with the crash
back-off, retiring (SIGTERM, then SIGKILL at a deadline), the heartbeat check
(SIGABRT, then SIGKILL), and what a reaped worker's end means (restarts.py's
table). Must not handle signals sent to the master, reload or upgrade
(supervisor.py, reload.py, upgrade.py), and never imports the worker package: the
worker's entry function is handed in.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from forkserver.errors import StartupError
from forkserver.logs import ErrorLog
from forkserver.master.generations import Generation, Generations
from forkserver.master.process import (
    EXIT_CANNOT_START,
    MASTER_SIGNALS,
    ProcessOps,
    describe_status,
)
from forkserver.master.restarts import RESTARTS, classify
from forkserver.protect.clients import ClientTable
from forkserver.scoreboard import Scoreboard, SlotState
from forkserver.service import set_title
from forkserver.workerspec import WorkerMain, WorkerSpec

HEALTHY_SECONDS = 5.0  # a worker that lived this long was not part of a crash loop
BACKOFF_FIRST = 0.5  # delay before the second quick respawn in a row
BACKOFF_CAP = 30.0  # longest delay between respawns of a crashing pool
ABORT_GRACE_SECONDS = 2.0  # SIGABRT → SIGKILL for a worker that missed its heartbeat
KILL_MARGIN_SECONDS = 1.0  # after timeouts.graceful, before SIGKILL of a draining worker
FRESH_HEARTBEAT_SECONDS = 2.0  # a worker that beat this recently is alive (it beats at 4 Hz)


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
    retired_for: str = ""  # "reload", "scale_down" or "memory" once retiring
    max_requests: int = 0  # its recycling limit, jitter included (0 = never)


def backoff_delay(streak: int) -> float:
    """Delay before a respawn after ``streak`` quick deaths in a row: 0, 0.5, 1, 2, … 30 s."""
    if streak < 2:
        return 0.0
    return min(BACKOFF_FIRST * 2.0 ** (streak - 2), BACKOFF_CAP)


class Pool:
    def __init__(
        self, generations: Generations, scoreboard: Scoreboard, processes: ProcessOps,
        worker_main: WorkerMain, leave_master: Callable[[], None],
    ) -> None:
        self.generations = generations
        self.scoreboard = scoreboard
        self.processes = processes
        self.worker_main = worker_main
        self.leave_master = leave_master  # in a forked child: drop the master's own fds
        self.master_pid = os.getpid()
        self.workers: dict[int, WorkerRecord] = {}
        self.crash_streak = 0
        self.next_spawn_at = 0.0
        # SPEC §9's per-client counts, shared by every worker: made before any fork,
        # a column per live worker (given at spawn, cleared when it is reaped).
        self.clients = ClientTable()

    @property
    def log(self) -> ErrorLog:
        return self.generations.current.error_log

    def of(self, generation: Generation) -> list[WorkerRecord]:
        """The workers of ``generation`` that are not retiring."""
        return [w for w in self.workers.values()
                if w.generation is generation and not w.retiring]

    def has_workers(self, generation: Generation) -> bool:
        return any(w.generation is generation for w in self.workers.values())

    def serving(self, generation: Generation) -> int:
        """How many of the generation's (non-retiring) workers have reached SERVING."""
        return sum(1 for w in self.of(generation)
                   if self.scoreboard.read(w.slot).state == SlotState.SERVING)

    # -- spawning -------------------------------------------------------------------
    def restart_backoff(self) -> None:
        """A new generation starts with a clean slate: spawn at once."""
        self.next_spawn_at = 0.0
        self.crash_streak = 0

    def maintain(self, now: float) -> None:
        """Fill the current generation up to its target, unless backing off."""
        if now < self.next_spawn_at:
            return
        generation = self.generations.current
        current = self.of(generation)
        taken = {w.number for w in current}
        missing = generation.target - len(current)
        number = 1
        while missing > 0:
            if number not in taken:
                self.spawn(generation, number)
                missing -= 1
            number += 1

    def spawn(self, generation: Generation, number: int) -> int:
        """Fork worker ``number`` of ``generation``; its pid, or 0 if it could not start."""
        slot = self.scoreboard.claim(generation.number, generation.restarts.get(number, 0))
        if slot < 0:
            self.log.error("scoreboard full; cannot start another worker")
            return 0
        self.clients.assign(slot)
        config = generation.config
        max_requests = 0
        if config.max_requests:
            max_requests = config.max_requests + random.randint(0, config.max_requests_jitter)
        # Signals stay blocked from before fork() until the worker has installed its
        # own handlers (worker.install_signals unblocks them), so a TERM sent to a
        # booting worker is delivered late instead of being swallowed by ours.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        # The worker inherits every object of the master's frozen: its collector never
        # walks them, so it never writes their GC headers and the pages stay shared
        # with the master (copy-on-write; the gc.freeze documentation's recipe). The
        # master unfreezes at once, so its own garbage (reloads) is still collected.
        gc.freeze()
        try:
            pid = self.processes.fork()
        except OSError as exc:
            gc.unfreeze()
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self.scoreboard.release(slot)
            self.clients.release(slot)
            self.log.error(f"cannot fork a worker: {exc.strerror}")
            self.note_crash(self.processes.monotonic())
            return 0
        if pid != 0:
            gc.unfreeze()
        if pid == 0:
            self.become_worker(WorkerSpec(
                number, generation.number, slot, config, generation.listeners,
                self.scoreboard, self.master_pid, generation.error_log,
                generation.access_log, max_requests, generation.tls,
                clients=self.clients,
            ))
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.scoreboard.set_pid(slot, pid)
        self.workers[pid] = WorkerRecord(
            pid, slot, generation, number, self.processes.monotonic(),
            max_requests=max_requests,
        )
        self.log.debug(f"worker {number} of generation {generation.number} started: pid {pid}")
        return pid

    def become_worker(self, spec: WorkerSpec) -> None:
        """In the child: drop what belongs to the master, run the worker, never return."""
        code = 1
        try:
            self.leave_master()
            for other in self.generations.all:
                if other.number != spec.generation:
                    for sock in other.listeners:
                        if sock not in spec.listeners:
                            sock.close()
            set_title(f"forkserver: worker {spec.number} (generation {spec.generation})")
            code = self.worker_main(spec)
        except StartupError as exc:
            spec.error_log.error(f"worker cannot start: {exc}")
            code = EXIT_CANNOT_START
        except BaseException:
            text = traceback.format_exc().rstrip().replace("\n", " | ")
            spec.error_log.error(f"worker crashed: {text}")
        finally:
            os._exit(code)

    # -- retiring and killing ---------------------------------------------------------
    def retire(self, record: WorkerRecord, why: str) -> None:
        """SIGTERM (drain), with a SIGKILL deadline of timeouts.graceful + 1 s."""
        if record.retiring:
            return
        record.retiring = True
        record.retired_for = why
        graceful = record.generation.config.timeouts.graceful
        record.kill_at = self.processes.monotonic() + graceful + KILL_MARGIN_SECONDS
        self.signal(record, signal.SIGTERM)

    def retire_older(self, generation: Generation) -> int:
        """Retire every worker of an older generation; how many there were."""
        old = [w for w in self.workers.values() if w.generation is not generation]
        for record in old:
            self.retire(record, "reload")
        return len(old)

    def scale_down(self, generation: Generation) -> None:
        """TTOU: retire the youngest worker beyond the generation's target."""
        current = self.of(generation)
        if len(current) > generation.target:
            self.retire(max(current, key=lambda w: w.started), "scale_down")

    def enforce_retirement(self, now: float) -> None:
        for record in list(self.workers.values()):
            if (record.retiring or record.aborted) and now >= record.kill_at:
                self.log.warning(f"worker {record.pid} did not exit in time; SIGKILL")
                self.signal(record, signal.SIGKILL)
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
                self.signal(record, signal.SIGABRT)

    def signal(self, record: WorkerRecord, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.processes.kill(record.pid, signum)

    def kill_all(self, signum: int) -> None:
        for record in list(self.workers.values()):
            self.signal(record, signum)

    # -- reaping --------------------------------------------------------------------
    def reaped(self, pid: int, status: int, stopping: bool) -> WorkerRecord | None:
        """Account for a worker that ended: the scoreboard, the log, the back-off.

        None if ``pid`` was not one of our workers (we may be PID 1 in a container).
        """
        record = self.workers.pop(pid, None)
        if record is None:
            return None
        cause = classify(
            stopping=stopping, retiring=record.retiring, retired_for=record.retired_for,
            aborted=record.aborted, status=status,
            served=self.scoreboard.read(record.slot).requests,
            max_requests=record.max_requests,
        )
        restart = RESTARTS[cause]
        if restart.replaced:
            numbers = record.generation.restarts
            numbers[record.number] = numbers.get(record.number, 0) + 1
        self.scoreboard.release(record.slot, restart.label)
        self.clients.release(record.slot)  # its connections are gone: so are their counts
        how = describe_status(status)
        if (restart.label == "crash" and os.WIFSIGNALED(status)
                and os.WTERMSIG(status) == signal.SIGKILL):
            how += " (out of memory, or killed by an operator)"
        wording = restart.wording
        if restart.backs_off:
            now = self.processes.monotonic()
            if now - record.started < HEALTHY_SECONDS:
                self.note_crash(now)
                wording = f"; respawning in {max(0.0, self.next_spawn_at - now):.1f}s"
            else:
                self.crash_streak = 0
        name = f"worker {record.pid} (generation {record.generation.number})"
        self.log.log(restart.level, f"{name} {how}{wording}")
        return record

    def note_crash(self, now: float) -> None:
        """Exponential back-off for a pool whose workers die soon after they start."""
        self.crash_streak += 1
        delay = backoff_delay(self.crash_streak)
        if delay:
            self.next_spawn_at = max(self.next_spawn_at, now + delay)

    # -- health ---------------------------------------------------------------------
    def healthy(self, now: float) -> bool:
        """At least one worker serves and has beaten its heartbeat lately."""
        for record in self.workers.values():
            slot = self.scoreboard.read(record.slot)
            if slot.state == SlotState.SERVING and now - slot.heartbeat < FRESH_HEARTBEAT_SECONDS:
                return True
        return False

    def status_line(self) -> str:
        live = [self.scoreboard.read(w.slot) for w in self.workers.values()]
        serving = sum(1 for s in live if s.state == SlotState.SERVING)
        requests = sum(s.requests for s in live)
        return (
            f"STATUS=generation {self.generations.current.number}, {serving} workers "
            f"serving, {requests} requests served by live workers"
        )
