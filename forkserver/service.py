"""The operating system's service machinery.

Owns the pidfile (fcntl-locked, so a live owner is told from a stale file) and the
outcome file beside it (how the last reload or upgrade ended, for `-s`), systemd
notifications (sd_notify), daemonizing with python-daemon and the launcher's wait for
readiness, dropping privileges (workers) and capabilities (a root master), handing log
files to the workers' user, and process titles. Must not know about HTTP,
connections or the worker pool's policy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import json
import os
import pwd
import select
import signal
import socket
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

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


def watchdog_interval(pid: int) -> float:
    """Half of systemd's WATCHDOG_USEC when the watchdog is meant for ``pid``, else 0.

    sd_watchdog_enabled(3): WATCHDOG_PID, when set, names the process that must ping.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    owner = os.environ.get("WATCHDOG_PID", str(pid))
    if not usec.isdigit() or int(usec) == 0 or owner != str(pid):
        return 0.0
    return int(usec) / 2_000_000


# -- privileges ---------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    """Whom the workers become: None for a field that does not change."""

    name: str | None
    uid: int | None
    gid: int | None


def resolve_account(user: str | None, group: str | None) -> Account:
    """Look ``user``/``group`` up (``group`` defaults to the user's login group)."""
    try:
        entry = pwd.getpwnam(user) if user else None
        gid = grp.getgrnam(group).gr_gid if group else (entry.pw_gid if entry else None)
    except KeyError as exc:
        raise StartupError(f"no such user or group: {exc.args[0]}") from None
    return Account(entry.pw_name if entry else None, entry.pw_uid if entry else None, gid)


def switches_user(user: str | None, group: str | None) -> bool:
    """Whether workers will change identity: only a root master can make them."""
    return os.geteuid() == 0 and (user is not None or group is not None)


def root_workers_warning(user: str | None) -> str | None:
    """The start-up warning for a root master without ``user``: its workers stay root.

    Said once by the master (and by --check), not per worker: a worker that stays
    root is a choice an operator should make knowingly, since any flaw in request
    handling would then be a root compromise.
    """
    if user is not None or os.geteuid() != 0:
        return None
    return (
        "started as root without user: workers serve requests as root; set user "
        "(such as www-data) so they drop to an unprivileged account"
    )


def drop_privileges(user: str | None, group: str | None) -> None:
    """In a worker: become ``user``/``group`` (supplementary groups, gid, uid, in order).

    A no-op unless we are root: an unprivileged master's workers already run as the
    only user they can be. Once the uid changes the kernel clears every capability
    (no SECBIT_KEEP_CAPS), and no_new_privs stops a setuid binary from giving any back.
    Raises StartupError with a one-line reason.
    """
    if not switches_user(user, group):
        return
    account = resolve_account(user, group)
    try:
        if account.name is not None and account.gid is not None:
            os.initgroups(account.name, account.gid)
        elif account.gid is not None:
            os.setgroups([account.gid])
        if account.gid is not None:
            os.setgid(account.gid)
        if account.uid is not None:
            os.setuid(account.uid)
    except OSError as exc:
        raise StartupError(f"cannot drop privileges to {user}:{group}: {exc.strerror}") from None
    if account.uid not in (None, 0):
        with contextlib.suppress(PermissionError):
            os.setuid(0)
            raise StartupError(f"dropped to {user} but could become root again")
        try:
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
        except OSError as exc:
            raise StartupError(f"cannot set no_new_privs: {exc.strerror}") from None


def hand_over_logs(fds: Iterable[int], user: str | None, group: str | None) -> None:
    """Give the workers' user the log files a root master opened (nginx does the same).

    Workers write through descriptors inherited from the master, so writing needs
    nothing; but after logrotate moves a file, USR1 makes each worker reopen the
    path itself, as its own user, which needs the file to be that user's. Regular
    files only: stderr, pipes and ttys are left alone.
    """
    if not switches_user(user, group):
        return
    account = resolve_account(user, group)
    uid = -1 if account.uid is None else account.uid
    gid = -1 if account.gid is None else account.gid
    for fd in fds:
        if fd <= 2:
            continue
        info = os.fstat(fd)
        if info.st_mode & 0o170000 == 0o100000 and (info.st_uid, info.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)


# -- capabilities (capabilities(7)) -----------------------------------------------
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_KILL, CAP_SETGID, CAP_SETUID = 0, 1, 5, 6, 7
CAP_NET_BIND_SERVICE = 10
# What a root master whose workers run as another user still needs, and why. Every
# other capability leaves its effective, permitted, inheritable and bounding sets, so
# neither the master nor anything it execs (an upgrade) can get it back.
MASTER_CAPABILITIES = {
    CAP_CHOWN: "hand re-created log files to the workers' user",
    CAP_DAC_OVERRIDE: "reopen log files that now belong to the workers' user",
    CAP_KILL: "signal workers that run as another user",
    CAP_SETGID: "workers set their groups",
    CAP_SETUID: "workers set their user",
    CAP_NET_BIND_SERVICE: "a reload may bind a port below 1024",
}
PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 23, 24, 38
_CAPABILITY_VERSION_3 = 0x20080522  # linux/capability.h: two 32-bit words per set
_CAP_LAST_FALLBACK = 63


def _libc() -> Any:
    # ctypes is imported only on this root-only path: a systemd unit with
    # MemoryDenyWriteExecute= never runs it.
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, argument: int) -> int:
    import ctypes

    result = int(_libc().prctl(option, argument, 0, 0, 0))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def limit_capabilities(keep: Collection[int]) -> None:
    """Reduce this process to the capabilities in ``keep`` (a root master, see above).

    Raises StartupError; a no-op for a process that is not root.
    """
    if os.geteuid() != 0:
        return
    import ctypes

    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
            last = int(handle.read())
    except (OSError, ValueError):
        last = _CAP_LAST_FALLBACK
    try:
        for cap in range(last + 1):
            if cap in keep:
                continue
            try:
                present = _prctl(PR_CAPBSET_READ, cap)
                if present:
                    _prctl(PR_CAPBSET_DROP, cap)
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # beyond what this kernel knows
                    break
                if exc.errno == errno.EPERM:  # no CAP_SETPCAP (some containers):
                    break  # the sets below still shrink; only exec could regain more
                raise

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        libc = _libc()
        header = Header(_CAPABILITY_VERSION_3, 0)
        data = (Data * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        wanted = sum(1 << cap for cap in keep)
        for word in range(2):
            mask = (wanted >> (32 * word)) & 0xFFFFFFFF
            permitted = data[word].permitted & mask
            # An empty inheritable set also empties the ambient set.
            data[word].permitted, data[word].effective, data[word].inheritable = (
                permitted, permitted, 0
            )
        if libc.capset(ctypes.byref(header), data) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    except OSError as exc:
        raise StartupError(f"cannot limit the master's capabilities: {exc.strerror}") from None


# -- process titles -------------------------------------------------------------------
def set_title(title: str) -> None:
    """Set the process title when setproctitle is installed; otherwise do nothing."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


# -- daemon mode ----------------------------------------------------------------------
DAEMON_READY_SECONDS = 30.0  # how long the launcher waits for the daemon to serve
LAUNCHER_POLL_SECONDS = 0.1  # how often the launcher looks at the daemon while waiting

# python-daemon's default map turns TERM into SystemExit and leaves HUP fatal. Ours is
# explicit: job-control signals and HUP/USR1/USR2/TTIN/TTOU are ignored in the moment
# between detaching and the master's loop, which then installs its own handlers for
# all of them; TERM, INT and QUIT keep their default (end the process) meanwhile.
DAEMON_SIGNAL_MAP: dict[int, None] = {
    signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None,
    signal.SIGHUP: None, signal.SIGUSR1: None, signal.SIGUSR2: None,
}


class DaemonLink:
    """The pipe between the launcher and the daemon it started.

    The launcher (``is_launcher``) waits on it; the daemon writes ``pid N``, then
    ``ready`` once its workers serve, or ``error MESSAGE``. So the launcher exits 0
    only when the daemon serves, and non-zero with the reason when it cannot
    (daemon(7): "the original process should exit only once the daemon is ready").
    """

    def __init__(self, fd: int, is_launcher: bool, child: int = 0) -> None:
        self.fd = fd
        self.is_launcher = is_launcher
        self.child = child  # launcher: the pid it forked (which forks the daemon)

    # -- daemon side --------------------------------------------------------------
    def _send(self, line: str) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, (line.replace("\n", " ") + "\n").encode())
        except OSError:
            self.close()  # the launcher is gone (killed, interrupted): nobody to tell

    def started(self) -> None:
        self._send(f"pid {os.getpid()}")

    def ready(self) -> None:
        self._send("ready")
        self.close()

    def failed(self, message: str) -> None:
        self._send(f"error {message}")
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- launcher side ------------------------------------------------------------
    def wait(self, timeout: float = DAEMON_READY_SECONDS) -> tuple[int, str]:
        """Wait until the daemon serves: (0, pid) or (1, reason)."""
        deadline = time.monotonic() + timeout
        pending = b""
        daemon = 0
        try:
            while True:
                self._reap_child()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return 1, f"the daemon (pid {daemon}) is not serving after {timeout:g}s"
                ready, _, _ = select.select([self.fd], [], [], min(remaining,
                                                                  LAUNCHER_POLL_SECONDS))
                if ready:
                    chunk = os.read(self.fd, 4096)
                    if not chunk:
                        return 1, "the daemon exited before it was ready"
                    pending += chunk
                    while b"\n" in pending:
                        line, _, pending = pending.partition(b"\n")
                        word, _, rest = line.decode(errors="replace").partition(" ")
                        if word == "pid" and rest.isdigit():
                            daemon = int(rest)
                        elif word == "ready":
                            return 0, str(daemon)
                        elif word == "error":
                            return 1, rest
                elif daemon and not process_alive(daemon):
                    return 1, f"the daemon (pid {daemon}) exited before it was ready"
        finally:
            self.close()

    def _reap_child(self) -> None:
        if self.child:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(self.child, os.WNOHANG)[0]:
                    self.child = 0


def daemonize(preserve: Iterable[int]) -> DaemonLink:
    """Detach from the terminal with python-daemon, keeping ``preserve`` fds open.

    Returns twice, like fork: in the launcher (``link.is_launcher``; it should
    ``wait`` and exit with the result) and in the daemon, a grandchild in a new
    session with no controlling terminal, stdin/stdout/stderr on /dev/null, cwd ``/``
    and umask 022. Everything that can fail must have been checked before.

    The launcher's own fork gives it a pipe to wait on (python-daemon's parent
    exits at once); then python-daemon forks twice with setsid in between. Its
    settings are explicit because its defaults bite: ``detach_process``
    auto-detection is wrong under systemd and in containers, the default umask is 0,
    and the default signal map ends the process on TERM and leaves HUP fatal.
    """
    import daemon  # imported here: only daemon mode pays for it

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    kept = [*preserve, write_end]
    child = os.fork()
    if child:
        os.close(write_end)
        return DaemonLink(read_end, True, child)
    os.close(read_end)
    link = DaemonLink(write_end, False)
    try:
        context = daemon.DaemonContext(
            detach_process=True,
            working_directory="/",
            umask=0o022,
            files_preserve=kept,
            signal_map=dict(DAEMON_SIGNAL_MAP),
            prevent_core=True,
        )
        context.open()  # forks twice; only the final daemon returns
    except BaseException as exc:  # in the first child: tell the launcher, never return
        link.failed(f"cannot daemonize: {exc}")
        os._exit(1)
    link.started()
    return link
