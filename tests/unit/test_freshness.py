"""An open-file cache entry past its second: renewed when the file is unchanged, rebuilt
(or refused) when anything a full plan would decide differently has changed.

``static/freshness.py`` reopens the request's names through the contained walk and
compares the inode, size, mtime and ctime; each test changes one of the things the
full path re-checks and shows the first answer after the window is the full path's.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkserver.http.response import close_body
from forkserver.static import CACHE_IDLE_SECONDS, CACHE_RECHECK_SECONDS
from tests.unit.test_static import Site, headers_of, open_fds


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "dir").mkdir(parents=True)
    (root / "page.html").write_bytes(b"<p>first</p>\n")
    (root / "dir" / "index.html").write_bytes(b"<p>index</p>\n")
    (root / "big.bin").write_bytes(bytes(range(256)) * 256)  # 64 KiB: a descriptor entry
    (tmp_path / "outside.html").write_bytes(b"<p>outside</p>\n")
    return root


@pytest.fixture
def site(docroot: Path) -> Iterator[Site]:
    before = open_fds()
    made = Site(docroot)
    yield made
    made.close()
    assert open_fds() == before  # every reopen for a check was closed again


@pytest.mark.parametrize("path", ["/page.html", "/dir/", "/big.bin"])
def test_an_unchanged_file_is_renewed_not_rebuilt(site: Site, path: str) -> None:
    first = site.body(site.plan(path))
    entry = site.site.files.entries[path]
    for _ in range(3):
        site.clock.advance(CACHE_RECHECK_SECONDS)
        assert site.body(site.plan(path)) == first
        assert site.site.files.entries[path] is entry  # the same answer, checked again
        assert entry.expires == site.clock.now + CACHE_RECHECK_SECONDS


def test_a_same_size_rewrite_with_the_mtime_put_back_is_served_fresh(
    site: Site, docroot: Path
) -> None:
    page = docroot / "page.html"
    before = page.stat()
    assert site.body(site.plan("/page.html")) == b"<p>first</p>\n"
    page.write_bytes(b"<p>other</p>\n")  # same size, same inode
    os.utime(page, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
    assert page.stat().st_size == before.st_size
    site.clock.advance(CACHE_RECHECK_SECONDS)
    assert site.body(site.plan("/page.html")) == b"<p>other</p>\n"  # ctime told


def test_a_file_renamed_over_is_served_fresh_with_its_new_tag(
    site: Site, docroot: Path
) -> None:
    old_tag = headers_of(site.plan("/page.html"))["etag"]
    fresh = docroot / "fresh.tmp"
    fresh.write_bytes(b"<p>third</p>\n")  # same size again, a new inode
    fresh.rename(docroot / "page.html")
    site.clock.advance(CACHE_RECHECK_SECONDS)
    result = site.plan("/page.html")
    assert site.body(result) == b"<p>third</p>\n"
    assert headers_of(result)["etag"] != old_tag


def test_a_variant_added_beside_a_cached_file_is_offered_after_the_window(
    site: Site, docroot: Path
) -> None:
    accepts = {"accept-encoding": "gzip"}
    plain = site.plan("/page.html", headers=accepts)
    assert "content-encoding" not in headers_of(plain)
    site.body(plain)
    (docroot / "page.html.gz").write_bytes(gzip.compress(b"<p>first</p>\n"))
    site.clock.advance(CACHE_RECHECK_SECONDS)
    coded = headers_of(site.plan("/page.html", headers=accepts))
    assert coded["content-encoding"] == "gzip" and coded["vary"] == "Accept-Encoding"


def test_a_symlink_out_of_the_docroot_in_place_of_a_cached_file_is_404(
    site: Site, docroot: Path
) -> None:
    assert site.status("/page.html") == 200
    (docroot / "page.html").unlink()
    (docroot / "page.html").symlink_to(docroot.parent / "outside.html")
    site.clock.advance(CACHE_RECHECK_SECONDS)
    assert site.status("/page.html") == 404
    assert "/page.html" not in site.site.files.entries


def test_a_removed_index_and_a_deleted_file_are_seen_after_the_window(
    site: Site, docroot: Path
) -> None:
    assert site.status("/dir/") == 200 and site.status("/big.bin") == 200
    (docroot / "dir" / "index.html").unlink()
    (docroot / "big.bin").unlink()
    site.clock.advance(CACHE_RECHECK_SECONDS)
    assert site.status("/dir/") == 403  # no index, no autoindex
    assert site.status("/big.bin") == 404


def test_an_entry_nobody_asks_for_is_dropped_by_the_sweep_with_its_descriptor(
    site: Site,
) -> None:
    site.body(site.plan("/big.bin"))
    for body in site.bodies:
        close_body(body)  # the response is sent: only the cache holds the descriptor
    site.bodies.clear()
    files = site.site.files
    assert files.descriptors == 1
    site.site.drop_expired(site.clock.now + CACHE_RECHECK_SECONDS)  # renewable still
    assert files.descriptors == 1
    site.site.drop_expired(site.clock.now + CACHE_RECHECK_SECONDS + CACHE_IDLE_SECONDS)
    assert files.descriptors == 0 and not files.entries
