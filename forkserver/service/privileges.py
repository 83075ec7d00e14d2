"""Privileges: workers drop to the configured user; a root master keeps few capabilities.

Owns resolving user/group, dropping privileges in a worker (with no_new_privs),
handing log files to the workers' user, and limiting a root master's capabilities
(capabilities(7), through prctl/capget/capset). Must not know about HTTP or the pool.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from forkserver.errors import StartupError


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
