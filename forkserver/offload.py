"""Slow work off the event loop: a small bounded pool of threads that wakes the loop.

Owns the threads, their bounded queue and the eventfd that tells an epoll loop that
results are ready. Must not know what the work is (a bcrypt check, gzip, a hash):
callers hand it a callable and a callback. Nothing here touches sockets or HTTP.

Why threads: the slow calls a worker makes are C code that releases the GIL (pyca
``bcrypt.checkpw``, ``zlib``/``hashlib`` on large buffers), so a thread runs them
while the loop keeps serving other connections. A check costing tens of milliseconds
on the loop's own turn would hold every other client of that worker for as long.

Use from an epoll loop (one ``Offload`` per worker process, made after fork)::

    offload = Offload(threads=2, capacity=64)
    epoll.register(offload.fileno(), select.EPOLLIN)
    ...
    ticket = offload.submit(lambda: bcrypt.checkpw(pw, hashed), on_checked)
    if ticket is None:
        ...  # the queue is full: answer 503 rather than grow memory
    # park the connection (stop reading it) until on_checked runs
    ...
    # in the loop, when offload.fileno() is readable:
    offload.deliver()        # runs each finished job's callback, on the loop's thread
    ...
    ticket.cancel()          # the connection went away: its callback will not run

Each callback receives a ``Finished``: ``value`` or ``error`` (the exception the work
raised; it never escapes into the thread). Callbacks run only inside ``deliver()``,
on the thread that calls it, so they may touch loop state freely. They must not
raise; if one does, ``deliver`` re-raises after re-arming the wake-up, so the other
finished jobs are delivered on the next call and none is lost.

Bounds: at most ``capacity`` jobs are accepted and not yet delivered (queued,
running, or finished and waiting for ``deliver``), so a flood of slow requests costs
bounded memory; ``submit`` returns None beyond that. Threads start on the first
``submit``, never before: a process that forks after making an ``Offload`` must not
carry threads into the child, and a worker that never needs one never has any.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["DEFAULT_CAPACITY", "DEFAULT_THREADS", "Finished", "Offload", "Ticket"]

T = TypeVar("T")

# Two threads match the two cores a small server has; more would only queue on the CPU
# (bcrypt is CPU-bound), fewer would let one slow job hold every other.
DEFAULT_THREADS = 2
# Jobs accepted and not yet delivered. 64 bcrypt checks at ~50 ms on two threads is
# ~1.6 s of backlog: beyond that a client is better told 503 at once.
DEFAULT_CAPACITY = 64
# How long close() waits for a thread that is in the middle of a job.
CLOSE_JOIN_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Finished(Generic[T]):
    """The outcome of one job: its return value, or the exception it raised."""

    value: T | None
    error: Exception | None = None


class Ticket(Generic[T]):
    """One accepted job; ``cancel()`` drops its callback (the work may still run)."""

    __slots__ = ("_callback", "_work", "cancelled")

    def __init__(self, work: Callable[[], T], callback: Callable[[Finished[T]], None]) -> None:
        self._work = work
        self._callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """The waiter went away (e.g. its connection closed): do not call it back."""
        self.cancelled = True


_STOP = None  # put on the job queue once per thread by close(): "stop"


class Offload:
    """A bounded pool of threads; results come back on the loop's thread via an eventfd."""

    def __init__(self, threads: int = DEFAULT_THREADS, capacity: int = DEFAULT_CAPACITY) -> None:
        if threads < 1 or capacity < 1:
            raise ValueError("an Offload needs at least one thread and a capacity of one")
        self.threads = threads
        self.capacity = capacity
        self._pid = os.getpid()
        # Non-blocking, counting: each finished job adds 1; one read takes them all.
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._jobs: queue.SimpleQueue[Ticket[Any] | None] = queue.SimpleQueue()
        # deque.append and popleft are atomic: the threads append, the loop pops.
        self._finished: deque[tuple[Ticket[Any], Finished[Any]]] = deque()
        self._workers: list[threading.Thread] = []
        self._outstanding = 0  # accepted, not yet delivered; only the loop's thread writes
        self._closed = False

    def fileno(self) -> int:
        """The descriptor to register for EPOLLIN: readable when results are ready."""
        return self._wake_fd

    @property
    def outstanding(self) -> int:
        """Jobs accepted and not yet delivered (queued, running or finished)."""
        return self._outstanding

    def submit(
        self, work: Callable[[], T], callback: Callable[[Finished[T]], None]
    ) -> Ticket[T] | None:
        """Run ``work()`` on a pool thread; ``callback`` gets its outcome in ``deliver``.

        Returns None, without running anything, when ``capacity`` jobs are already
        outstanding (the caller answers 503) or the pool is closed.
        """
        if self._closed or self._outstanding >= self.capacity:
            return None
        if os.getpid() != self._pid:
            raise RuntimeError("an Offload cannot be used across fork(); make one per process")
        if not self._workers:
            self._start()
        ticket = Ticket(work, callback)
        self._outstanding += 1
        self._jobs.put(ticket)
        return ticket

    def deliver(self) -> int:
        """Run the callbacks of every finished job; returns how many ran.

        Call it when ``fileno()`` is readable (calling it at other times is harmless).
        """
        with contextlib.suppress(BlockingIOError):  # nothing finished since the last read
            os.eventfd_read(self._wake_fd)
        ran = 0
        finished = self._finished
        while finished:
            ticket, outcome = finished.popleft()
            self._outstanding -= 1
            if ticket.cancelled:
                continue
            try:
                ticket._callback(outcome)
            except BaseException:
                if finished:  # the rest wait for the next call, which this arms
                    os.eventfd_write(self._wake_fd, 1)
                raise
            ran += 1
        return ran

    def close(self) -> None:
        """Stop the threads (after their current job) and close the eventfd."""
        if self._closed:
            return
        self._closed = True
        for _ in self._workers:
            self._jobs.put(_STOP)
        for thread in self._workers:
            thread.join(CLOSE_JOIN_SECONDS)
        self._workers.clear()
        os.close(self._wake_fd)

    # -- the pool's side ------------------------------------------------------------
    def _start(self) -> None:
        for number in range(self.threads):
            thread = threading.Thread(
                target=self._run, name=f"offload-{number + 1}", daemon=True
            )
            thread.start()
            self._workers.append(thread)

    def _run(self) -> None:
        """A pool thread: take a job, run it, queue its outcome, wake the loop."""
        while True:
            ticket = self._jobs.get()
            if ticket is None:  # _STOP
                return
            if ticket.cancelled:
                outcome: Finished[Any] = Finished(None)
            else:
                try:
                    outcome = Finished(ticket._work())
                except Exception as error:  # delivered to the callback, never lost
                    outcome = Finished(None, error)
            self._finished.append((ticket, outcome))
            try:
                os.eventfd_write(self._wake_fd, 1)
            except OSError:
                return  # closed underneath us: the process is going away
