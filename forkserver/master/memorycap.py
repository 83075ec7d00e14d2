"""``worker_memory_limit`` in the master: read the workers' memory, act on the policy.

Owns when the current generation's workers' resident memory is read (once a second,
and every turn while a replacement is under way so the old worker drains as soon as
its successor serves), and carrying out the policy's one step: start a successor,
retire the old worker for "memory", log. The decisions are protect/memory.py's
(``MemoryPolicy``, pure); the forking and signalling are pool.py's. Must not run
while a reload is under way (the supervisor calls it only when serving).
"""

from __future__ import annotations

from collections.abc import Callable

from forkserver.master.pool import Pool
from forkserver.protect.memory import (
    CHECK_SECONDS,
    MemoryPolicy,
    Step,
    WorkerMemory,
    resident_bytes,
)
from forkserver.scoreboard import SlotState

MIB = 1024 * 1024


class MemoryCap:
    def __init__(
        self, pool: Pool, read_rss: Callable[[int], int | None] = resident_bytes
    ) -> None:
        self.pool = pool
        self.read_rss = read_rss
        self.policy: MemoryPolicy | None = None
        self.next_check = 0.0

    def check(self, now: float) -> None:
        """One look at the current generation, when it is time for one."""
        generation = self.pool.generations.current
        limit = generation.config.worker_memory_limit
        if limit is None:
            self.policy = None
            return
        if self.policy is None or self.policy.limit != limit:
            self.policy = MemoryPolicy(limit)  # a reload changed it: start afresh
        policy = self.policy
        if now < self.next_check and not policy.old:
            return
        self.next_check = now + CHECK_SECONDS
        pool = self.pool
        current = pool.of(generation)
        workers = [
            WorkerMemory(
                record.pid, self.read_rss(record.pid),
                pool.scoreboard.read(record.slot).state == SlotState.SERVING,
            )
            for record in current
        ]
        action = policy.decide(now, workers)
        if action.step is Step.NOTHING:
            return
        record = pool.workers.get(action.pid)
        if record is None:
            return
        log = generation.error_log
        if action.step is Step.SPAWN_SUCCESSOR:
            rss = next((w.rss for w in workers if w.pid == record.pid), None) or 0
            log.error(
                f"worker {record.pid} resident memory {rss / MIB:.1f} MiB is above "
                f"worker_memory_limit {limit / MIB:.1f} MiB; starting its successor"
            )
            numbers = generation.restarts
            numbers[record.number] = numbers.get(record.number, 0) + 1
            successor = pool.spawn(generation, record.number)
            if successor:
                policy.successor_started(successor)
            else:  # could not fork: the old worker goes on; try again after a back-off
                policy.finish()
                policy.back_off(now)
            return
        if action.message:
            log.error(action.message)
        log.info(f"worker {record.pid}: its successor serves; draining it (memory)")
        pool.retire(record, "memory")

    def forget(self, pid: int, now: float) -> None:
        """The pool reaped ``pid``: the policy may be waiting for it."""
        if self.policy is not None:
            self.policy.forget(pid, now)
