"""The open-file cache: a worker's recently served small files, trusted for a second.

Owns the entries (a 200's encoded fields, validators, and the content or a shared
descriptor), their bounds (bytes, descriptors) and their expiry. Must not decide
whether an entry answers a request (the site does: Range, preconditions, HEAD) nor
read the clock: every time it is given is the caller's monotonic ``now``.

An entry with a descriptor holds one reference to a ``SharedDescriptor``; each
response lent it holds another (``lend``). Dropping the entry releases the cache's
reference, so the descriptor closes when the last response sending from it is done.
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict
from dataclasses import dataclass

from forkserver.http.response import FileBody, SharedDescriptor

__all__ = [
    "CACHE_CONTENT_BYTES",
    "CACHE_DESCRIPTORS",
    "CACHE_ENTRIES",
    "CACHE_ENTRY_OVERHEAD",
    "CACHE_FILE_BYTES",
    "CACHE_IDLE_SECONDS",
    "CACHE_INLINE_BYTES",
    "CACHE_RECHECK_SECONDS",
    "CACHE_SEEN_PATHS",
    "CACHE_TOTAL_BYTES",
    "CachedFile",
    "FileCache",
]

# The open-file cache (per worker): small files are answered from memory, head and
# body in one send, with no syscall at all. Like nginx's open_file_cache_valid, an
# entry is trusted for CACHE_RECHECK_SECONDS: the first hit after that opens the file
# again through the contained walk (static/freshness.py), which re-checks
# containment, dotfiles, permissions, newly added .br/.gz variants and whether the
# file is the same unchanged inode; an entry that passes is trusted for another
# window, anything else takes the full path. So a rewritten, replaced or deleted file
# is served fresh within a second. A stat on every hit instead cost about 2.4 us of a
# 1 KiB request's ~28 us of CPU (bench/hotpath.py).
#
# Files up to CACHE_INLINE_BYTES are kept in memory. Larger ones up to CACHE_FILE_BYTES
# keep an open descriptor instead, and a hit lends it to the response, which sends it
# with sendfile: for 64 KiB, copying the content into the socket costs more than
# sendfile (measured: 64 KiB keep-alive ~30k req/s from memory, ~25k through the full
# path with sendfile, ~37k from a cached descriptor).
#
# A real site's working set (thousands of small files) does not fit CACHE_CONTENT_BYTES:
# once the contents fill it, a small file is remembered like a larger one, by its
# descriptor and encoded head (~1 KiB, no content), so most requests of a site of a few
# thousand files are hits (head + sendfile) instead of misses (issue 15).
CACHE_INLINE_BYTES = 16 * 1024
CACHE_FILE_BYTES = 1024 * 1024  # larger files take the full path every time
CACHE_CONTENT_BYTES = 4 * 1024 * 1024  # per worker: contents held in memory
CACHE_ENTRIES = 4096  # per worker: entries of any size
# Per worker, everything counted (contents, encoded fields, CACHE_ENTRY_OVERHEAD each):
# the contents plus a full table of entries without content.
CACHE_TOTAL_BYTES = CACHE_CONTENT_BYTES + CACHE_ENTRIES * 1536
# Open descriptors the cache may hold: at most a quarter of the descriptor table, so
# connections, walks, responses in flight and the Acceptor's reserve keep the rest
# (RLIMIT_NOFILE 1024 → 256; 20000 → CACHE_ENTRIES).
CACHE_DESCRIPTORS = min(CACHE_ENTRIES, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4)
# What an entry costs beyond its content and encoded fields (the dataclass, the field
# list and its strings: ~0.95 KiB measured with tracemalloc), counted against
# CACHE_TOTAL_BYTES so that thousands of tiny files cannot hold far more than it says.
CACHE_ENTRY_OVERHEAD = 1024
CACHE_RECHECK_SECONDS = 1.0
# Once the cache is full, a miss enters only if its path missed before, among the last
# CACHE_SEEN_PATHS paths that were turned away (like nginx's open_file_cache_min_uses
# 2, but only when something would have to be evicted): a flood of files asked for
# once (a crawler, the cold benchmark) no longer evicts what is asked for again, and
# its requests skip building and evicting entries nobody will use.
CACHE_SEEN_PATHS = CACHE_ENTRIES // 2
# The worker's sweep drops an entry this long after its window ended without a hit
# (renewing it then would have cost an open; rebuilding it costs a little more), so a
# descriptor of a deleted file is not held for long by a file nobody asks for.
CACHE_IDLE_SECONDS = 2.0


@dataclass(slots=True)
class CachedFile:
    """A small file's 200 answer, trusted for CACHE_RECHECK_SECONDS after it was read."""

    headers: list[tuple[str, str]]  # a 200's fields
    encoded: bytes  # the same fields as the worker sends them, encoded once
    validators: list[tuple[str, str]]  # what a 304 carries
    tag: str
    last_modified: int
    content: bytes  # the body, for files up to CACHE_INLINE_BYTES
    # Else the cache's reference to the file's descriptor (None when ``content`` holds
    # it); each response lent it holds one more, so it closes when the last is done.
    descriptor: SharedDescriptor | None
    version: tuple[int, int]  # file_version when it was opened
    expires: float  # monotonic time after which the next hit re-checks the file
    names: list[str]  # the request's names in the docroot, opened again to re-check
    identity: tuple[int, int, int, int, int]  # freshness.identity of the file read


class FileCache:
    """Entries by request path, least recently used first.

    Full, it drops the least recently used entries (``use`` moves an entry to the
    end), not all of them: under churn (a site mix far larger than the cache) the
    popular files stay.
    """

    __slots__ = ("content_bytes", "descriptors", "entries", "last", "seen", "size")

    def __init__(self) -> None:
        # request path → entry, least recently used first. An OrderedDict, not a dict:
        # a dict whose oldest keys keep being deleted leaves dummies at its front that
        # next(iter()) walks past, so evicting from a full 4,096-entry dict cost 2.1 us
        # (0.2 us here), and moving a hit to the end 0.37 us (0.08 us here).
        self.entries: OrderedDict[str, CachedFile] = OrderedDict()
        self.size = 0  # bytes held: content, encoded fields, CACHE_ENTRY_OVERHEAD each
        self.descriptors = 0  # descriptors held
        self.content_bytes = 0  # of ``size``, the contents held in memory
        self.last: CachedFile | None = None  # the most recently used entry
        self.seen: OrderedDict[str, None] = OrderedDict()  # paths turned away, oldest first

    def admits(self, path: str) -> bool:
        """Whether a miss of ``path`` may enter: always while there is room; once the
        cache is full, only a path turned away before (CACHE_SEEN_PATHS)."""
        if (
            len(self.entries) < CACHE_ENTRIES
            and self.descriptors < CACHE_DESCRIPTORS
            and self.size + CACHE_ENTRY_OVERHEAD <= CACHE_TOTAL_BYTES
        ):
            return True
        seen = self.seen
        if path in seen:
            del seen[path]
            return True
        seen[path] = None
        if len(seen) > CACHE_SEEN_PATHS:
            seen.popitem(last=False)
        return False

    def holds_content(self, size: int) -> bool:
        """Whether a content of ``size`` bytes still fits CACHE_CONTENT_BYTES (else the
        entry keeps the descriptor instead)."""
        return self.content_bytes + size <= CACHE_CONTENT_BYTES

    def use(self, path: str, entry: CachedFile) -> None:
        """Make ``entry``, the one for ``path``, the most recently used."""
        self.entries.move_to_end(path)
        self.last = entry

    def remember(self, path: str, entry: CachedFile) -> None:
        """Add ``entry`` for ``path``, dropping the least recently used entries to stay
        in bounds."""
        self.forget(path)
        size = _cost(entry)
        descriptors = 0 if entry.descriptor is None else 1
        while self.entries and (
            self.size + size > CACHE_TOTAL_BYTES
            or self.descriptors + descriptors > CACHE_DESCRIPTORS
            or len(self.entries) >= CACHE_ENTRIES
        ):
            self.forget(next(iter(self.entries)))  # the least recently used entry
        self.entries[path] = entry
        self.last = entry
        self.size += size
        self.descriptors += descriptors
        self.content_bytes += len(entry.content)

    def keep(self, path: str, entry: CachedFile, fd: int, size: int) -> bytes | FileBody | None:
        """Remember ``entry`` (``size`` bytes open at ``fd``) for ``path`` and return what
        this response sends; None after a short read (``fd`` stays the caller's).

        Up to CACHE_INLINE_BYTES the answer is the content, sent from memory in one send;
        the cache keeps the content while CACHE_CONTENT_BYTES has room, else the
        descriptor. Larger files: the cache and the response share the descriptor."""
        if size > CACHE_INLINE_BYTES:
            descriptor = SharedDescriptor(fd)
            entry.descriptor = descriptor.share()
            self.remember(path, entry)
            return FileBody(descriptor, 0, size, entry.version)
        content = os.pread(fd, size, 0)
        if len(content) != size:
            return None
        if self.holds_content(size):
            entry.content = content
            os.close(fd)
        else:
            entry.descriptor = SharedDescriptor(fd)
        self.remember(path, entry)
        return content

    @staticmethod
    def lend(entry: CachedFile, descriptor: SharedDescriptor) -> FileBody:
        """The whole file from ``entry``'s descriptor, for one response to send and
        hand back with close_body (a dup + close per hit cost two syscalls of six)."""
        return FileBody(descriptor.share(), 0, entry.version[0], entry.version)

    def drop_expired(self, now: float) -> None:
        """Drop entries CACHE_IDLE_SECONDS past their window (monotonic ``now``), so
        their descriptors are not held until the path is asked for again. Hits reorder
        the entries, so all are looked at (at most CACHE_ENTRIES, once per sweep)."""
        stale = now - CACHE_IDLE_SECONDS
        for path in [path for path, entry in self.entries.items() if entry.expires <= stale]:
            self.forget(path)

    def forget(self, path: str) -> None:
        """Drop the entry for ``path``, if any; a lent descriptor stays open until the
        last response sending from it is done."""
        entry = self.entries.pop(path, None)
        if entry is not None:
            self.size -= _cost(entry)
            self.content_bytes -= len(entry.content)
            if entry.descriptor is not None:
                self.descriptors -= 1
                entry.descriptor.close()

    def clear(self) -> None:
        for path in list(self.entries):
            self.forget(path)


def _cost(entry: CachedFile) -> int:
    """Bytes ``entry`` is counted for against CACHE_TOTAL_BYTES."""
    return len(entry.content) + len(entry.encoded) + CACHE_ENTRY_OVERHEAD
