"""What `forkserver -s reload|upgrade` is told: the master's side of the outcome file.

Owns when a start, reload or upgrade is recorded as done or failed beside the pidfile
(service.write_outcome writes the file): a refused reload at once, an accepted one
when its generation serves, or as failed when a worker of that generation dies
before it does. Must not decide anything about the pool; it only reports.
"""

from __future__ import annotations

from forkserver.master.generations import Generation
from forkserver.master.pool import WorkerRecord
from forkserver.master.process import describe_status, exited_cleanly
from forkserver.service import Pidfile, write_outcome


class Outcomes:
    def __init__(self, pidfile: Pidfile | None) -> None:
        self.pidfile = pidfile
        self.pending_reload = 0  # the generation whose start `-s reload` waits for

    def report(self, action: str, ok: bool, message: str) -> None:
        if self.pidfile is not None:
            write_outcome(self.pidfile.path, action, ok, message)

    def reload_refused(self, reason: str) -> None:
        self.report("reload", False, reason)

    def reload_started(self, generation: Generation) -> None:
        """Success is recorded later, when the generation serves (generation_ready)."""
        self.pending_reload = generation.number

    def generation_ready(self, generation: Generation, serving: int) -> None:
        if self.pending_reload and generation.number >= self.pending_reload:
            self.pending_reload = 0
            self.report("reload", True,
                        f"generation {generation.number} serving with {serving} workers")

    def generation_failed(
        self, record: WorkerRecord, status: int, generations: list[Generation]
    ) -> None:
        """A worker of the reload's new generation died before that generation served:
        the reload has failed for now (the old generation goes on; the master keeps
        retrying with back-off, and a later success is not waited for by anyone)."""
        generation = record.generation
        if generation.number != self.pending_reload or generation.ready or record.retiring:
            return
        if exited_cleanly(status):
            return
        self.pending_reload = 0
        previous = [g.number for g in generations if g.ready]
        still = f"; still serving generation {previous[-1]}" if previous else ""
        self.report("reload", False,
                    f"generation {generation.number} cannot start: worker {record.pid} "
                    f"{describe_status(status)} (the error log says why){still}")
