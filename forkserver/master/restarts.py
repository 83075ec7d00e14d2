"""Why a worker ended: one table from cause to the scoreboard's reason and the log line.

Owns the causes a reaped worker is sorted into, and for each: the restart reason
the status endpoint counts (one of scoreboard.RESTART_REASONS, whose names and order
are part of the scoreboard's layout and never change here), whether a replacement
takes its position, the error log's level and wording, and whether a quick death
counts toward the crash back-off. Must not signal, fork or sleep: pool.py acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from forkserver.master.process import exited_cleanly
from forkserver.scoreboard import RESTART_REASONS

REPLACING = "; replacing it"


class Cause(Enum):
    STOPPED = "stopped"  # the master is stopping: nobody replaces it
    SCALED_DOWN = "scaled_down"  # TTOU retired it
    RELOADED = "reloaded"  # retired because a new generation serves
    MEMORY = "memory"  # retired over worker_memory_limit once its successor served
    SILENT_RETIREE = "silent_retiree"  # retiring, then missed its heartbeat as well
    SILENT = "silent"  # missed its heartbeat: SIGABRT, then SIGKILL
    SILENT_EXITED = "silent_exited"  # sent SIGABRT, but exited 0 as it arrived
    MAX_REQUESTS = "max_requests"  # recycled itself after max_requests
    EXITED = "exited"  # drained and exited 0 (a TERM sent to the worker itself)
    CRASHED = "crashed"  # any other death: a signal, a non-zero status


@dataclass(frozen=True)
class Restart:
    label: str | None  # the scoreboard's restart counter; None: not a restart
    replaced: bool  # a replacement takes its position (its restart count grows)
    level: str  # the error log's level for the line "worker PID (generation G) HOW..."
    wording: str  # what that line says after HOW
    backs_off: bool  # a death soon after start counts toward the crash streak


RESTARTS: dict[Cause, Restart] = {
    Cause.STOPPED: Restart(None, False, "debug", "", False),
    Cause.SCALED_DOWN: Restart(None, False, "debug", "", False),
    Cause.RELOADED: Restart("reload", False, "debug", "", False),
    # Its successor was started (and counted as its position's restart) beforehand.
    Cause.MEMORY: Restart("memory", False, "info", "; replaced for its memory", False),
    Cause.SILENT_RETIREE: Restart("heartbeat_timeout", False, "debug", "", False),
    Cause.SILENT: Restart("heartbeat_timeout", True, "error", REPLACING, True),
    Cause.SILENT_EXITED: Restart("heartbeat_timeout", True, "info", REPLACING, False),
    Cause.MAX_REQUESTS: Restart("max_requests", True, "info", REPLACING, False),
    Cause.EXITED: Restart("exit", True, "info", REPLACING, False),
    Cause.CRASHED: Restart("crash", True, "error", REPLACING, True),
}
assert {r.label for r in RESTARTS.values()} - {None} <= set(RESTART_REASONS)


def classify(
    *, stopping: bool, retiring: bool, retired_for: str, aborted: bool, status: int,
    served: int, max_requests: int,
) -> Cause:
    """The cause of one worker's end, first match wins."""
    if stopping:
        return Cause.STOPPED
    if retiring:
        if aborted:
            return Cause.SILENT_RETIREE
        if retired_for == "memory":
            return Cause.MEMORY
        return Cause.RELOADED if retired_for == "reload" else Cause.SCALED_DOWN
    clean = exited_cleanly(status)
    if aborted:
        return Cause.SILENT_EXITED if clean else Cause.SILENT
    if clean:
        return Cause.MAX_REQUESTS if max_requests and served >= max_requests else Cause.EXITED
    return Cause.CRASHED
