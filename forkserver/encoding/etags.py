"""``etag: content``: strong entity-tags from the file's bytes, and tags of encodings.

Owns the content hash of a file version (the work a pool thread runs; hashlib
releases the GIL while it hashes buffers over 2 KiB), the bounded per-worker memo of
those tags, and how the tag of an encoded representation is derived from the tag of
the file. Must not decide which tag a response carries (the static site does) or
compare tags (``conditional``).

Why: Nix, reproducible builds and most deploy tools write every file anew with a new
mtime (Nix: mtime 1), so ``"<inode>-<size>-<mtime>"`` changes on every deploy though
the bytes did not, and every cache downstream refetches (Caddy #5546, #5734). A tag
from the bytes survives: identical content, identical tag, on every worker and
every machine. It is computed once per file version (device, inode, size, mtime) and
remembered; a redeploy costs one hash per file, not one per request.

The tag is BLAKE2b with a 128-bit digest, in hex: collisions are out of reach for
accidental change, and a deliberate collision would need an attacker who can write
the docroot. A tag of a different *representation* of the same file (on-the-fly gzip)
must differ in its opaque part, so that even the weak comparison of If-None-Match
(RFC 9110 §8.8.3.2) tells the two apart: a cache holding the gzip body must never be
told 304 for a client that asked for the identity one.
"""

from __future__ import annotations

import hashlib
import os

from forkserver.encoding.gzipcache import FileChanged, FileIdentity
from forkserver.encoding.lru import Memo

__all__ = [
    "DIGEST_BYTES", "TAG_ENTRIES", "ContentTags", "coded_tag", "content_tag", "hash_bytes",
    "hash_file",
]

DIGEST_BYTES = 16  # 128 bits: 32 hex digits in the tag
# Tags remembered per worker: ~250 bytes each with its key, so 64k tags are ~16 MiB
# at most, and a site of that many files hashes each at most once per version.
TAG_ENTRIES = 65536
# Bytes hashed per read: large enough that hashlib drops the GIL for most of the time,
# small enough that a 1 GiB file never sits in memory.
HASH_CHUNK = 1024 * 1024


def hash_file(fd: int, identity: FileIdentity) -> str:
    """The content tag of the file version ``identity``: runs on a pool thread.

    Reads with pread in bounded chunks (memory is one chunk, whatever the size). The
    caller hands over ``fd`` (a dup of its own) and this closes it. Raises FileChanged
    when the file is not that version any more: a tag must name the bytes it was
    computed from.
    """
    try:
        digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
        offset, size = 0, identity.size
        while offset < size:
            piece = os.pread(fd, min(HASH_CHUNK, size - offset), offset)
            if not piece:
                raise FileChanged(f"file shrank to {offset} bytes while hashed")
            digest.update(piece)
            offset += len(piece)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (identity.size, identity.mtime_ns):
            raise FileChanged("file changed while it was hashed")
        return content_tag(digest.hexdigest())
    finally:
        os.close(fd)


def content_tag(hex_digest: str) -> str:
    """The entity-tag for a digest: ``"<hex>"`` (RFC 9110 §8.8.3; hex is all etagc)."""
    return f'"{hex_digest}"'


def hash_bytes(data: bytes) -> str:
    """The content tag of bytes already in memory (small files, tests)."""
    return content_tag(hashlib.blake2b(data, digest_size=DIGEST_BYTES).hexdigest())


def coded_tag(tag: str, label: str) -> str:
    """The tag of another representation made from the one ``tag`` names.

    ``"abc"`` + ``gzip6`` → ``"abc-gzip6"`` (gzip at level 6: another level makes
    other bytes, and a strong tag promises the same bytes, §8.8.3); ``gunzip`` for a
    ``.gz`` decoded. A weak tag stays weak (``W/`` is kept in front).
    """
    return f'{tag[:-1]}-{label}"'


class ContentTags:
    """Content tags by file version, bounded (LRU)."""

    __slots__ = ("_memo",)

    def __init__(self, max_entries: int = TAG_ENTRIES) -> None:
        # Sizes are not counted: every tag is the same few dozen bytes.
        self._memo: Memo[FileIdentity, str] = Memo(max_entries, 0)

    def __len__(self) -> int:
        return len(self._memo)

    def get(self, identity: FileIdentity) -> str | None:
        return self._memo.get(identity)

    def put(self, identity: FileIdentity, tag: str) -> None:
        self._memo.put(identity, tag)
