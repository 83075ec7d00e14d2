"""The docroot and the contained walk: names in, an open descriptor inside the docroot out.

Owns the docroot's ``O_PATH`` descriptor and every ``openat`` under it: files,
directories, a file's precompressed siblings, directory listings. Must not decide
what a request means or build a response: it raises ``Refused`` with the status an
open failed with (403, 404, 500, 503) and ``NoIndex`` for a directory without an
index file, and the site turns those into plans.

Containment (how "nothing outside the docroot" is made true, not just checked): the
worker holds an ``O_PATH`` descriptor of the docroot, opened once. Each request walks
the normalised segments from it with ``openat``, one component at a time, with
``O_NOFOLLOW`` — a walk of plain names (never ``..``) that never follows a symlink
cannot leave the directory tree of that descriptor. Only when the walk meets a
symlink does ``os.path.realpath`` run: its result must lie under the docroot's real
path with no dot segment, and it is then walked the same way. A symlink swapped in
between the check and the open makes that walk fail (``ELOOP``) → 404; metadata comes
from ``fstat`` on the opened descriptor, never from the path. What remains outside
this guarantee is deliberate administration: bind mounts and hard links inside the
docroot are served like any other file. As in nginx, the final component is opened
before ``fstat`` says what it is, so a device node placed in the docroot has its
driver's open run (``O_NONBLOCK | O_NOCTTY``) before it is refused with 404.

Because the descriptor is held, the docroot is pinned when a worker starts: a deploy
that swaps a symlinked docroot (``current -> release-N``) takes effect on reload
(HUP), so each worker generation serves one consistent tree.

Symlinks are followed only when their real target stays inside the docroot; one
that escapes answers 404 (not 403, so a client cannot tell an escaping link from a
missing file), and so does one whose real path has a hidden name.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from forkserver.errors import StartupError
from forkserver.static.autoindex import Listing, scan_directory
from forkserver.static.beneath import Beneath
from forkserver.static.paths import hidden
from forkserver.static.variantindex import VariantIndex

__all__ = ["Docroot", "NoIndex", "Opened", "Refused"]

# openat flags. Directories on the way are opened O_PATH (no read permission needed,
# nothing is really opened); O_NOFOLLOW refuses a symlink at every step. The final
# component is opened for reading without blocking (a FIFO must not hang the worker)
# and without becoming a controlling terminal; fstat then decides what it is.
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_PROBE_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# A symlink met on the walk: ELOOP as the final component, ENOTDIR on the way.
_SYMLINK_ERRORS = frozenset({errno.ELOOP, errno.ENOTDIR})
_FORBIDDEN_ERRORS = frozenset({errno.EACCES, errno.EPERM})
_OVERLOAD_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
_MISSING_ERRORS = frozenset({
    errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.ENXIO,
    errno.EINVAL, errno.ENODEV, errno.EOPNOTSUPP,
})


class Refused(Exception):
    """Resolution ended in an error status (internal to the planner)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class NoIndex(Exception):
    """The path is a directory without a servable index file (a listing or 403)."""


@dataclass(slots=True)
class Opened:
    """A file opened by the contained walk: its fd, its directory and the names walked.

    ``names`` are symlink-free when the walk had to follow a symlink (the real path);
    ``parent`` is an O_PATH descriptor of the containing directory, or the docroot's,
    or -1 when ``openat2`` opened the file in one call: ``Docroot.parent_of`` opens it
    when a sibling is needed (the caller's ``release`` then closes it).
    """

    fd: int
    parent: int
    names: list[str]


class Docroot:
    """The docroot of one site, opened once (``StartupError`` when it cannot be)."""

    def __init__(
        self, path: str, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = os.path.realpath(path)
        # Prefix a resolved symlink target must start with to count as inside.
        self._prefix = self.root if self.root.endswith("/") else self.root + "/"
        try:
            self._root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StartupError(f"docroot {path} cannot be opened: {exc.strerror}") from None
        # One openat2 per file where the kernel offers it; the walk otherwise.
        self.beneath = Beneath(_FILE_FLAGS)
        self._beneath_directory = Beneath(_DIR_FLAGS)
        self.beneath.probe(self._root_fd)
        if not self.beneath.available:
            self._beneath_directory.disable()
        # Which directories hold precompressed siblings, relisted once per window.
        self.variants = VariantIndex(self._list_names, monotonic)

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def listing(self, names: list[str], url_path: str) -> Listing:
        """The entries of the directory ``names`` (404 if it is not one, 403 if it
        cannot be read); symlinks out of the docroot or to hidden names are left out."""
        opened = self.open(names, directory=False)
        try:
            if not stat.S_ISDIR(os.fstat(opened.fd).st_mode):
                raise Refused(404)
            try:
                return scan_directory(
                    opened.fd, url_path, lambda name: self.inside([*opened.names, name])
                )
            except OSError:
                raise Refused(403) from None  # a search-only directory cannot be listed
        finally:
            self.release(opened.parent)
            os.close(opened.fd)

    def inside(self, names: list[str]) -> bool:
        """Whether the symlink ``names`` leads inside the docroot, to no hidden name."""
        try:
            self._real_names(names)
        except Refused:
            return False
        return True

    # -- precompressed siblings -------------------------------------------------------
    def fresh_variant(self, opened: Opened, name: str, original: os.stat_result) -> bool:
        """Whether ``name`` beside the file is a regular file, inside, not older than it."""
        if not self.variants.may_exist(opened.names, name):
            return False  # its directory had no such name when last listed (1 s window)
        return self.probe_variant(opened, name, original)

    def probe_variant(self, opened: Opened, name: str, original: os.stat_result) -> bool:
        """``fresh_variant`` without asking the variant index (the caller did)."""
        parent = self.parent_of(opened)
        if parent < 0:
            return False
        # Most files have no variant: faccessat answers that without building an
        # exception or a stat result (about half the cost of a failing os.stat).
        if not os.access(name, os.F_OK, dir_fd=parent, follow_symlinks=False):
            return False  # ENOENT, and ENAMETOOLONG and friends mean "none" too
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return False
        if stat.S_ISLNK(info.st_mode):
            variant = self.open_variant(opened, name, original)
            if variant is None:
                return False
            os.close(variant[0])
            return True
        return stat.S_ISREG(info.st_mode) and info.st_mtime_ns >= original.st_mtime_ns

    def open_variant(
        self, opened: Opened, name: str, original: os.stat_result
    ) -> tuple[int, os.stat_result] | None:
        """Open a variant by the contained walk; judged by fstat, so a swap cannot fool it."""
        try:
            try:
                parent = self.parent_of(opened)
                if parent < 0:
                    return None
                fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    return None
                linked = self.open([*opened.names[:-1], name], directory=False)
                self.release(linked.parent)
                fd = linked.fd
        except (Refused, NoIndex):
            return None
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_mtime_ns < original.st_mtime_ns:
            os.close(fd)  # a stale variant is never served
            return None
        return fd, info

    def parent_of(self, opened: Opened) -> int:
        """``opened``'s directory (O_PATH), opened now if ``openat2`` skipped it; -1 if
        it cannot be (then there is no sibling to find). Kept in ``opened.parent``."""
        if opened.parent < 0:
            names = opened.names[:-1]
            if not names:
                opened.parent = self._root_fd
            else:
                fd = self._beneath_directory(self._root_fd, "/".join(names))
                if fd < 0:
                    try:
                        fd, parent = self._walk(names)
                    except OSError:
                        return -1
                    self.release(parent)
                opened.parent = fd
        return opened.parent

    def _list_names(self, names: list[str]) -> list[str] | None:
        """The names in the directory ``names`` (for the variant index), or None."""
        try:
            opened = self.open(names, directory=False)
        except (Refused, NoIndex):
            return None
        try:
            return os.listdir(opened.fd)
        except OSError:
            return None  # not a directory, or search-only (mode --x): probe instead
        finally:
            self.release(opened.parent)
            os.close(opened.fd)

    # -- the walk -----------------------------------------------------------
    def release(self, parent: int) -> None:
        if parent >= 0 and parent != self._root_fd:
            os.close(parent)

    def open(self, names: list[str], directory: bool) -> Opened:
        """Open what ``names`` leads to, contained in the docroot; or raise Refused.

        With ``directory`` (the last name is the index file) a directory without it
        raises NoIndex. The caller closes ``fd`` and releases ``parent``.

        First ``openat2`` beneath the docroot with every symlink refused (one call);
        a symlink (ELOOP), a refusal or any other error takes the walk, which decides
        as it always has. A plain ENOENT of a file is 404 at once: with no symlink on
        the way the walk would meet the same missing name.
        """
        if names:
            fd = self.beneath(self._root_fd, "/".join(names))
            if fd >= 0:
                return Opened(fd, -1, names)
            if fd == -errno.ENOENT and not directory:
                raise Refused(404)
        try:
            try:
                fd, parent = self._walk(names)
                return Opened(fd, parent, names)
            except OSError as exc:
                if exc.errno not in _SYMLINK_ERRORS:
                    raise
            real = self._real_names(names)
            fd, parent = self._walk(real)
            return Opened(fd, parent, real)
        except OSError as exc:
            code = exc.errno
            if code == errno.ENOENT and directory:
                if self._is_directory(names[:-1]):
                    raise NoIndex from None
                raise Refused(404) from None
            if code in _FORBIDDEN_ERRORS:
                raise Refused(403) from None
            if code in _MISSING_ERRORS:
                raise Refused(404) from None
            if code in _OVERLOAD_ERRORS:
                raise Refused(503) from None
            raise Refused(500) from None

    def _is_directory(self, names: list[str]) -> bool:
        opened = self.open(names, False)
        try:
            return stat.S_ISDIR(os.fstat(opened.fd).st_mode)
        finally:
            self.release(opened.parent)
            os.close(opened.fd)

    def _walk(self, names: list[str]) -> tuple[int, int]:
        """openat one component at a time from the docroot, never following a symlink.

        Returns (fd of the last name, O_PATH fd of its directory or the docroot's).
        """
        root = self._root_fd
        if not names:
            return os.open(".", _FILE_FLAGS, dir_fd=root), root
        parent = root
        try:
            for name in names[:-1]:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                if parent != root:
                    os.close(parent)
                parent = fd
            try:
                return os.open(names[-1], _FILE_FLAGS, dir_fd=parent), parent
            except PermissionError:
                # A directory may be searchable but not readable (mode --x): it can
                # still hold an index file, so look at what it is without reading it.
                return self._probe_directory(names[-1], parent), parent
        except BaseException:
            if parent != root:
                os.close(parent)
            raise

    @staticmethod
    def _probe_directory(name: str, parent: int) -> int:
        fd = os.open(name, _PROBE_FLAGS, dir_fd=parent)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
        raise PermissionError(errno.EACCES, "permission denied")

    def _real_names(self, names: list[str]) -> list[str]:
        """The symlink-free names of the real target, if it is inside and not hidden."""
        candidate = self._prefix + "/".join(names)
        try:
            real = os.path.realpath(candidate)
        except (OSError, ValueError, RecursionError):
            raise Refused(404) from None
        if real == self.root:
            return []
        if not real.startswith(self._prefix):
            raise Refused(404)  # a symlink out of the docroot
        real_names = real[len(self._prefix) :].split("/")
        if hidden(real_names):
            raise Refused(404)  # a symlink to a hidden file
        return real_names
