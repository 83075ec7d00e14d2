"""The worker's caches stay bounded under churn and keep what is used (LRU, not emptied).

The parsed-head cache (``http/heads.py``) and the open-file cache
(``static/filecache.py``): a stream of distinct keys never grows them past their
bounds, and an entry used again meanwhile outlives older ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from forkserver.config import Limits
from forkserver.http.heads import HEAD_CACHE_ENTRIES, HeadParser
from forkserver.static import filecache
from forkserver.static.filecache import (
    CACHE_ENTRY_OVERHEAD,
    CACHE_IDLE_SECONDS,
    CACHE_RECHECK_SECONDS,
)
from tests.unit.test_static import Site


def head(number: int) -> bytes:
    return f"GET /x HTTP/1.1\r\nHost: a\r\nCookie: n={number}\r\n\r\n".encode()


def test_distinct_heads_never_grow_the_head_cache_and_a_reused_head_stays() -> None:
    parser = HeadParser(Limits())
    kept = head(-1)
    first = parser.parse(kept)
    assert first is not None
    for number in range(HEAD_CACHE_ENTRIES * 3):
        assert parser.parse(head(number)) is not None
        assert len(parser.heads) <= HEAD_CACHE_ENTRIES
        if number % (HEAD_CACHE_ENTRIES // 2) == 0:
            assert parser.parse(kept) is first  # used again: the same Request, kept
    assert head(0) not in parser.heads  # the least recently used went first
    assert head(HEAD_CACHE_ENTRIES * 3 - 1) in parser.heads


@pytest.fixture
def files(tmp_path: Path) -> Site:
    for name in "abcdef":
        (tmp_path / f"{name}.txt").write_bytes(name.encode() * 1000)
    return Site(tmp_path)


def test_the_file_cache_drops_the_least_recently_used(
    files: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.plan("/a.txt")
    one = files.site.files.size
    assert one >= 1000 + CACHE_ENTRY_OVERHEAD  # content, fields and overhead all count
    monkeypatch.setattr(filecache, "CACHE_TOTAL_BYTES", 3 * one + one // 2)
    files.plan("/b.txt")
    files.plan("/c.txt")
    assert files.site.files.entries.keys() == {"/a.txt", "/b.txt", "/c.txt"}
    assert files.body(files.plan("/a.txt")) == b"a" * 1000  # a hit: a is used again
    files.plan("/d.txt")  # full: b, the least recently used, goes
    assert list(files.site.files.entries) == ["/c.txt", "/a.txt", "/d.txt"]
    assert files.site.files.size <= filecache.CACHE_TOTAL_BYTES
    files.close()


def test_the_file_cache_is_bounded_in_entries(
    files: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filecache, "CACHE_ENTRIES", 2)
    for name in "abcdef":
        files.plan(f"/{name}.txt")  # once the cache is full, turned away the first time
        files.plan(f"/{name}.txt")  # and let in the second
        assert len(files.site.files.entries) <= 2
    assert list(files.site.files.entries) == ["/e.txt", "/f.txt"]
    files.close()


def test_files_asked_for_once_do_not_flush_a_full_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filecache, "CACHE_ENTRIES", 2)
    monkeypatch.setattr(filecache, "CACHE_SEEN_PATHS", 3)
    for number in range(12):
        (tmp_path / f"{number}.txt").write_bytes(b"%d" % number * 100)
    files = Site(tmp_path)
    files.plan("/0.txt")
    files.plan("/1.txt")  # room: both enter on their first miss
    for number in range(2, 12):  # a scan: each asked for once, each answered whole
        assert files.body(files.plan(f"/{number}.txt")) == b"%d" % number * 100
    assert list(files.site.files.entries) == ["/0.txt", "/1.txt"]  # kept
    assert list(files.site.files.seen) == ["/9.txt", "/10.txt", "/11.txt"]  # bounded
    files.plan("/11.txt")  # asked for again while remembered as turned away: enters
    assert list(files.site.files.entries) == ["/1.txt", "/11.txt"]
    assert "/11.txt" not in files.site.files.seen
    files.close()


def test_expired_entries_are_dropped_whatever_their_order(files: Site) -> None:
    files.plan("/a.txt")
    files.clock.advance(CACHE_RECHECK_SECONDS / 2)
    files.plan("/b.txt")
    files.plan("/a.txt")  # a hit moves a after b: the order is no longer by expiry
    assert list(files.site.files.entries) == ["/b.txt", "/a.txt"]
    idle = CACHE_RECHECK_SECONDS + CACHE_IDLE_SECONDS
    files.site.drop_expired(files.clock.now + idle - CACHE_RECHECK_SECONDS * 0.25)
    assert list(files.site.files.entries) == ["/b.txt"]  # a expired first, b not yet
    files.site.drop_expired(files.clock.now + idle)
    assert files.site.files.size == 0 and not files.site.files.entries
    files.close()
