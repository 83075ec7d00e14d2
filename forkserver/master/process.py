"""The master's own process: how it was started, and the system calls it decides with.

Owns StartInfo (what an upgrade re-runs and a reload re-reads relative to), the
ProcessOps seam (fork, kill, waitpid, the monotonic clock: the real ones by default,
a fake in tests/unit/test_master_decisions.py so no process is started and nothing
sleeps), the signals the master handles, and the wording of a wait status. Must
not decide anything.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Protocol

EXIT_CANNOT_START = 3  # a worker's exit status when it could not get ready to serve

MASTER_SIGNALS = (
    signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
    signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD,
)


@dataclass
class StartInfo:
    """How this master was started, so an upgrade can start the same program."""

    argv: list[str]
    cwd: str
    overrides: dict[str, object] = field(default_factory=dict)


class ProcessOps(Protocol):
    """The process-table calls and the clock every decision of the master goes through."""

    def fork(self) -> int: ...

    def kill(self, pid: int, signum: int) -> None: ...

    def waitpid(self, pid: int, options: int) -> tuple[int, int]: ...

    def monotonic(self) -> float: ...


class SystemProcesses:
    """The real ones: os.fork, os.kill, os.waitpid, time.monotonic."""

    def fork(self) -> int:
        return os.fork()

    def kill(self, pid: int, signum: int) -> None:
        os.kill(pid, signum)

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        return os.waitpid(pid, options)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM = SystemProcesses()


def describe_status(status: int) -> str:
    """``exited with status 1`` or ``killed by signal SIGKILL``, from a wait status."""
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


def exited_cleanly(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
