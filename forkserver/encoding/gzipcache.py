"""On-the-fly gzip (SPEC §10 ``compress:``): compress a file once per version, keep it.

Owns the identity of a file version, the compression of one file's bytes, and the
bounded per-worker cache of the results. Must not decide *whether* to compress (the
static site does, by type, size and Accept-Encoding), touch sockets, or run on the
event loop's turn for large files (``compress_file`` is the work a pool thread runs;
zlib releases the GIL while it deflates).

Why a cache: nginx's ``gzip on`` deflates every response again, which at level 6 costs
about 1 ms of CPU per 100 KiB of CSS; lighttpd's mod_deflate keeps the result. A hot
file here is compressed once per version and then sent from memory.

The key is the file's identity ``(st_dev, st_ino, st_size, st_mtime_ns)`` plus the
level: a rewrite changes mtime (and usually size), an atomic rename changes the inode,
so a stale body can never be served for a new version; a new level makes new bytes.
"""

from __future__ import annotations

import os
import zlib
from typing import NamedTuple

from forkserver.encoding.lru import Memo

__all__ = [
    "CACHE_BYTES",
    "CACHE_ENTRIES",
    "MAX_INPUT_BYTES",
    "CompressedBody",
    "FileIdentity",
    "GzipCache",
    "compress_bytes",
    "compress_file",
    "file_identity",
    "read_whole",
]

# Per worker. 8 MiB of gzip is ~40 MiB of text at the usual 5:1, enough for every hot
# asset of a typical site; with two workers it stays beside the 4 MiB open-file cache
# within the memory budget of docs/operations.md.
CACHE_BYTES = 8 * 1024 * 1024
CACHE_ENTRIES = 1024
# Files larger than this are sent uncompressed: the whole input is read into memory
# to compress it (a stream would need chunked framing; every response here carries a
# Content-Length), so this bounds a job's memory. nginx streams any size.
MAX_INPUT_BYTES = 8 * 1024 * 1024
# pread in pieces of this size: one read of a 8 MiB file is fine for the kernel, but
# a short read (a file truncated under us) must be noticed, not looped on forever.
READ_CHUNK = 1024 * 1024


class FileIdentity(NamedTuple):
    """One version of one file: what a write, truncate or atomic rename changes."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def file_identity(st: os.stat_result) -> FileIdentity:
    return FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class CompressedBody(NamedTuple):
    """A gzip body and the file version it was made from."""

    body: bytes
    source: FileIdentity
    level: int


class FileChanged(OSError):
    """The file's size no longer matches the version being compressed or hashed."""


def read_whole(fd: int, size: int) -> bytes:
    """Read exactly ``size`` bytes from the start of ``fd`` (pread: no shared offset).

    Raises FileChanged when the file turns out shorter: it was truncated under us,
    and the bytes would not match the identity they are filed under.
    """
    pieces: list[bytes] = []
    offset = 0
    while offset < size:
        piece = os.pread(fd, min(READ_CHUNK, size - offset), offset)
        if not piece:
            raise FileChanged(f"file shrank to {offset} bytes while read (expected {size})")
        pieces.append(piece)
        offset += len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def compress_bytes(data: bytes, level: int) -> bytes:
    """gzip (RFC 1952) of ``data``: zlib's header with mtime 0 and no file name, so
    every worker makes the same bytes for the same input (one strong ETag holds)."""
    return zlib.compress(data, level, wbits=31)


def compress_file(fd: int, identity: FileIdentity, level: int) -> CompressedBody:
    """The gzip body of the file version ``identity``: runs on a pool thread.

    The caller hands over ``fd`` (a dup of its own) and this closes it. Raises
    FileChanged when the file no longer is the version asked for.
    """
    try:
        data = read_whole(fd, identity.size)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (identity.size, identity.mtime_ns):
            raise FileChanged("file changed while it was compressed")
        return CompressedBody(compress_bytes(data, level), identity, level)
    finally:
        os.close(fd)


class GzipCache:
    """Compressed bodies by (file version, level), bounded in bytes and entries (LRU)."""

    __slots__ = ("_memo",)

    def __init__(self, max_bytes: int = CACHE_BYTES, max_entries: int = CACHE_ENTRIES) -> None:
        self._memo: Memo[tuple[FileIdentity, int], bytes] = Memo(max_entries, max_bytes)

    def __len__(self) -> int:
        return len(self._memo)

    @property
    def size(self) -> int:
        """Bytes of compressed bodies held."""
        return self._memo.size

    def get(self, identity: FileIdentity, level: int) -> bytes | None:
        return self._memo.get((identity, level))

    def put(self, result: CompressedBody) -> bool:
        """Keep a body; False when it alone is larger than the whole cache."""
        return self._memo.put((result.source, result.level), result.body, len(result.body))
