"""Checks against the live system: accounts, writable paths, permissions, CPU affinity.

Owns environment_problems (used by --check and at start-up) and usable_cpus. Must
not change anything it looks at.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable

from forkserver.config.checks import show
from forkserver.config.model import UNIX_PREFIX, Config


def usable_cpus() -> int:
    """CPUs this process may run on (a cgroup/taskset limit counts, unlike cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not every platform has sched_getaffinity
        return os.cpu_count() or 1

# -- checks against the live system --------------------------------------------------

READ, WRITE, SEARCH = 4, 2, 1  # the rwx bits of one class (owner, group or other)
ACL_XATTR = "system.posix_acl_access"


def environment_problems(config: Config) -> list[str]:
    """Checks that need the live system: paths writable, user/group exist, etc.

    Used by ``--check`` and at start-up, after ``load_config`` succeeded. Each problem
    is one line, ``KEY: VALUE reason``; an empty list means the server can start.
    """
    problems = docroot_access_problems(config.docroot)
    for key, log_path in (("access_log", config.access_log), ("error_log", config.error_log)):
        if log_path is not None and log_path != "-":
            problems.extend(writable_file_problems(key, log_path))
    if config.pidfile is not None:
        problems.extend(pidfile_problems(config.pidfile))
    if config.host.startswith(UNIX_PREFIX):
        problems.extend(unix_socket_problems(config.host[len(UNIX_PREFIX) :], config.socket_owner))
    account: pwd.struct_passwd | None = None
    group_id: int | None = None
    if config.user is not None:
        try:
            account = pwd.getpwnam(config.user)
        except KeyError:
            problems.append(f"user: {show(config.user)} does not exist")
    if config.group is not None:
        try:
            group_id = grp.getgrnam(config.group).gr_gid
        except KeyError:
            problems.append(f"group: {show(config.group)} does not exist")
    # Workers only change user when the master runs as root (service.drop_privileges).
    if account is not None and account.pw_uid != 0 and os.geteuid() == 0:
        gid = group_id if group_id is not None else account.pw_gid
        # os.initgroups in the worker gives it these supplementary groups.
        gids = set(os.getgrouplist(account.pw_name, gid)) | {gid}
        blocked = unreadable_for(config.docroot, account.pw_uid, gids)
        if blocked:
            problems.append(
                f"user: {show(config.user)} (uid {account.pw_uid}) could not read docroot "
                f"{config.docroot}: {blocked}"
            )
    return problems


def docroot_access_problems(docroot: str) -> list[str]:
    if not os.path.isdir(docroot):
        return [f"docroot: {show(docroot)} is not an existing directory"]
    if not os.access(docroot, os.R_OK | os.X_OK):
        return [f"docroot: {show(docroot)} is not readable and searchable by this user"]
    return []


def creatable_problem(path: str) -> str | None:
    """Why a file cannot be created at ``path`` (its directory's fault), or None."""
    directory = os.path.dirname(path) or "."
    if not os.path.exists(directory):
        return f"directory {directory} does not exist"
    if not os.path.isdir(directory):
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable by this user"
    return None


def writable_file_problems(key: str, path: str) -> list[str]:
    """A log file is opened for appending: an existing file must be writable, else creatable."""
    if os.path.isdir(path):
        return [f"{key}: {show(path)} is a directory"]
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            return [f"{key}: {show(path)} is not writable by this user"]
        return []
    reason = creatable_problem(path)
    return [f"{key}: {show(path)} cannot be created: {reason}"] if reason else []


def pidfile_problems(path: str) -> list[str]:
    """The pidfile is written beside itself and renamed over, so its directory must be writable."""
    if os.path.isdir(path):
        return [f"pidfile: {show(path)} is a directory"]
    reason = creatable_problem(path)
    return [f"pidfile: {show(path)} cannot be written: {reason}"] if reason else []


def unix_socket_problems(path: str, owner: str | None) -> list[str]:
    """The socket file is created in its directory (replacing a stale socket, nothing else)."""
    problems = []
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        reason = creatable_problem(path)
        if reason:
            problems.append(f"host: {show(UNIX_PREFIX + path)} cannot be created: {reason}")
    except OSError as exc:
        problems.append(f"host: {show(UNIX_PREFIX + path)}: {exc.strerror}")
    else:
        if not stat.S_ISSOCK(status.st_mode):
            problems.append(
                f"host: {show(UNIX_PREFIX + path)} exists and is not a socket; "
                "forkserver replaces only a stale socket"
            )
    if owner is not None:
        user, _, group = owner.partition(":")
        if user and not _exists(pwd.getpwnam, user):
            problems.append(f"socket_owner: {show(owner)}: user {show(user)} does not exist")
        if group and not _exists(grp.getgrnam, group):
            problems.append(f"socket_owner: {show(owner)}: group {show(group)} does not exist")
    return problems


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def unreadable_for(docroot: str, uid: int, gids: set[int]) -> str | None:
    """Why ``uid``/``gids`` could not list ``docroot``, judged by mode bits, or None.

    The kernel needs search (x) on every directory on the way and read+search on the
    docroot itself. Both the path as written and its symlink-free form are walked,
    since a symlink's own directory and its target's directories are all traversed.
    Mode bits follow the kernel's rule: the owner class applies if the uid owns the
    file (even when "other" would allow more), else the group class if one of the
    gids owns it, else "other". A directory with a POSIX ACL is skipped rather than
    guessed at, so this check may miss a denial but never invents one.
    """
    wanted = {directory: SEARCH for path in (docroot, os.path.realpath(docroot))
              for directory in ancestors(path)}
    wanted[docroot] = wanted[os.path.realpath(docroot)] = READ | SEARCH
    for directory, want in wanted.items():
        try:
            status = os.stat(directory)
        except OSError as exc:
            return f"{directory}: {exc.strerror}"
        if has_acl(directory) or permits(status, uid, gids, want):
            continue
        needed = "read and search" if want & READ else "search"
        return (
            f"{directory} needs {needed} permission but has mode "
            f"{stat.S_IMODE(status.st_mode):04o} (owner uid {status.st_uid}, "
            f"gid {status.st_gid})"
        )
    return None


def ancestors(path: str) -> list[str]:
    """``/srv/www/site`` → ``/``, ``/srv``, ``/srv/www`` (the directories crossed)."""
    found: list[str] = []
    parent = os.path.dirname(path)
    while True:
        found.append(parent)
        if parent == os.path.dirname(parent):
            return found[::-1]
        parent = os.path.dirname(parent)


def permits(status: os.stat_result, uid: int, gids: set[int], want: int) -> bool:
    if status.st_uid == uid:
        granted = (status.st_mode >> 6) & 0o7
    elif status.st_gid in gids:
        granted = (status.st_mode >> 3) & 0o7
    else:
        granted = status.st_mode & 0o7
    return granted & want == want


def has_acl(path: str) -> bool:
    try:
        return ACL_XATTR in os.listxattr(path)
    except OSError:  # no xattr support on this filesystem: no ACL either
        return False
