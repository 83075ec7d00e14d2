"""The pidfile: fcntl-locked, so a live owner is told from a stale file.

Owns Pidfile (acquire, rewrite, release), reading a pid back and telling whether a
process is alive. Must not know about the master's policy, the outcome file
(outcome.py) or signals.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from forkserver.errors import StartupError

PIDFILE_ATTEMPTS = 10  # a racing starter may rename a fresh file in; look again this often


# -- pidfile ----------------------------------------------------------------------
class Pidfile:
    """A pidfile whose liveness is an flock on it, not the mere existence of the file.

    The owner keeps the file open with an exclusive lock for its whole life; the
    kernel drops the lock when the owner dies, however it dies (SIGKILL included).
    So a file whose lock can be taken is stale, whatever pid it names (that pid may
    have been reused by an unrelated process), and one whose lock cannot be taken
    names a live master.

    The pid is always written to a fresh, already locked file that is renamed over
    the path, so a reader never sees a half-written file and the file at the path is
    locked from the moment it appears.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1  # our locked descriptor of the file at self.path

    def holder(self) -> int | None:
        """The pid of a live process holding the file, or None when it is free or stale.

        -1 when the file is held but names no pid (a starter between locking and
        writing; it lasts microseconds).
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StartupError(f"cannot read pidfile {self.path}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return read_pid(self.path) or -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def acquire(self) -> None:
        """Lock the pidfile for this process and write our pid.

        Refuses (StartupError) when a live process holds it; takes a stale file over.
        The stale file is locked while it is replaced, so of two starters racing for
        the same stale file exactly one wins and the other is told who did.
        """
        for _ in range(PIDFILE_ATTEMPTS):
            try:
                # Read-only is enough to lock, and lets us take over a stale file we
                # could not write (it is replaced by a rename, never written in place).
                fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StartupError(f"cannot open pidfile {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = read_pid(self.path)
                who = f"pid {owner}" if owner else "a process that is starting"
                raise StartupError(
                    f"pidfile {self.path} is held by a running forkserver ({who}); "
                    f"stop it first (forkserver -s stop) or use another pidfile"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # a fresh file was renamed over the one we locked: look again
        else:
            raise StartupError(f"pidfile {self.path} keeps changing under us")
        self.fd = fd
        try:
            self.write(os.getpid())
        except StartupError:
            self.forget()
            raise

    def write(self, pid: int) -> None:
        """(Re)write the pidfile with ``pid``: after daemonizing, and by an upgraded master."""
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(f"cannot write pidfile {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never contended
            os.write(fd, f"{pid}\n".encode())
            os.rename(temporary, self.path)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise StartupError(f"cannot write pidfile {self.path}: {exc.strerror}") from None
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd

    def release(self) -> None:
        """On a clean stop: remove the file if it is still ours, then unlock.

        After an upgrade the file at the path is the new master's; it stays.
        """
        if self.fd < 0:
            return
        if _same_file(self.fd, self.path):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.forget()

    def forget(self) -> None:
        """Close our descriptor without touching the file (a forked worker; a failure)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def is_ours(self) -> bool:
        """Whether the file at the path is still the one we hold (not a successor's)."""
        return self.fd >= 0 and _same_file(self.fd, self.path)


def _same_file(fd: int, path: str) -> bool:
    try:
        opened, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return False
    except OSError:
        stat = ""
    if stat:
        return stat[stat.rindex(")") + 2] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
