"""``worker_memory_limit``: reading a worker's resident memory, and when to replace it.

Owns the cheap RSS read (``resident_bytes``, one small /proc read) and the
master's replacement policy (``MemoryPolicy``), a pure state machine: the master
feeds it the time and what it reads of its workers, and carries out the one action
it answers with. Must not signal, fork or log: the
master does, so the policy is tested in memory with a clock that is just a number.

The policy, as SPEC §9 states it:

- a worker above the limit gets a successor first (the pool is ``workers`` + 1 for
  a moment, never more), and is retired — drained gracefully, counted as restart
  reason ``memory`` — only once the successor serves;
- one replacement at a time: nothing else is started until the old worker is gone;
- a successor that already exceeds the limit when it starts serving shows that the
  limit is below what a fresh worker needs: that is reported, and further
  replacements back off like crash restarts (0.5 s, 1 s, 2 s, … up to 30 s), so a
  wrong limit cannot make the pool churn; a successor that dies before serving
  backs off the same way, and the old worker goes on serving.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

MIB = 1024 * 1024
CHECK_SECONDS = 1.0  # how often the master reads its workers' RSS: a few reads a second
BACKOFF_FIRST = 0.5  # as the master's crash back-off
BACKOFF_CAP = 30.0
PAGE_SIZE: int
try:
    PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError):  # pragma: no cover - every Linux has it
    PAGE_SIZE = 4096


def resident_bytes(pid: int, proc: str = "/proc") -> int | None:
    """A process's resident set in bytes (statm's second field), None if it is gone.

    One open and one read of a few dozen bytes: cheap enough for the master to do
    for every worker each second.
    """
    try:
        with open(f"{proc}/{pid}/statm", "rb") as statm:
            fields = statm.read(128).split()
        return int(fields[1]) * int(PAGE_SIZE)
    except (OSError, IndexError, ValueError):
        return None


class Step(Enum):
    NOTHING = "nothing"
    SPAWN_SUCCESSOR = "spawn_successor"  # start a worker to take ``pid``'s place
    # The successor serves: drain ``pid`` (restart reason "memory"); a ``message``
    # is an error to log (the limit is below a fresh worker's memory; backing off).
    RETIRE = "retire"


@dataclass(frozen=True, slots=True)
class Action:
    step: Step
    pid: int = 0
    message: str = ""


NOTHING = Action(Step.NOTHING)


@dataclass(frozen=True, slots=True)
class WorkerMemory:
    """What the master knows of one current, non-retiring worker."""

    pid: int
    rss: int | None  # bytes; None when unreadable (it is exiting)
    serving: bool


class MemoryPolicy:
    """Which worker to replace for its memory, and when. One replacement at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.old = 0  # the worker being replaced; 0 when no replacement is under way
        self.successor = 0  # its successor, once the master has started one
        self.retired = False  # the old worker has been told to drain
        self.streak = 0  # replacements in a row whose successor was no better
        self.not_before = 0.0  # back-off: no new replacement before this time

    def successor_started(self, pid: int) -> None:
        self.successor = pid

    def decide(self, now: float, workers: list[WorkerMemory]) -> Action:
        """The next step, given the current generation's non-retiring workers.

        A retired old worker is no longer among ``workers``; the replacement is over
        when it has gone (the master also calls ``forget`` when it reaps it).
        """
        alive = {w.pid: w for w in workers}
        if self.old:
            return self.follow(now, alive)
        if now < self.not_before:
            return NOTHING
        over = [w for w in workers if w.serving and w.rss is not None and w.rss > self.limit]
        if not over:
            return NOTHING
        largest = max(over, key=lambda w: w.rss or 0)
        self.old = largest.pid
        self.successor = 0
        self.retired = False
        return Action(Step.SPAWN_SUCCESSOR, largest.pid)

    def follow(self, now: float, alive: dict[int, WorkerMemory]) -> Action:
        successor = alive.get(self.successor) if self.successor else None
        if self.retired:
            return NOTHING  # waiting for the old worker to be reaped (``forget``)
        if self.old not in alive:
            # The old worker ended on its own (a crash, max_requests): its successor
            # simply joins the pool.
            self.finish()
            return NOTHING
        if self.successor and successor is None:
            # The successor died before serving: the old one goes on; back off.
            self.back_off(now)
            self.finish()
            return NOTHING
        if successor is None or not successor.serving:
            return NOTHING  # booting
        self.retired = True
        if successor.rss is not None and successor.rss > self.limit:
            self.back_off(now)
            return Action(
                Step.RETIRE, self.old,
                f"worker_memory_limit {self.limit / MIB:.1f} MiB is below a fresh worker's "
                f"resident memory ({successor.rss / MIB:.1f} MiB); replacing worker "
                f"{self.old} anyway, and backing off {self.not_before - now:.1f}s before "
                "the next",
            )
        self.streak = 0
        return Action(Step.RETIRE, self.old)

    def forget(self, pid: int, now: float) -> None:
        """The master reaped ``pid``: a replacement that waited for it is over."""
        if pid == self.old and self.retired:
            self.finish()
        elif pid == self.successor and not self.retired:
            self.back_off(now)
            self.finish()

    def finish(self) -> None:
        self.old = self.successor = 0
        self.retired = False

    def back_off(self, now: float) -> None:
        self.streak += 1
        delay = min(BACKOFF_FIRST * 2 ** (self.streak - 1), BACKOFF_CAP)
        self.not_before = max(self.not_before, now + delay)
