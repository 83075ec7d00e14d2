"""openat2(2) beneath a directory: a whole relative path opened in one system call.

Owns the ``ctypes`` route to ``openat2`` (``os`` does not wrap it) with
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS``: the kernel refuses
any step out of the directory (``..``, an absolute path) and any symlink on the way,
so a path of plain names either opens inside the tree or fails. Must not decide what
a failure means: the caller (``docroot.py``) takes its contained walk for anything
but success or a plain ENOENT, so symlinks keep today's rule (followed only when the
real target stays inside) and every error keeps today's status.

Measured on the site mix (bench/misspath.py): a file three directories down cost the
walk 4 ``openat`` and 3 ``close``; this is one ``openat2``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys

__all__ = ["RESOLVE_FLAGS", "Beneath", "openat2_available"]

# <linux/openat2.h>
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_FLAGS = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
# The syscall number is the same on every architecture that has the unified table
# (x86_64, aarch64, riscv64, ...); elsewhere the walk is used.
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "riscv64": 437}.get(platform.machine())
# The kernel (before 5.6) does not have openat2: walk instead, for good.
UNAVAILABLE_ERRNOS = frozenset({errno.ENOSYS})
# What a first call on the directory itself may answer when openat2 cannot be used
# (a seccomp filter's EPERM, an older struct or flag set): walk instead, for good.
PROBE_FAILURES = frozenset({errno.ENOSYS, errno.EPERM, errno.E2BIG, errno.EINVAL})


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def _syscall() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if _SYS_OPENAT2 is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syscall
    except (OSError, AttributeError):
        return None
    # No argtypes: ints and bytes convert without them, and each declared argument
    # costs a from_param call (about 0.3 us of a 4 us call, measured).
    function.restype = ctypes.c_long
    return function


_SYSCALL = _syscall()


def openat2_available() -> bool:
    """Whether this interpreter can make the call at all (the kernel may still refuse)."""
    return _SYSCALL is not None


class Beneath:
    """``openat2(dirfd, path, flags)`` confined beneath ``dirfd``, symlinks refused.

    ``__call__`` returns the new descriptor, or ``-errno`` (no exception object on
    the miss path). ``available`` turns False for good after ENOSYS (or a seccomp
    EPERM), and the caller walks instead.
    """

    __slots__ = ("_call", "_encoding", "_how", "_how_ref", "_size", "available")

    def __init__(self, flags: int) -> None:
        self._how = _OpenHow(flags, 0, RESOLVE_FLAGS)
        self._how_ref = ctypes.byref(self._how)
        self._size = ctypes.sizeof(_OpenHow)
        self._call = _SYSCALL
        self._encoding = sys.getfilesystemencoding()  # os.fsencode's, without its checks
        self.available = _SYSCALL is not None

    def __call__(self, dirfd: int, path: str) -> int:
        call = self._call
        if not self.available or call is None:
            return -errno.ENOSYS
        if "\x00" in path:  # a C string would end there: never open a shorter path
            return -errno.ENOENT
        fd: int = call(
            _SYS_OPENAT2, dirfd, path.encode(self._encoding, "surrogateescape"),
            self._how_ref, self._size,
        )
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code in UNAVAILABLE_ERRNOS:
            self.available = False
        return -code

    def probe(self, dirfd: int) -> None:
        """Open ``dirfd``'s own directory once; a refusal means walk from now on."""
        fd = self(dirfd, ".")
        if fd >= 0:
            os.close(fd)
        elif -fd in PROBE_FAILURES:
            self.available = False

    def disable(self) -> None:
        """Walk from now on (tests force the fallback with this)."""
        self.available = False
