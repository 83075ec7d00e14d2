"""Signals delivered as bytes in a pipe, for the master's and the workers' loops.

Owns the self-pipe and the handler installation. Handlers do nothing at all:
``signal.set_wakeup_fd`` writes each signal's number into the pipe, and the process's
own loop reads the numbers and acts on them, so no work (and no logging) ever runs
inside a handler. Must not decide what any signal means.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

READ_BYTES = 512  # signal numbers read per call; more simply wait for the next one


def _record_only(signum: int, frame: object) -> None:
    """The wakeup fd already carries the signal number; the loop acts on it."""


class SignalPipe:
    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self, signums: Iterable[int]) -> None:
        """Route ``signums`` into this pipe (the process's only wakeup fd)."""
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, _record_only)

    def received(self) -> bytes:
        """The signal numbers that arrived since the last call, one byte each."""
        try:
            return os.read(self.read_fd, READ_BYTES)
        except BlockingIOError:
            return b""

    def release(self) -> None:
        """In a forked child: stop routing signals here and close both ends."""
        signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self.write_fd)
