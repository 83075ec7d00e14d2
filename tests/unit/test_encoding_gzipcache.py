"""encoding/lru.py and encoding/gzipcache.py: bounded LRU memory, file identities,
gzip made once per file version."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from forkserver.encoding.gzipcache import (
    CompressedBody,
    FileChanged,
    FileIdentity,
    GzipCache,
    compress_bytes,
    compress_file,
    file_identity,
    read_whole,
)
from forkserver.encoding.lru import Memo

CSS = b"".join(b".rule-%d { color: #%06x; margin: 0 auto; }\n" % (i, i * 37) for i in range(3000))


# -- the LRU memo ---------------------------------------------------------------------
def test_memo_is_bounded_in_entries_and_drops_the_least_recently_used() -> None:
    memo: Memo[str, int] = Memo(max_entries=3, max_bytes=1000)
    for key in "abc":
        memo.put(key, ord(key), 1)
    assert memo.get("a") == ord("a")  # a is now the most recent
    memo.put("d", 4, 1)
    assert "b" not in memo  # the least recently used went
    assert [k for k in "abcd" if k in memo] == ["a", "c", "d"]
    assert len(memo) == 3


def test_memo_is_bounded_in_bytes() -> None:
    memo: Memo[str, bytes] = Memo(max_entries=100, max_bytes=10)
    memo.put("a", b"aaaa", 4)
    memo.put("b", b"bbbb", 4)
    memo.put("c", b"cccc", 4)  # 12 > 10: a goes
    assert "a" not in memo and memo.size == 8
    memo.put("d", b"d" * 10, 10)  # takes the whole budget
    assert list(k for k in "abcd" if k in memo) == ["d"] and memo.size == 10


def test_memo_refuses_a_value_larger_than_the_whole_budget_and_keeps_the_rest() -> None:
    memo: Memo[str, bytes] = Memo(max_entries=100, max_bytes=10)
    memo.put("small", b"s", 1)
    assert not memo.put("huge", b"h" * 11, 11)
    assert "small" in memo and "huge" not in memo and memo.size == 1


def test_memo_replacing_a_key_adjusts_its_size() -> None:
    memo: Memo[str, bytes] = Memo(max_entries=10, max_bytes=100)
    memo.put("a", b"x", 50)
    memo.put("a", b"y", 20)
    assert memo.size == 20 and memo.get("a") == b"y"
    memo.discard("a")
    assert memo.size == 0 and len(memo) == 0


# -- identities -----------------------------------------------------------------------
def test_identity_changes_with_a_write_and_with_an_atomic_rename(tmp_path: Path) -> None:
    path = tmp_path / "site.css"
    path.write_bytes(CSS)
    first = file_identity(os.stat(path))
    assert first == FileIdentity(*first)  # a plain tuple: cheap as a dict key
    os.utime(path, ns=(first.mtime_ns + 1, first.mtime_ns + 1))  # rewritten, same size
    second = file_identity(os.stat(path))
    assert second != first and second.size == first.size
    replacement = tmp_path / "site.css.new"
    replacement.write_bytes(CSS)
    os.utime(replacement, ns=(second.mtime_ns, second.mtime_ns))
    os.rename(replacement, path)  # same bytes, same mtime: another inode
    third = file_identity(os.stat(path))
    assert third.inode != second.inode and third != second


# -- compression ----------------------------------------------------------------------
def test_compressed_bytes_are_gzip_and_the_same_in_every_worker() -> None:
    body = compress_bytes(CSS, 6)
    assert body[:2] == b"\x1f\x8b" and gzip.decompress(body) == CSS
    assert compress_bytes(CSS, 6) == body  # mtime 0, no name: deterministic
    assert len(body) < len(CSS) // 4
    assert compress_bytes(CSS, 1) != compress_bytes(CSS, 9)


def test_compress_file_reads_the_version_and_closes_its_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "site.css"
    path.write_bytes(CSS)
    fd = os.open(path, os.O_RDONLY)
    identity = file_identity(os.fstat(fd))
    result = compress_file(fd, identity, 6)
    assert result == CompressedBody(compress_bytes(CSS, 6), identity, 6)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed


def test_a_file_truncated_under_the_job_is_not_filed_under_its_old_identity(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.css"
    path.write_bytes(CSS)
    fd = os.open(path, os.O_RDONLY)
    identity = file_identity(os.fstat(fd))
    os.truncate(path, 100)
    with pytest.raises(FileChanged):
        compress_file(fd, identity, 6)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(FileChanged):
            read_whole(fd, len(CSS))
    finally:
        os.close(fd)


def test_a_file_rewritten_under_the_job_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.css"
    path.write_bytes(CSS)
    fd = os.open(path, os.O_RDONLY)
    identity = file_identity(os.fstat(fd))
    stale = identity._replace(mtime_ns=identity.mtime_ns - 1)
    with pytest.raises(FileChanged):
        compress_file(fd, stale, 6)


def test_gzip_cache_keys_on_the_version_and_the_level_and_is_bounded() -> None:
    cache = GzipCache(max_bytes=100, max_entries=2)
    one = FileIdentity(1, 10, 500, 1_000)
    cache.put(CompressedBody(b"a" * 40, one, 6))
    assert cache.get(one, 6) == b"a" * 40
    assert cache.get(one, 9) is None  # another level, other bytes
    assert cache.get(one._replace(mtime_ns=2_000), 6) is None  # another version
    assert cache.get(one._replace(inode=11), 6) is None  # replaced by rename
    two, three = one._replace(inode=2), one._replace(inode=3)
    cache.put(CompressedBody(b"b" * 40, two, 6))
    cache.get(one, 6)  # one is now more recent than two
    cache.put(CompressedBody(b"c" * 40, three, 6))  # entries bound: two goes
    assert cache.get(two, 6) is None and cache.get(one, 6) is not None
    assert len(cache) == 2 and cache.size == 80
    assert not cache.put(CompressedBody(b"d" * 101, one._replace(inode=4), 6))
    assert cache.size == 80
