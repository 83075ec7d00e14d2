"""openat2 beneath the docroot, its fallback to the walk, and the variant index.

The site answers the same whichever way a path is opened: ``openat2`` in one call
(``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``), the walk when that is switched off, and
the walk after the kernel answered ENOSYS (forced here with a fake call). Symlinks
inside are followed, symlinks out or to hidden names are 404, in every mode.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkserver.static import variantindex
from forkserver.static.beneath import Beneath, openat2_available
from forkserver.static.docroot import Docroot
from forkserver.static.filecache import CACHE_RECHECK_SECONDS
from forkserver.static.variantindex import VariantIndex
from tests.unit.test_static import Site, build_tree, headers_of, open_fds

MODES = ("openat2", "walk", "enosys")


def _enosys(*_args: object) -> int:
    ctypes.set_errno(errno.ENOSYS)
    return -1


def force(docroot: Docroot, mode: str) -> None:
    """Make ``docroot`` open paths the way ``mode`` says."""
    if mode == "walk":
        docroot.beneath.disable()
        docroot._beneath_directory.disable()
    elif mode == "enosys":  # as on a kernel before 5.6: the first call turns it off
        for beneath in (docroot.beneath, docroot._beneath_directory):
            beneath.available = True
            beneath._call = _enosys


@pytest.fixture(params=MODES)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "openat2" and not openat2_available():
        pytest.skip("no openat2 on this machine")
    root = build_tree(tmp_path)
    (root / "deep/er/est/leaf.txt.gz").write_bytes(b"GZIPPED LEAF")
    (root / "sub/page.html.gz").symlink_to("../../outside/secret.txt")
    before = open_fds()
    made = Site(root)
    force(made.site.docroot, request.param)
    yield made
    made.close()
    assert open_fds() == before  # every directory opened lazily was closed again


@pytest.mark.parametrize(
    ("path", "status", "content"),
    [
        ("/a/b.txt", 200, b"b\n"),
        ("/deep/er/est/leaf.txt", 200, b"leaf\n"),
        ("/sub/", 200, b"<p>nested</p>\n"),
        ("/sub", 301, None),
        ("/inlink.txt", 200, b"b\n"),  # symlinks that stay inside are followed
        ("/abslink.txt", 200, b"b\n"),
        ("/roundtrip.txt", 200, b"b\n"),
        ("/indir/page.html", 200, b"<p>page</p>\n"),
        ("/home/home/a/b.txt", 200, b"b\n"),
        ("/sub/up.html", 200, b"<!DOCTYPE html><title>home</title>\n"),
        ("/linkidx/", 200, b"<p>page</p>\n"),
        ("/wklink", 200, b"token1.key\n"),
        ("/.well-known/acme-challenge/token1", 200, b"token1.key\n"),
        ("/outlink.txt", 404, None),  # ... and those that leave are not
        ("/absout.txt", 404, None),
        ("/sub/escape.txt", 404, None),
        ("/outdir/file.txt", 404, None),
        ("/outdir", 404, None),
        ("/dotlink", 404, None),  # inside, but to a hidden name
        ("/gitlink/config", 404, None),
        ("/wkhidden", 404, None),
        ("/loop", 404, None),
        ("/dangling", 404, None),
        ("/missing.txt", 404, None),
        ("/missing/deeper.txt", 404, None),
        ("/notes.txt/x", 404, None),  # a file where a directory should be
        ("/pipe", 404, None),
        ("/noindex/", 403, None),
    ],
)
def test_every_mode_contains_the_same_way(
    site: Site, path: str, status: int, content: bytes | None
) -> None:
    result = site.plan(path)
    assert result.status == status
    if content is not None:
        assert site.body(result) == content
    assert b"outside" not in site.body(result)


def test_a_variant_beside_a_nested_file_is_found(site: Site) -> None:
    result = site.plan("/deep/er/est/leaf.txt", headers={"accept-encoding": "gzip"})
    assert headers_of(result).get("content-encoding") == "gzip"
    assert site.body(result) == b"GZIPPED LEAF"


def test_a_variant_that_leaves_the_docroot_is_never_sent(site: Site) -> None:
    result = site.plan("/sub/page.html", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in headers_of(result)
    assert site.body(result) == b"<p>page</p>\n"


def test_enosys_turns_openat2_off_for_good(tmp_path: Path) -> None:
    docroot = Docroot(str(build_tree(tmp_path)))
    try:
        force(docroot, "enosys")
        opened = docroot.open(["a", "b.txt"], directory=False)
        assert not docroot.beneath.available  # the walk answered, and will from now on
        assert opened.parent >= 0  # the walk's parent, not openat2's lazy -1
        assert os.pread(opened.fd, 10, 0) == b"b\n"
        docroot.release(opened.parent)
        os.close(opened.fd)
    finally:
        docroot.close()


@pytest.mark.skipif(not openat2_available(), reason="no openat2 on this machine")
def test_openat2_opens_in_one_call_and_the_parent_only_when_asked(tmp_path: Path) -> None:
    docroot = Docroot(str(build_tree(tmp_path)))
    before = open_fds()
    try:
        opened = docroot.open(["deep", "er", "est", "leaf.txt"], directory=False)
        assert opened.parent == -1
        parent = docroot.parent_of(opened)
        assert parent >= 0 and opened.parent == parent
        assert "leaf.txt" in os.listdir(os.open(".", os.O_RDONLY | os.O_CLOEXEC, dir_fd=parent))
        docroot.release(opened.parent)
        os.close(opened.fd)
    finally:
        docroot.close()
    assert len(open_fds() - before) <= 1  # the listdir's own descriptor above


@pytest.mark.skipif(not openat2_available(), reason="no openat2 on this machine")
def test_the_kernel_refuses_every_way_out(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    beneath = Beneath(os.O_RDONLY | os.O_CLOEXEC)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        assert beneath(root_fd, "../outside/secret.txt") == -errno.EXDEV
        assert beneath(root_fd, str(root / "a" / "b.txt")) == -errno.EXDEV  # absolute
        assert beneath(root_fd, "outlink.txt") == -errno.ELOOP  # every symlink: the walk
        assert beneath(root_fd, "inlink.txt") == -errno.ELOOP
        assert beneath(root_fd, "indir/page.html") == -errno.ELOOP
        assert beneath(root_fd, "a/b.txt\x00/../../x") == -errno.ENOENT  # never cut short
        fd = beneath(root_fd, "a/b.txt")
        assert fd >= 0
        os.close(fd)
    finally:
        os.close(root_fd)


# -- the variant index -------------------------------------------------------------------
class Lister:
    def __init__(self, listings: dict[str, list[str] | None]) -> None:
        self.listings = listings
        self.calls: list[str] = []
        self.now = 100.0

    def __call__(self, names: list[str]) -> list[str] | None:
        key = "/".join(names)
        self.calls.append(key)
        return self.listings.get(key)

    def clock(self) -> float:
        return self.now


def test_a_directory_without_variants_is_listed_once_per_window() -> None:
    lister = Lister({"css": ["site.css", "print.css"]})
    index = VariantIndex(lister, lister.clock)
    for _ in range(3):
        assert not index.may_exist(["css", "site.css"], "site.css.br")
        assert not index.may_exist(["css", "site.css"], "site.css.gz")
    assert lister.calls == ["css"]  # the negative answer is remembered...
    lister.listings["css"] = ["site.css", "site.css.gz"]
    assert not index.may_exist(["css", "site.css"], "site.css.gz")  # ...for its window
    lister.now += CACHE_RECHECK_SECONDS
    assert index.may_exist(["css", "site.css"], "site.css.gz")  # then listed again
    assert not index.may_exist(["css", "site.css"], "site.css.br")
    assert lister.calls == ["css", "css"]


def test_only_variant_suffixes_are_answered_from_the_index() -> None:
    lister = Lister({"": ["a.txt"]})
    index = VariantIndex(lister, lister.clock)
    assert index.may_exist(["a.txt"], "a.txt.bak")  # not a variant name: probe it
    assert lister.calls == []


@pytest.mark.parametrize("listing", [None, ["x"] * 5])
def test_an_unlistable_or_huge_directory_is_probed(
    monkeypatch: pytest.MonkeyPatch, listing: list[str] | None
) -> None:
    monkeypatch.setattr(variantindex, "LISTING_LIMIT", 4)
    lister = Lister({"d": listing})
    index = VariantIndex(lister, lister.clock)
    assert index.may_exist(["d", "f.js"], "f.js.br")  # unknown: probe as before
    assert index.may_exist(["d", "f.js"], "f.js.br")
    assert lister.calls == ["d"]  # and "unknown" is remembered for the window too


def test_the_index_is_bounded_in_directories_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variantindex, "INDEX_DIRECTORIES", 4)
    monkeypatch.setattr(variantindex, "INDEX_NAMES", 8)
    listings: dict[str, list[str] | None] = {
        f"d{i}": ["f.js", "f.js.br"] for i in range(10)
    }
    listings["big"] = ["a.gz", "b.gz", "c.gz"]  # more than a quarter of the names budget
    lister = Lister(listings)
    index = VariantIndex(lister, lister.clock)
    for i in range(10):
        assert index.may_exist([f"d{i}", "f.js"], "f.js.br")
        assert not index.may_exist([f"d{i}", "f.js"], "f.js.gz")
        assert len(index) <= 4 and index.names <= 8
    assert index.may_exist(["big", "z"], "z.gz")  # not held: probed
    assert len(index) <= 4 and index.names <= 8
    calls = len(lister.calls)
    index.may_exist(["d9", "f.js"], "f.js.br")  # the newest is still there
    assert len(lister.calls) == calls
    index.may_exist(["d0", "f.js"], "f.js.br")  # the oldest was dropped: listed again
    assert len(lister.calls) == calls + 1
