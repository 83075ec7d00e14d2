"""The operating system's service machinery.

Owns the pidfile (fcntl-locked, so a live owner is told from a stale file), systemd
notifications (sd_notify), daemonizing with python-daemon, dropping privileges and
process titles. Must not know about HTTP, connections or the worker pool's policy.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import socket
from collections.abc import Iterable

from forkserver.errors import StartupError


# -- pidfile ----------------------------------------------------------------------
class Pidfile:
    """A pidfile whose liveness is an flock on it, not the mere existence of the file.

    The owner keeps the file open with an exclusive lock for its whole life; the
    kernel drops the lock when the owner dies, however it dies. So a file whose lock
    can be taken is stale, and one whose lock cannot be taken names a live master.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def holder(self) -> int | None:
        """The pid of a live process holding the file, or None when it is free or stale."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return read_pid(self.path) or -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def acquire(self, pid: int | None = None) -> None:
        """Write our pid atomically and hold the lock. StartupError if a live one holds it.

        The pid goes into a locked temporary file that is then renamed over the path,
        so a reader never sees a half-written file.
        """
        owner = self.holder()
        if owner is not None and owner != os.getpid():
            raise StartupError(
                f"pidfile {self.path} is held by a running forkserver (pid {owner})"
            )
        self.write(os.getpid() if pid is None else pid)

    def write(self, pid: int) -> None:
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(f"cannot write pidfile {self.path}: {exc.strerror}") from None
        try:
            os.write(fd, f"{pid}\n".encode())
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
        """Remove the file if it still names us (an upgraded master may own it now)."""
        if self.fd < 0:
            return
        if read_pid(self.path) == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1

    def forget(self) -> None:
        """In a forked child: close our copy so only the master holds the lock."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


# -- systemd notifications ----------------------------------------------------------
def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's NOTIFY_SOCKET (sd_notify(3)); False when unset."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


# -- privileges ---------------------------------------------------------------------
def drop_privileges(user: str | None, group: str | None) -> None:
    """Become ``user``/``group`` (supplementary groups, gid, uid, in that order).

    A no-op unless we are root: an unprivileged master's workers already run as the
    only user they can be. Raises StartupError with a one-line reason.
    """
    if os.geteuid() != 0 or (user is None and group is None):
        return
    try:
        account = pwd.getpwnam(user) if user else None
        gid = grp.getgrnam(group).gr_gid if group else (account.pw_gid if account else None)
    except KeyError as exc:
        raise StartupError(f"no such user or group: {exc.args[0]}") from None
    try:
        if account is not None and gid is not None:
            os.initgroups(account.pw_name, gid)
        elif gid is not None:
            os.setgroups([gid])
        if gid is not None:
            os.setgid(gid)
        if account is not None:
            os.setuid(account.pw_uid)
    except OSError as exc:
        raise StartupError(f"cannot drop privileges to {user}:{group}: {exc.strerror}") from None


# -- process titles -------------------------------------------------------------------
def set_title(title: str) -> None:
    """Set the process title when setproctitle is installed; otherwise do nothing."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


# -- daemon mode ----------------------------------------------------------------------
def daemonize(preserve: Iterable[int]) -> None:
    """Detach from the terminal with python-daemon, keeping ``preserve`` fds open.

    Settings are explicit because python-daemon's defaults bite: ``detach_process``
    auto-detection is wrong under systemd and in containers, the default umask is 0,
    the default signal map turns SIGTERM into SystemExit and leaves SIGHUP fatal.
    We install our own handlers right after, so the map is empty.
    """
    import daemon  # imported here: only daemon mode pays for it

    context = daemon.DaemonContext(
        detach_process=True,
        working_directory="/",
        umask=0o022,
        files_preserve=list(preserve),
        signal_map={},
        prevent_core=False,
    )
    context.open()

