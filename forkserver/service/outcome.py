"""The outcome file beside the pidfile: how the last start, reload or upgrade ended.

Owns PIDFILE.state (written by the master, read by `forkserver -s reload|upgrade`).
Must not know why an outcome happened: the master says so in the message.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

# -- the outcome of a reload or an upgrade, for `forkserver -s` ---------------------
# A signal carries no answer, so the master leaves one beside its pidfile: a small JSON
# document with a serial number that every outcome increments. `-s reload|upgrade` reads
# the serial, signals, and waits for a new one, as `systemctl reload` waits for READY=1.


@dataclass(frozen=True)
class Outcome:
    """One record of PIDFILE.state: what the master last did, and whether it worked."""

    serial: int
    action: str  # "start", "reload" or "upgrade"
    ok: bool
    pid: int  # the master that wrote it (after an upgrade: the new one)
    message: str


def outcome_path(pidfile: str) -> str:
    return f"{pidfile}.state"


def read_outcome(pidfile: str) -> Outcome | None:
    """The last outcome recorded beside ``pidfile``; None if there is none (or it is
    unreadable: the file is always replaced whole, so that means it is absent)."""
    try:
        with open(outcome_path(pidfile), encoding="utf-8") as handle:
            data = json.load(handle)
        return Outcome(int(data["serial"]), str(data["action"]), bool(data["ok"]),
                       int(data["pid"]), str(data["message"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_outcome(pidfile: str, action: str, ok: bool, message: str) -> None:
    """Record an outcome (temp file + rename: a reader never sees half of it).

    Best effort: a master that cannot write it goes on serving; `-s` then says it
    got no answer.
    """
    previous = read_outcome(pidfile)
    serial = previous.serial + 1 if previous is not None else 1
    record = {"serial": serial, "action": action, "ok": ok, "pid": os.getpid(),
              "message": message}
    path = outcome_path(pidfile)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
            handle.write("\n")
        os.rename(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def remove_outcome(pidfile: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(outcome_path(pidfile))
