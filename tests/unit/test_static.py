"""The static planner: URL path → file, with real temporary trees and no mocks.

Every fd a plan hands out is closed by the ``site`` fixture's teardown, so a failing
assertion never leaks descriptors into the next test.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import errno
import json
import os
import re
import resource
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkserver import __version__
from forkserver.config import Config
from forkserver.errors import HttpError, StartupError
from forkserver.http import Request
from forkserver.static import (
    CACHE_CONTENT_BYTES,
    CACHE_DESCRIPTORS,
    CACHE_FILE_BYTES,
    CACHE_IDLE_SECONDS,
    CACHE_INLINE_BYTES,
    CACHE_RECHECK_SECONDS,
    CACHE_TOTAL_BYTES,
    KNOWN_METHODS,
    REASONS,
    FileBody,
    Plan,
    StaticSite,
    close_body,
    content_type,
    filecache,
    http_date,
    resolve_path,
    server_header,
)

IS_ROOT = os.geteuid() == 0


# -- helpers ----------------------------------------------------------------------------
def make_request(
    path: str, method: str = "GET", query: str = "", content_length: int = 0,
    headers: dict[str, str] | None = None,
) -> Request:
    target = path + (f"?{query}" if query else "")
    return Request(
        method=method,
        target=target,
        path=path,
        query=query,
        minor=1,
        headers={"host": "example.test", **(headers or {})},
        keep_alive=True,
        host="example.test",
        content_length=content_length,
        line=f"{method} {target} HTTP/1.1",
    )


class Clock:
    """The worker's monotonic clock, moved by the test: nothing waits for real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Site:
    """A StaticSite plus bookkeeping: every fd it returns is closed at teardown."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.clock = Clock()
        self.site = StaticSite(
            Config(docroot=str(root), **settings), monotonic=self.clock.monotonic
        )
        self.bodies: list[FileBody] = []

    def plan(self, path: str, method: str = "GET", **kwargs: Any) -> Plan:
        result = self.site.plan(make_request(path, method, **kwargs))
        for segment in [result.file, *(result.rest or [])]:
            if isinstance(segment, FileBody):
                self.bodies.append(segment)
        return result

    def status(self, path: str, method: str = "GET") -> int:
        return self.plan(path, method).status

    def status_with(self, path: str, headers: dict[str, str]) -> int:
        return self.plan(path, headers=headers).status

    def body(self, result: Plan) -> bytes:
        """What the worker would send after the head: body, file, then the rest."""
        out = [result.body]
        for segment in [result.file, *(result.rest or [])]:
            if isinstance(segment, FileBody):
                out.append(os.pread(segment.fd, segment.length, segment.offset))
            elif isinstance(segment, bytes):
                out.append(segment)
            elif segment is not None:  # a BodyStream: read it to its end
                while not segment.done:
                    out.append(segment.read())
        return b"".join(out)

    def close(self) -> None:
        for body in self.bodies:
            close_body(body)  # as the worker does: closed, or handed back to the cache
        self.bodies.clear()
        self.site.close()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def etag_of(path: Path) -> str:
    st_ = os.stat(path)
    return f'"{st_.st_ino:x}-{st_.st_size:x}-{st_.st_mtime_ns:x}"'


def headers_of(result: Plan) -> dict[str, str]:
    names = [name.lower() for name, _ in result.headers]
    assert len(names) == len(set(names)), f"repeated header in {result.headers}"
    return {name.lower(): value for name, value in result.headers}


def build_tree(base: Path) -> Path:
    """A docroot with files, directories and symlinks inside and out, plus an outside."""
    outside = base / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("outside secret\n")
    (outside / "dir" / "index.html").write_text("outside index\n")
    (outside / "dir" / "file.txt").write_text("outside file\n")

    root = base / "www"
    for directory in ("sub", "noindex", "a/.git", "deep/er/est", "weird/index.html",
                      "linkidx", "%2e%2e", "back\\slash", "sp ace", ".well-known/acme-challenge",
                      "a/.well-known"):
        (root / directory).mkdir(parents=True)
    files = {
        "index.html": "<!DOCTYPE html><title>home</title>\n",
        "style.css": "body { color: red }\n",
        "app.js": "console.log(1)\n",
        "data.json": "{}\n",
        "logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>\n",
        "notes.txt": "notes\n",
        "blob.xyz": "\x00\x01binary",
        "README": "no extension\n",
        "PHOTO.JPG": "\xff\xd8\xff",
        "empty.txt": "",
        ".env": "SECRET=1\n",
        "a/b.txt": "b\n",
        "a/.git/config": "[core]\n",
        ".well-known/acme-challenge/token1": "token1.key\n",
        ".well-known/.secret": "hidden below .well-known\n",
        "a/.well-known/x.txt": "not at the top\n",
        "sub/index.html": "<p>nested</p>\n",
        "sub/page.html": "<p>page</p>\n",
        "noindex/file.txt": "file in noindex\n",
        "deep/er/est/leaf.txt": "leaf\n",
        "%2e%2e/literal.txt": "literal percent name\n",
        "back\\slash/index.html": "backslash dir\n",
        "sp ace/index.html": "space dir\n",
        "a\\b.txt": "backslash file\n",
    }
    for name, text in files.items():
        (root / name).write_text(text, encoding="latin-1")

    links = {
        "inlink.txt": "a/b.txt",  # relative, inside
        "abslink.txt": str(root / "a" / "b.txt"),  # absolute, inside
        "indir": "sub",  # a directory, inside
        "home": ".",  # the docroot itself
        "outlink.txt": "../outside/secret.txt",  # escapes, relative
        "absout.txt": str(outside / "secret.txt"),  # escapes, absolute
        "outdir": str(outside / "dir"),  # a directory outside
        "dotlink": ".env",  # inside, but to a hidden file
        "gitlink": "a/.git",  # inside, to a hidden directory
        "wklink": ".well-known/acme-challenge/token1",  # inside, to the public .well-known
        "wkhidden": ".well-known/.secret",  # inside, to a dotfile below it
        "loop": "loop",  # a loop
        "dangling": "nothing-here",
        "roundtrip.txt": "../www/a/b.txt",  # leaves and comes back in: inside
        "sub/up.html": "../index.html",
        "sub/escape.txt": "../../outside/secret.txt",
        "linkidx/index.html": "../sub/page.html",  # an index that is a symlink
        # precompressed variants that lead outside: never served, whatever is accepted
        "a/b.txt.gz": "../../outside/secret.txt",
        "notes.txt.br": str(outside / "secret.txt"),
        "style.css.gz": "../outside/dir",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    os.mkfifo(root / "pipe")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_tree(tmp_path)


@pytest.fixture
def site(root: Path) -> Iterator[Site]:
    before = open_fds()
    made = Site(root)
    yield made
    made.close()
    # Every directory the walk opened, and every refused file, was closed again.
    assert open_fds() == before


# -- resolve_path ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "segments", "directory"),
    [
        ("/", (), True),
        ("/a", ("a",), False),
        ("/a/", ("a",), True),
        ("/a/b.txt", ("a", "b.txt"), False),
        ("//a///b", ("a", "b"), False),  # empty segments merge
        ("/a/./b", ("a", "b"), False),
        ("/a/b/..", ("a",), True),  # a final dot-segment leaves a directory
        ("/a/.", ("a",), True),
        ("/a/../b", ("b",), False),
        ("/%61", ("a",), False),
        ("/a%2fb", ("a", "b"), False),  # %2f decodes to a separator
        ("/a%2Fb%2F", ("a", "b"), True),
        ("/%252e%252e", ("%2e%2e",), False),  # decoded once only
        ("/..\\..\\x", None, None),  # backslash is no separator: one hidden-looking name
        ("/a\\b", ("a\\b",), False),
        ("/a%5cb", ("a\\b",), False),
        ("/%C3%A9t%C3%A9", ("été",), False),
        ("/sp%20ace/", ("sp ace",), True),
        ("/.git/../a", ("a",), False),  # dot rule applies after resolution
    ],
)
def test_resolve_path_normalises(
    path: str, segments: tuple[str, ...] | None, directory: bool | None
) -> None:
    if segments is None:
        with pytest.raises(HttpError) as caught:
            resolve_path(path)
        assert caught.value.status == 404
        return
    resolved = resolve_path(path)
    assert resolved.segments == segments
    assert resolved.directory is directory


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/../etc/passwd", 400),
        ("/a/../../x", 400),
        ("/..", 400),
        ("/%2e%2e/etc/passwd", 400),
        ("/%2E%2E%2Fetc%2Fpasswd", 400),
        ("/a/%2e%2e/%2e%2e/x", 400),
        ("/..%2f..%2fx", 400),
        ("/%", 400),
        ("/%1", 400),
        ("/%zz", 400),
        ("/a%2", 400),
        ("/%00", 400),
        ("/a%00.txt", 400),
        ("/%c0%ae%c0%ae/", 400),  # overlong "." — invalid UTF-8
        ("/%c0%af", 400),  # overlong "/"
        ("/%ed%a0%80", 400),  # a UTF-16 surrogate
        ("/%ff", 400),
        ("*", 400),
        ("", 400),
        ("/.env", 404),
        ("/%2eenv", 404),
        ("/a/.git/config", 404),
        ("/a/%2Egit/config", 404),
        ("/...", 404),
        ("/..\\..\\etc\\passwd", 404),
        ("/.well-known/.secret", 404),  # RFC 8615's exception is the top segment only
        ("/a/.well-known/x.txt", 404),
        ("/.well-known/../.env", 404),
        ("/.well-knownx/a", 404),
    ],
)
def test_resolve_path_refuses(path: str, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        resolve_path(path)
    assert caught.value.status == status
    assert caught.value.close is False  # the request was framed fine; keep-alive holds


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_resolve_path_only_ever_raises_http_errors(text: str) -> None:
    try:
        resolved = resolve_path("/" + text)
    except HttpError as error:
        assert error.status in (400, 404)
        return
    for index, segment in enumerate(resolved.segments):
        assert segment and "/" not in segment and "\x00" not in segment
        assert not segment.startswith(".") or (index, segment) == (0, ".well-known")


# -- files ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "status", "content"),
    [
        ("/index.html", 200, b"<!DOCTYPE html><title>home</title>\n"),
        ("/", 200, b"<!DOCTYPE html><title>home</title>\n"),
        ("/style.css", 200, b"body { color: red }\n"),
        ("/a/b.txt", 200, b"b\n"),
        ("/a//b.txt", 200, b"b\n"),
        ("/sub/../a/./b.txt", 200, b"b\n"),
        ("/%61/b%2etxt", 200, b"b\n"),
        ("/sub/", 200, b"<p>nested</p>\n"),
        ("/sub/index.html", 200, b"<p>nested</p>\n"),
        ("/deep/er/est/leaf.txt", 200, b"leaf\n"),
        ("/%252e%252e/literal.txt", 200, b"literal percent name\n"),
        ("/a\\b.txt", 200, b"backslash file\n"),
        ("/a%5cb.txt", 200, b"backslash file\n"),
        ("/sp%20ace/", 200, b"space dir\n"),
        ("/nope.txt", 404, None),
        ("/nope/", 404, None),
        ("/nope/x.txt", 404, None),
        ("/index.html/", 404, None),  # a file is not a directory
        ("/index.html/x", 404, None),
        ("/%252e%252e", 301, None),  # the literal directory "%2e%2e"
        ("/%252e%252e/nope", 404, None),
        ("/noindex/", 403, None),
        ("/noindex/file.txt", 200, b"file in noindex\n"),
        ("/weird/", 403, None),  # its index.html is a directory
        ("/.env", 404, None),
        ("/a/.git/config", 404, None),
        ("/.well-known/acme-challenge/token1", 200, b"token1.key\n"),  # RFC 8615
        ("/%2ewell-known/acme-challenge/token1", 200, b"token1.key\n"),
        ("/.well-known/.secret", 404, None),
        ("/a/.well-known/x.txt", 404, None),
        ("/pipe", 404, None),  # a FIFO is never opened for serving (nor does it hang)
        ("/../etc/passwd", 400, None),
        ("/%2e%2e/etc/passwd", 400, None),
        ("/a/%00", 400, None),
    ],
)
def test_get(site: Site, path: str, status: int, content: bytes | None) -> None:
    result = site.plan(path)
    assert result.status == status
    if content is not None:
        assert site.body(result) == content
        assert headers_of(result)["content-length"] == str(len(content))
    elif status != 200:
        assert result.file is None


def test_files_carry_validators_and_accept_ranges(site: Site, root: Path) -> None:
    result = site.plan("/style.css")
    headers = headers_of(result)
    st_ = os.stat(root / "style.css")
    assert headers["content-type"] == "text/css; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["last-modified"] == email.utils.formatdate(st_.st_mtime, usegmt=True)
    assert headers["etag"] == f'"{st_.st_ino:x}-{st_.st_size:x}-{st_.st_mtime_ns:x}"'
    assert headers["accept-ranges"] == "bytes"  # RFC 9110 §14.3
    assert headers["cache-control"] == "no-cache"  # the built-in rule
    assert "vary" not in headers  # no precompressed variant here
    # The worker adds these; the planner must not.
    assert not {"date", "server", "connection"} & set(headers)
    # A small file comes from memory: head and body leave in one send.
    assert result.file is None and result.body == (root / "style.css").read_bytes()
    assert not result.close


def test_large_files_are_sent_from_the_file(site: Site, root: Path) -> None:
    (root / "large.bin").write_bytes(os.urandom(CACHE_FILE_BYTES + 1))
    result = site.plan("/large.bin")
    assert result.file is not None and result.body == b""
    assert (result.file.offset, result.file.length) == (0, CACHE_FILE_BYTES + 1)


def test_file_body_fd_is_an_independent_cloexec_descriptor(site: Site, root: Path) -> None:
    (root / "large.bin").write_bytes(bytes(CACHE_FILE_BYTES + 1))
    result = site.plan("/large.bin")
    assert result.file is not None
    assert os.get_inheritable(result.file.fd) is False
    assert stat.S_ISREG(os.fstat(result.file.fd).st_mode)


# -- the open-file cache ------------------------------------------------------------------
def served_within_window(site: Site, path: str, old: bytes, new: bytes) -> Plan:
    """Within the entry's second ``old`` may still be served, whole; once the second
    is over (the site's clock moved on), ``new``."""
    result = site.plan(path)
    body = site.body(result)
    assert int(headers_of(result)["content-length"]) == len(body)
    assert body in (old, new), "a body neither old nor new"
    site.clock.advance(CACHE_RECHECK_SECONDS)
    result = site.plan(path)
    body = site.body(result)
    assert int(headers_of(result)["content-length"]) == len(body)
    assert body == new, "still stale after the revalidation window"
    return result


def test_cache_serves_a_changed_file_fresh_within_the_window(site: Site, root: Path) -> None:
    target = root / "notes.txt"
    original = target.read_bytes()
    assert site.body(site.plan("/notes.txt")) == original
    target.write_bytes(b"rewritten, longer than before\n")
    served_within_window(site, "/notes.txt", original, b"rewritten, longer than before\n")
    fresh = root / "fresh.tmp"
    fresh.write_bytes(b"renamed over\n")
    fresh.rename(target)  # the deploy pattern: a new inode under the old name
    result = served_within_window(
        site, "/notes.txt", b"rewritten, longer than before\n", b"renamed over\n"
    )
    assert headers_of(result)["etag"] == etag_of(target)
    target.unlink()
    site.clock.advance(CACHE_RECHECK_SECONDS)
    assert site.status("/notes.txt") == 404, "a deleted file was served past the window"


def test_cache_answers_conditionals_and_head(site: Site, root: Path) -> None:
    first = site.plan("/style.css")
    tag = headers_of(first)["etag"]
    cached = site.plan("/style.css", headers={"if-none-match": tag})
    assert cached.status == 304 and cached.body == b""
    assert headers_of(cached)["etag"] == tag and "content-length" not in headers_of(cached)
    assert site.plan("/style.css", headers={"if-match": '"other"'}).status == 412
    head = site.plan("/style.css", "HEAD")
    assert head.body == b"" and headers_of(head) == headers_of(first)


def test_cache_is_bounded_in_bytes(site: Site, root: Path) -> None:
    count = CACHE_CONTENT_BYTES // CACHE_INLINE_BYTES + 8
    for index in range(count):
        (root / f"f{index}.bin").write_bytes(bytes([index % 256]) * CACHE_INLINE_BYTES)
        assert site.body(site.plan(f"/f{index}.bin"))[:1] == bytes([index % 256])
    files = site.site.files
    assert files.content_bytes <= CACHE_CONTENT_BYTES and files.size <= CACHE_TOTAL_BYTES
    # Past the contents' bound, small files are remembered by their descriptor.
    last = files.entries[f"/f{count - 1}.bin"]
    assert last.content == b"" and last.descriptor is not None
    assert site.body(site.plan(f"/f{count - 1}.bin"))[:1] == bytes([(count - 1) % 256])


def test_cache_descriptors_leave_most_of_the_table() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft // 4 >= CACHE_DESCRIPTORS


def test_cache_is_bounded_in_descriptors(
    site: Site, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filecache, "CACHE_DESCRIPTORS", 16)
    count = 16 + 8
    for index in range(count):
        (root / f"f{index}.bin").write_bytes(bytes([index % 256]) * (CACHE_INLINE_BYTES + 1))
        assert site.body(site.plan(f"/f{index}.bin"))[:1] == bytes([index % 256])
    assert site.site.files.descriptors == 16
    assert len(site.site.files.entries) == 16
    # The site fixture checks at teardown that every cached descriptor was closed.


def test_a_descriptor_cached_file_is_sent_whole_and_fresh(site: Site, root: Path) -> None:
    original = os.urandom(CACHE_INLINE_BYTES * 3)
    (root / "mid.bin").write_bytes(original)
    first = site.plan("/mid.bin")
    assert first.file is not None and site.body(first) == original
    hit = site.plan("/mid.bin")  # from the cache: the descriptor it shares, lent
    assert hit.file is not None and hit.encoded
    assert hit.file.descriptor is first.file.descriptor and hit.file.descriptor.holders == 3
    assert site.body(hit) == original
    close_body(first.file)  # the first response is done with it
    site.bodies.remove(first.file)
    # Forgotten while lent (the entry expired, say), the descriptor stays open until
    # the response hands it back.
    site.site.forget("/mid.bin")
    assert stat.S_ISREG(os.fstat(hit.file.fd).st_mode)
    close_body(hit.file)
    with pytest.raises(OSError):
        os.fstat(hit.file.fd)
    site.bodies.remove(hit.file)
    site.plan("/mid.bin")  # cached again
    assert site.plan("/mid.bin", "HEAD").file is None
    replacement = os.urandom(CACHE_INLINE_BYTES * 2)
    (root / "mid.tmp").write_bytes(replacement)
    (root / "mid.tmp").rename(root / "mid.bin")
    served_within_window(site, "/mid.bin", original, replacement)


def test_cache_notices_a_new_variant_within_the_recheck_window(site: Site, root: Path) -> None:
    gzip_only = {"accept-encoding": "gzip"}
    (root / "app.js").write_text("console.log('app')\n")
    assert "content-encoding" not in headers_of(site.plan("/app.js", headers=gzip_only))
    variant = root / "app.js.gz"
    variant.write_bytes(b"\x1f\x8b pretend gzip")
    os.utime(variant, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    site.clock.advance(CACHE_RECHECK_SECONDS)
    assert "content-encoding" in headers_of(site.plan("/app.js", headers=gzip_only)), (
        "the new variant was never used"
    )


def test_last_modified_is_an_imf_fixdate(site: Site, root: Path) -> None:
    os.utime(root / "notes.txt", ns=(0, 784111777_000_000_000))  # RFC 9110's example
    value = headers_of(site.plan("/notes.txt"))["last-modified"]
    assert value == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(-5) == "Thu, 01 Jan 1970 00:00:00 GMT"  # clamped, 4-digit years only
    assert http_date(10**15).startswith("Fri, 31 Dec 9999")
    pattern = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT"  # noqa: E501
    assert re.fullmatch(pattern, http_date(1_700_000_000.9))


def test_empty_file_has_no_body_descriptor(site: Site) -> None:
    result = site.plan("/empty.txt")
    assert result.status == 200 and result.file is None and result.body == b""
    assert headers_of(result)["content-length"] == "0"


def test_index_is_served_with_the_index_files_headers(site: Site, root: Path) -> None:
    by_dir = headers_of(site.plan("/sub/"))
    by_name = headers_of(site.plan("/sub/index.html"))
    assert by_dir == by_name
    assert by_dir["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("a.htm", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("mod.mjs", "text/javascript; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("app.js.map", "application/json; charset=utf-8"),
        ("feed.xml", "application/xml; charset=utf-8"),
        ("logo.svg", "image/svg+xml; charset=utf-8"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("README.md", "text/markdown; charset=utf-8"),
        ("t.csv", "text/csv; charset=utf-8"),
        ("a.png", "image/png"),
        ("PHOTO.JPG", "image/jpeg"),
        ("a.jpeg", "image/jpeg"),
        ("a.gif", "image/gif"),
        ("a.webp", "image/webp"),
        ("a.avif", "image/avif"),
        ("favicon.ico", "image/x-icon"),
        ("doc.pdf", "application/pdf"),
        ("m.wasm", "application/wasm"),
        ("f.woff", "font/woff"),
        ("f.woff2", "font/woff2"),
        ("v.mp4", "video/mp4"),
        ("v.webm", "video/webm"),
        ("s.mp3", "audio/mpeg"),
        ("s.ogg", "audio/ogg"),
        ("a.zip", "application/zip"),
        ("a.tar.gz", "application/gzip"),
        ("a.tar", "application/x-tar"),
        ("blob.xyz", "application/octet-stream"),
        ("README", "application/octet-stream"),
        ("trailing.", "application/octet-stream"),
    ],
)
def test_content_types(name: str, expected: str) -> None:
    assert content_type(name) == expected


def test_content_type_reaches_the_plan(site: Site) -> None:
    assert headers_of(site.plan("/logo.svg"))["content-type"] == "image/svg+xml; charset=utf-8"
    assert headers_of(site.plan("/blob.xyz"))["content-type"] == "application/octet-stream"
    assert headers_of(site.plan("/README"))["content-type"] == "application/octet-stream"
    assert headers_of(site.plan("/PHOTO.JPG"))["content-type"] == "image/jpeg"


# -- ETag -------------------------------------------------------------------------------
def test_etag_is_the_same_in_every_worker(root: Path) -> None:
    first, second = Site(root), Site(root)
    try:
        tags = {headers_of(s.plan(p))["etag"] for s in (first, second) for p in ("/notes.txt",)}
        assert len(tags) == 1
        assert headers_of(first.plan("/sub/"))["etag"] == headers_of(second.plan("/sub/"))["etag"]
    finally:
        first.close()
        second.close()


def etag_served(root: Path, path: str) -> str:
    """The ETag a freshly started worker (empty open-file cache) sends for ``path``."""
    fresh = Site(root)
    try:
        return headers_of(fresh.plan(path))["etag"]
    finally:
        fresh.close()


def test_etag_changes_when_the_file_changes(root: Path) -> None:
    path = root / "notes.txt"
    before = etag_served(root, "/notes.txt")
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', before)  # strong, no W/
    mtime_ns = path.stat().st_mtime_ns
    path.write_text("NOTES\n")  # same size, new content
    os.utime(path, ns=(mtime_ns + 1_000, mtime_ns + 1_000))  # even within one tick
    after_write = etag_served(root, "/notes.txt")
    assert after_write != before
    replacement = root / "notes.tmp"
    replacement.write_text("NOTES\n")
    os.utime(replacement, ns=(mtime_ns + 1_000, mtime_ns + 1_000))
    os.replace(replacement, path)  # an atomic deploy: same size and mtime, new inode
    assert etag_served(root, "/notes.txt") not in (before, after_write)


# -- HEAD -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/style.css", "/", "/sub/", "/empty.txt", "/nope", "/noindex/", "/sub", "/%zz"]
)
def test_head_has_the_get_headers_and_no_body(site: Site, path: str) -> None:
    get = site.plan(path)
    head = site.plan(path, "HEAD")
    assert head.status == get.status
    assert head.headers == get.headers
    assert head.body == b"" and head.file is None
    if get.status != 200:
        assert int(headers_of(get)["content-length"]) == len(get.body) > 0


# -- symlinks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "status", "content"),
    [
        ("/inlink.txt", 200, b"b\n"),
        ("/abslink.txt", 200, b"b\n"),
        ("/roundtrip.txt", 200, b"b\n"),
        ("/indir/", 200, b"<p>nested</p>\n"),
        ("/indir/page.html", 200, b"<p>page</p>\n"),
        ("/indir", 301, None),
        ("/home/", 200, b"<!DOCTYPE html><title>home</title>\n"),
        ("/home/home/a/b.txt", 200, b"b\n"),
        ("/home", 301, None),
        ("/sub/up.html", 200, b"<!DOCTYPE html><title>home</title>\n"),
        ("/linkidx/", 200, b"<p>page</p>\n"),  # an index that is a symlink
        ("/outlink.txt", 404, None),
        ("/absout.txt", 404, None),
        ("/sub/escape.txt", 404, None),
        ("/outdir", 404, None),  # no redirect: that would reveal the directory
        ("/outdir/", 404, None),
        ("/outdir/file.txt", 404, None),
        ("/outdir/index.html", 404, None),
        ("/dotlink", 404, None),  # inside, but hidden
        ("/gitlink/config", 404, None),
        ("/wklink", 200, b"token1.key\n"),
        ("/wkhidden", 404, None),
        ("/loop", 404, None),
        ("/loop/", 404, None),
        ("/dangling", 404, None),
    ],
)
def test_symlinks(site: Site, path: str, status: int, content: bytes | None) -> None:
    result = site.plan(path)
    assert result.status == status
    if content is not None:
        assert site.body(result) == content
    assert b"outside" not in site.body(result)


def test_symlinked_docroot_is_served(tmp_path: Path) -> None:
    real = build_tree(tmp_path)
    alias = tmp_path / "current"
    os.symlink(real, alias)
    linked = Site(alias)
    try:
        assert linked.body(linked.plan("/a/b.txt")) == b"b\n"
        assert linked.status("/inlink.txt") == 200
        assert linked.status("/outlink.txt") == 404
    finally:
        linked.close()


def test_unix_socket_is_not_served(site: Site, root: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
        assert site.status("/sock") == 404


def test_missing_docroot_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="docroot"):
        StaticSite(Config(docroot=str(tmp_path / "absent")))


NOBODY = 65534  # the conventional unprivileged uid/gid on Debian


def check_permissions(root: Path) -> None:
    site = Site(root)
    try:
        assert site.status("/notes.txt") == 403
        assert site.body(site.plan("/locked/")) == b"in a search-only directory\n"
        assert site.status("/locked") == 301
    finally:
        site.close()


def test_permissions() -> None:
    """An unreadable file is 403; a search-only directory still serves its index.

    Root reads everything, so as root (as in CI) the check runs in a forked child
    that has become ``nobody``, the way a worker drops privileges.
    """
    root = Path(tempfile.mkdtemp(prefix="forkserver-perm-"))
    try:
        root.chmod(0o755)
        secret = root / "notes.txt"
        secret.write_text("secret\n")
        secret.chmod(0)
        locked = root / "locked"
        locked.mkdir()
        (locked / "index.html").write_text("in a search-only directory\n")
        locked.chmod(0o111)  # searchable, not listable: the index is still reachable
        if not IS_ROOT:
            check_permissions(root)
            return
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                check_permissions(root)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "a permission check failed as nobody"
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(root)


# -- redirects --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "query", "location"),
    [
        ("/sub", "", "/sub/"),
        ("/sub", "x=1", "/sub/?x=1"),
        ("/sub", "a=1&b=%2F", "/sub/?a=1&b=%2F"),
        ("/s%75b", "", "/s%75b/"),  # the encoding as sent is kept
        ("/deep/er", "", "/deep/er/"),
        ("/sp%20ace", "q", "/sp%20ace/?q"),
        ("/a/../sub", "", "/sub/"),  # not canonical: rebuilt from the segments
        ("//sub", "", "/sub/"),  # never a protocol-relative "//host/"
        ("/%2Fsub", "", "/sub/"),
        ("/back\\slash", "", "/back%5Cslash/"),  # "/\host" would leave the site
        ("/back%5Cslash", "", "/back%5Cslash/"),
        ("/%252e%252e", "", "/%252e%252e/"),
    ],
)
def test_directory_without_slash_redirects(
    site: Site, path: str, query: str, location: str
) -> None:
    result = site.plan(path, query=query)
    assert result.status == 301
    headers = headers_of(result)
    assert headers["location"] == location
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert int(headers["content-length"]) == len(result.body)
    assert result.body == site.site.error_plan(301).body  # a fixed page: nothing echoed


# -- methods ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(KNOWN_METHODS))
@pytest.mark.parametrize("path", ["/style.css", "/nope", "/", "*", ""])
def test_known_methods_get_405_with_allow(site: Site, method: str, path: str) -> None:
    result = site.plan(path, method)
    assert result.status == 405
    headers = headers_of(result)
    assert headers["allow"] == "GET, HEAD"
    assert int(headers["content-length"]) == len(result.body) > 0
    assert result.file is None


@pytest.mark.parametrize("method", ["BREW", "get", "Head", "PROPFIND", "M-SEARCH"])
def test_unknown_methods_get_501(site: Site, method: str) -> None:
    result = site.plan("/style.css", method)
    assert result.status == 501
    assert "allow" not in headers_of(result)


def test_a_request_body_closes_the_connection(site: Site) -> None:
    served = site.plan("/style.css", content_length=5)
    assert served.status == 200 and served.close
    refused = site.plan("/style.css", "POST", content_length=5)
    assert refused.status == 405 and refused.close
    assert not site.plan("/style.css", "POST").close


# -- error plans ------------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 403, 404, 405, 408, 413, 414, 431, 500, 501, 503, 505])
def test_error_plan(site: Site, status: int) -> None:
    result = site.site.error_plan(status)
    headers = headers_of(result)
    assert result.status == status
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-length"] == str(len(result.body))
    title = f"{status} {REASONS[status]}"
    assert result.body.startswith(b"<!DOCTYPE html>")
    assert f"<title>{title}</title>".encode() in result.body
    head = site.site.error_plan(status, head=True)
    assert head.body == b"" and head.headers == result.headers


def test_error_plans_are_independent(site: Site) -> None:
    first = site.site.error_plan(400)
    first.close = True
    first.headers.append(("X-Mutated", "1"))
    second = site.site.error_plan(400)
    assert not second.close and ("X-Mutated", "1") not in second.headers


def test_error_plan_for_an_unlisted_status(site: Site) -> None:
    result = site.site.error_plan(418)
    assert result.status == 418 and result.body.startswith(b"<!DOCTYPE html>")
    assert site.site.error_plan(204).headers == [("X-Content-Type-Options", "nosniff")]


def test_reasons_cover_every_status_the_server_sends() -> None:
    required = {200, 204, 206, 301, 304, 400, 403, 404, 405, 408, 412, 413, 414, 416,
                431, 500, 501, 503, 505}
    assert required <= set(REASONS)
    assert REASONS[404] == "Not Found" and REASONS[431] == "Request Header Fields Too Large"


@pytest.mark.parametrize(
    "path",
    [
        "/<script>alert(1)</script>",
        "/%3Cscript%3Ealert(1)%3C/script%3E",
        "/%zz<script>",
        "/../<script>",
        "/.<script>",
        "/sub/<img src=x onerror=alert(1)>",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "<script>"])
def test_error_bodies_never_echo_the_request(site: Site, path: str, method: str) -> None:
    result = site.plan(path, method, query="q=<script>")
    assert result.status >= 400
    body = site.body(result).lower()
    for needle in (b"<script", b"alert", b"onerror", b"%3c", b"q="):
        assert needle not in body
    assert not any("script" in value for _, value in result.headers)


# -- the containment property ------------------------------------------------------------
SEGMENTS = [
    ".", "..", "%2e", "%2E%2e", "%2e%2e", "%2f", "%2F", "%5c", "\\", "..\\", "",
    "%00", "%252e%252e", "%c0%ae", "a", "b.txt", "sub", "index.html", "inlink.txt",
    "indir", "home", "outlink.txt", "absout.txt", "outdir", "file.txt", "secret.txt",
    "outside", "www", "escape.txt", "up.html", "dotlink", "gitlink", "config", ".env",
    "%2eenv", ".git", "loop", "roundtrip.txt", "..%2f", "%2e%2e%2f", "literal.txt",
    "linkidx", "noindex", "pipe", "b.txt.gz", "notes.txt", "notes.txt.br", "style.css",
    "style.css.gz",
]


@pytest.fixture(scope="module")
def property_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    made = Site(build_tree(tmp_path_factory.mktemp("property")))
    yield made
    made.close()


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=8),
    st.booleans(),
    st.sampled_from(["GET", "HEAD"]),
    st.sampled_from([None, "gzip", "br", "gzip, br", "*"]),
)
def test_nothing_outside_the_docroot_is_ever_served(
    property_site: Site, segments: list[str], trailing: bool, method: str,
    accept_encoding: str | None,
) -> None:
    path = "/" + "/".join(segments) + ("/" if trailing and segments else "")
    fields = {"accept-encoding": accept_encoding} if accept_encoding else {}
    result = property_site.site.plan(make_request(path, method, headers=fields))
    assert result.status in (200, 301, 400, 403, 404)
    if result.status != 200:
        assert result.file is None
    if result.file is None:
        assert b"outside" not in result.body
        return
    fd = result.file.fd
    try:
        served = os.readlink(f"/proc/self/fd/{fd}")
        root = os.path.realpath(property_site.root)
        assert served.startswith(root + "/"), (path, served)
        assert not any(part.startswith(".") for part in served[len(root) + 1 :].split("/"))
        assert stat.S_ISREG(os.fstat(fd).st_mode)
        assert b"outside" not in os.pread(fd, 4096, 0)
    finally:
        os.close(fd)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=30), st.sampled_from(["GET", "HEAD", "POST", "BREW"]))
def test_any_path_gets_a_plan_never_an_exception(
    property_site: Site, text: str, method: str
) -> None:
    result = property_site.site.plan(make_request("/" + text, method))
    assert result.status in (200, 301, 400, 403, 404, 405, 501)
    if result.file is not None:
        close_body(result.file)


# == HTTP semantics through the planner: conditionals, ranges, variants, listings ========
PAST = 1_700_000_000  # a fixed mtime, long before now: Last-Modified is a strong validator
PAST_DATE = "Tue, 14 Nov 2023 22:13:20 GMT"
DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
JS = b"console.log('forkserver');\n" * 40


def touch(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds), follow_symlinks=False)


def build_http_tree(base: Path) -> Path:
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.js.gz").write_bytes(b"outside secret")
    root = base / "www"
    for directory in ("dir/sub", "dir/.git", "errors", "empty-dir", "variant-dir.js.gz"):
        (root / directory).mkdir(parents=True)
    files: dict[str, bytes] = {
        "page.html": b"<!DOCTYPE html><title>page</title>\n",
        "data.bin": DATA,
        "empty.txt": b"",
        "app.js": JS,
        "app.js.gz": b"GZIP" + JS[:40],
        "app.js.br": b"BROTLI" + JS[:20],
        "gz-only.js": JS,
        "gz-only.js.gz": b"GZIP-ONLY",
        "stale.css": b"body { color: blue }\n",
        "stale.css.gz": b"STALE GZIP",
        "stale.css.br": b"FRESH BROTLI",
        "missing.js.gz": b"NO ORIGINAL",
        "escaping.js": JS,
        "variant-dir.js": JS,
        "linked.js": JS,
        "linked-target.gz": b"LINKED GZIP",
        "errors/404.html": b"<h1>custom not found</h1>\n",
        "errors/403.txt": b"custom forbidden\n",
        "dir/b.txt": b"bee\n",
        "dir/a file.txt": b"a\n",
        "dir/.hidden": b"hidden\n",
        "dir/sub/x.txt": b"x\n",
        "font.xyz": b"\x00\x01",
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
    os.symlink(str(outside / "secret.js.gz"), root / "escaping.js.gz")
    os.symlink("linked-target.gz", root / "linked.js.gz")
    os.symlink(str(outside), root / "dir" / "out-link")
    os.symlink("b.txt", root / "dir" / "in-link")
    for path in root.rglob("*"):
        touch(path, PAST)
    # Variants are as new as their file or newer, except the stale gzip.
    for name in ("app.js.gz", "app.js.br", "gz-only.js.gz", "stale.css.br",
                 "linked-target.gz", "linked.js.gz"):
        touch(root / name, PAST + 10)
    touch(root / "stale.css.gz", PAST - 10)
    return root


@pytest.fixture
def www(tmp_path: Path) -> Path:
    return build_http_tree(tmp_path)


@pytest.fixture
def make_site(www: Path) -> Iterator[Any]:
    """Build Sites with settings; every one is closed and checked for leaks."""
    before = open_fds()
    made: list[Site] = []

    def build(**settings: Any) -> Site:
        site = Site(www, **settings)
        made.append(site)
        return site

    yield build
    for site in made:
        site.close()
    assert open_fds() == before


@pytest.fixture
def http_site(make_site: Any) -> Site:
    return make_site()  # type: ignore[no-any-return]


def tag_of(site: Site, path: str, **headers: str) -> str:
    return headers_of(site.plan(path, headers=headers))["etag"]


# -- conditional requests (RFC 9110 §13) -------------------------------------------------
def test_rfc9110_15_4_5_304_has_validators_and_no_content_fields(http_site: Site) -> None:
    full = headers_of(http_site.plan("/page.html"))
    result = http_site.plan("/page.html", headers={"if-none-match": full["etag"]})
    assert result.status == 304
    assert result.body == b"" and result.file is None and result.rest is None
    headers = headers_of(result)
    assert headers["etag"] == full["etag"]
    assert headers["last-modified"] == full["last-modified"] == PAST_DATE
    assert headers["cache-control"] == "no-cache"
    for content_field in ("content-type", "content-length", "content-range",
                          "content-encoding", "accept-ranges"):
        assert content_field not in headers


CONDITIONAL_CASES: list[tuple[str, dict[str, str], int]] = [
    ("13.1.2 If-None-Match current", {"if-none-match": "CURRENT"}, 304),
    ("13.1.2 If-None-Match weak form", {"if-none-match": "W/CURRENT"}, 304),
    ("13.1.2 If-None-Match list", {"if-none-match": '"x", CURRENT'}, 304),
    ("13.1.2 If-None-Match *", {"if-none-match": "*"}, 304),
    ("13.1.2 If-None-Match other", {"if-none-match": '"x"'}, 200),
    ("13.1.1 If-Match current", {"if-match": "CURRENT"}, 200),
    ("13.1.1 If-Match list", {"if-match": '"x", CURRENT'}, 200),
    ("13.1.1 If-Match *", {"if-match": "*"}, 200),
    ("13.1.1 If-Match other", {"if-match": '"x"'}, 412),
    ("13.1.1 If-Match weak", {"if-match": "W/CURRENT"}, 412),
    ("13.1.4 If-Unmodified-Since equal", {"if-unmodified-since": PAST_DATE}, 200),
    ("13.1.4 If-Unmodified-Since earlier",
     {"if-unmodified-since": "Tue, 14 Nov 2023 22:13:19 GMT"}, 412),
    ("13.1.3 If-Modified-Since equal", {"if-modified-since": PAST_DATE}, 304),
    ("13.1.3 If-Modified-Since later",
     {"if-modified-since": "Wed, 15 Nov 2023 00:00:00 GMT"}, 304),
    ("13.1.3 If-Modified-Since earlier",
     {"if-modified-since": "Mon, 13 Nov 2023 00:00:00 GMT"}, 200),
    ("13.1.3 IMS ignored beside If-None-Match (nginx: 304 needs both)",
     {"if-none-match": '"x"', "if-modified-since": PAST_DATE}, 200),
    ("13.2.2 If-Match failure beats If-None-Match",
     {"if-match": '"x"', "if-none-match": "CURRENT"}, 412),
]


@pytest.mark.parametrize(
    ("fields", "status"), [c[1:] for c in CONDITIONAL_CASES], ids=[c[0] for c in CONDITIONAL_CASES]
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_rfc9110_13_2_2_preconditions_on_a_file(
    http_site: Site, fields: dict[str, str], status: int, method: str
) -> None:
    current = tag_of(http_site, "/page.html")
    sent = {name: value.replace("CURRENT", current) for name, value in fields.items()}
    result = http_site.plan("/page.html", method, headers=sent)
    assert result.status == status
    if status == 412:
        assert headers_of(result)["content-type"] == "text/html; charset=utf-8"
        assert b"412" in result.body if method == "GET" else result.body == b""


@pytest.mark.parametrize(
    ("path", "status"), [("/nope.html", 404), ("/dir", 301), ("/empty-dir/", 403)]
)
@pytest.mark.parametrize("fields", [{"if-match": '"x"'}, {"if-none-match": "*"},
                                    {"if-unmodified-since": PAST_DATE}])
def test_rfc9110_13_2_1_preconditions_are_ignored_unless_the_answer_is_2xx(
    http_site: Site, path: str, status: int, fields: dict[str, str]
) -> None:
    """nginx not_modified.t: If-Match on a missing file → 404, not 412."""
    assert http_site.plan(path, headers=fields).status == status


def test_rfc9110_8_8_2_1_last_modified_is_never_in_the_future(
    http_site: Site, www: Path
) -> None:
    future = time.time() + 86400 * 365
    touch(www / "page.html", future)
    result = http_site.plan("/page.html")
    stamp = email.utils.parsedate_to_datetime(headers_of(result)["last-modified"]).timestamp()
    assert stamp <= time.time()
    # A date-based If-Range cannot match a Last-Modified that was moved (§8.8.2.2).
    ranged = http_site.plan("/page.html", headers={
        "range": "bytes=0-1", "if-range": headers_of(result)["last-modified"]})
    assert ranged.status == 200


# -- ranges (RFC 9110 §14) ----------------------------------------------------------------
SINGLE_RANGES = [
    ("bytes=0-8", 0, 8),
    ("bytes=-10", 10230, 10239),
    ("bytes=10230-", 10230, 10239),
    ("bytes=10230-99999", 10230, 10239),
    ("bytes=0-10,5-20", 0, 20),  # coalesced into one part: not multipart (§14.6)
    ("bytes=0-" + "9" * 5000, 0, 10239),
]


@pytest.mark.parametrize(("value", "first", "last"), SINGLE_RANGES)
def test_rfc9110_14_2_single_range_is_206_with_content_range(
    http_site: Site, value: str, first: int, last: int
) -> None:
    result = http_site.plan("/data.bin", headers={"range": value})
    assert result.status == 206
    headers = headers_of(result)
    assert headers["content-range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert headers["content-length"] == str(last - first + 1)
    assert headers["content-type"] == "application/octet-stream"
    assert headers["etag"] and headers["last-modified"] and headers["cache-control"]
    assert http_site.body(result) == DATA[first : last + 1]


def test_rfc9110_14_6_several_ranges_are_multipart_byteranges(http_site: Site) -> None:
    result = http_site.plan("/data.bin", headers={"range": "bytes=500-509,0-9,-5"})
    assert result.status == 206
    headers = headers_of(result)
    kind = headers["content-type"]
    assert kind.startswith("multipart/byteranges; boundary=")
    body = http_site.body(result)
    assert headers["content-length"] == str(len(body))
    assert "content-range" not in headers
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + body
    )
    pieces = [(p["Content-Range"], p["Content-Type"], p.get_payload(decode=True))
              for p in message.iter_parts()]
    assert pieces == [  # in the order asked for (§15.3.7.2)
        ("bytes 500-509/10240", "application/octet-stream", DATA[500:510]),
        ("bytes 0-9/10240", "application/octet-stream", DATA[0:10]),
        ("bytes 10235-10239/10240", "application/octet-stream", DATA[10235:]),
    ]
    # Each part owns its own descriptor; the worker closes every one of them.
    assert result.file is not None
    fds = [result.file.fd] + [s.fd for s in result.rest or [] if isinstance(s, FileBody)]
    assert len(set(fds)) == 3


def test_multipart_with_a_full_descriptor_table_leaks_nothing(
    http_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.dup failing on the third part (EMFILE): every descriptor is closed once."""
    real_dup = os.dup
    calls = []

    def dup_then_fail(fd: int) -> int:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_dup(fd)

    real_close = os.close
    bad_closes = []

    def close_once(fd: int) -> None:
        try:
            real_close(fd)
        except OSError as exc:
            bad_closes.append((fd, exc.errno))  # a second close of the same descriptor
            raise

    monkeypatch.setattr(os, "dup", dup_then_fail)
    monkeypatch.setattr(os, "close", close_once)
    result = http_site.plan("/data.bin", headers={"range": "bytes=0-0,10-10,20-20"})
    monkeypatch.undo()
    assert result.status == 500 and result.file is None and result.rest is None
    assert bad_closes == []
    # The make_site fixture then checks that the descriptor table is as it was.


@pytest.mark.parametrize("value", ["bytes=10240-", "bytes=-0", "bytes=99999-100000,20000-"])
def test_rfc9110_15_5_17_unsatisfiable_is_416_with_the_length(
    http_site: Site, value: str
) -> None:
    result = http_site.plan("/data.bin", headers={"range": value})
    assert result.status == 416
    headers = headers_of(result)
    assert headers["content-range"] == "bytes */10240"
    assert int(headers["content-length"]) == len(result.body) > 0
    assert result.file is None


@pytest.mark.parametrize(
    "value",
    ["bytes=alpha", "bytes=5", "bytes=5-2", "items=0-5", "bytes=0-,0-", "bytes=0-10240,0-0",
     "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 66, 2))],
)
def test_rfc9110_14_2_invalid_or_amplifying_ranges_get_the_whole_file(
    http_site: Site, value: str
) -> None:
    result = http_site.plan("/data.bin", headers={"range": value})
    assert result.status == 200
    assert headers_of(result)["content-length"] == str(len(DATA))
    assert http_site.body(result) == DATA


def test_rfc9110_14_2_head_ignores_range(http_site: Site) -> None:
    """GET is the only method with range handling: HEAD gets the 200 headers."""
    get = http_site.plan("/data.bin")
    head = http_site.plan("/data.bin", "HEAD", headers={"range": "bytes=0-9"})
    assert head.status == 200 and head.headers == get.headers and head.file is None


def test_rfc9110_14_2_an_empty_file_ignores_range(http_site: Site) -> None:
    result = http_site.plan("/empty.txt", headers={"range": "bytes=0-"})
    assert result.status == 200 and headers_of(result)["content-length"] == "0"


def test_rfc9110_14_2_range_on_errors_and_redirects_is_ignored(http_site: Site) -> None:
    assert http_site.status_with("/nope", {"range": "bytes=0-1"}) == 404
    assert http_site.status_with("/dir", {"range": "bytes=0-1"}) == 301


IF_RANGES = [
    ("13.1.5 strong ETag", "CURRENT", 206),
    ("13.1.5 other ETag", '"other"', 200),
    ("13.1.5 weak ETag never", "W/CURRENT", 200),
    ("13.1.5 exact Last-Modified", PAST_DATE, 206),
    ("13.1.5 later date (not exact)", "Wed, 15 Nov 2023 00:00:00 GMT", 200),
    ("13.1.5 earlier date", "Mon, 13 Nov 2023 00:00:00 GMT", 200),
    ("13.1.5 not a validator", "yesterday", 200),
]


@pytest.mark.parametrize(
    ("value", "status"), [c[1:] for c in IF_RANGES], ids=[c[0] for c in IF_RANGES]
)
def test_rfc9110_13_1_5_if_range(http_site: Site, value: str, status: int) -> None:
    """nginx range_if_range.t: a wrong If-Range → 200 with the whole file."""
    current = tag_of(http_site, "/data.bin")
    sent = value.replace("CURRENT", current)
    result = http_site.plan("/data.bin", headers={"range": "bytes=0-9", "if-range": sent})
    assert result.status == status
    assert len(http_site.body(result)) == (10 if status == 206 else len(DATA))


def test_rfc9110_13_1_5_if_range_without_range_is_ignored(http_site: Site) -> None:
    assert http_site.status_with("/data.bin", {"if-range": '"other"'}) == 200


def test_rfc9110_13_1_5_a_date_within_the_current_second_is_weak(
    http_site: Site, www: Path
) -> None:
    touch(www / "data.bin", time.time())
    last_modified = headers_of(http_site.plan("/data.bin"))["last-modified"]
    result = http_site.plan("/data.bin", headers={"range": "bytes=0-9", "if-range": last_modified})
    assert result.status == 200


def test_rfc9110_13_2_2_preconditions_come_before_range(http_site: Site) -> None:
    current = tag_of(http_site, "/data.bin")
    assert http_site.status_with(
        "/data.bin", {"range": "bytes=0-9", "if-none-match": current}) == 304
    assert http_site.status_with("/data.bin", {"range": "bytes=0-9", "if-match": '"x"'}) == 412
    assert http_site.status_with("/data.bin", {"range": "bytes=0-9", "if-match": current}) == 206


# -- precompressed variants (RFC 9110 §8.4, §12.5.3) ---------------------------------------
VARIANTS = [
    ("br preferred", "/app.js", "gzip, deflate, br", "br", b"BROTLI" + JS[:20]),
    ("gzip by q", "/app.js", "br;q=0.5, gzip", "gzip", b"GZIP" + JS[:40]),
    ("no Accept-Encoding", "/app.js", None, None, JS),
    ("identity only", "/app.js", "identity", None, JS),
    ("gzip refused", "/gz-only.js", "gzip;q=0, br", None, JS),
    ("only a gzip variant", "/gz-only.js", "br, gzip", "gzip", b"GZIP-ONLY"),
    ("a stale gzip is never served", "/stale.css", "gzip", None, b"body { color: blue }\n"),
    ("the fresh br beside it is", "/stale.css", "gzip, br", "br", b"FRESH BROTLI"),
    ("variant symlinked outside", "/escaping.js", "gzip", None, JS),
    ("variant that is a directory", "/variant-dir.js", "gzip", None, JS),
    ("variant symlinked inside", "/linked.js", "gzip", "gzip", b"LINKED GZIP"),
]


@pytest.mark.parametrize(
    ("path", "accept", "coding", "content"), [c[1:] for c in VARIANTS],
    ids=[c[0] for c in VARIANTS],
)
def test_rfc9110_12_5_3_precompressed_variants(
    http_site: Site, path: str, accept: str | None, coding: str | None, content: bytes
) -> None:
    fields = {"accept-encoding": accept} if accept is not None else {}
    result = http_site.plan(path, headers=fields)
    assert result.status == 200
    headers = headers_of(result)
    assert headers.get("content-encoding") == coding
    assert http_site.body(result) == content
    assert headers["content-length"] == str(len(content))
    # The Content-Type is always the original file's (§8.3, §8.4).
    assert headers["content-type"] == content_type(path)


def test_vary_is_on_every_response_for_a_file_with_variants(http_site: Site) -> None:
    for fields in ({}, {"accept-encoding": "gzip"}, {"accept-encoding": "identity"}):
        for method in ("GET", "HEAD"):
            assert headers_of(http_site.plan("/app.js", method, headers=fields))[
                "vary"] == "Accept-Encoding"
    gzip_tag = tag_of(http_site, "/app.js", **{"accept-encoding": "gzip"})
    not_modified = http_site.plan(
        "/app.js", headers={"accept-encoding": "gzip", "if-none-match": gzip_tag})
    assert not_modified.status == 304
    assert headers_of(not_modified)["vary"] == "Accept-Encoding"
    assert "content-encoding" not in headers_of(not_modified)
    failed = http_site.plan("/app.js", headers={"if-match": '"x"'})
    assert failed.status == 412 and headers_of(failed)["vary"] == "Accept-Encoding"
    assert "vary" not in headers_of(http_site.plan("/page.html"))


def test_each_variant_has_its_own_etag(http_site: Site) -> None:
    tags = {tag_of(http_site, "/app.js", **{"accept-encoding": coding})
            for coding in ("identity", "gzip", "br")}
    assert len(tags) == 3
    plain = tag_of(http_site, "/app.js")
    # The plain file's tag does not validate the gzip variant (strong, per encoding).
    result = http_site.plan("/app.js", headers={"accept-encoding": "gzip", "if-none-match": plain})
    assert result.status == 200 and headers_of(result)["content-encoding"] == "gzip"


def test_ranges_apply_to_the_encoded_bytes(http_site: Site) -> None:
    encoded = b"GZIP" + JS[:40]
    result = http_site.plan("/app.js", headers={"accept-encoding": "gzip", "range": "bytes=0-3"})
    assert result.status == 206
    headers = headers_of(result)
    assert headers["content-range"] == f"bytes 0-3/{len(encoded)}"
    assert headers["content-encoding"] == "gzip"
    assert http_site.body(result) == b"GZIP"
    # Several ranges of a variant: the whole variant (a multipart body cannot carry
    # a per-part Content-Encoding).
    several = http_site.plan(
        "/app.js", headers={"accept-encoding": "gzip", "range": "bytes=0-1,5-6"})
    assert several.status == 200 and http_site.body(several) == encoded
    past_end = http_site.plan(
        "/app.js", headers={"accept-encoding": "gzip", "range": f"bytes={len(encoded)}-"})
    assert past_end.status == 416
    assert headers_of(past_end)["content-range"] == f"bytes */{len(encoded)}"
    assert headers_of(past_end)["vary"] == "Accept-Encoding"


def test_a_variant_without_its_file_answers_for_it(http_site: Site, make_site: Any) -> None:
    # SPEC §10: X.gz without X answers for X (it was a 404 before issue 19).
    assert http_site.status_with("/missing.js", {"accept-encoding": "gzip"}) == 200
    assert make_site(precompressed=False).status_with(
        "/missing.js", {"accept-encoding": "gzip"}
    ) == 404


def test_precompressed_off_ignores_variants(make_site: Any) -> None:
    site = make_site(precompressed=False)
    result = site.plan("/app.js", headers={"accept-encoding": "br, gzip"})
    headers = headers_of(result)
    assert "content-encoding" not in headers and "vary" not in headers
    assert site.body(result) == JS


# -- directory listings ---------------------------------------------------------------------
def test_without_autoindex_a_directory_without_index_is_403(http_site: Site) -> None:
    assert http_site.status("/dir/") == 403
    assert http_site.status("/empty-dir/") == 403


def test_autoindex_lists_a_directory(make_site: Any) -> None:
    site = make_site(autoindex=True)
    result = site.plan("/dir/")
    assert result.status == 200
    headers = headers_of(result)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["vary"] == "Accept"
    assert headers["cache-control"] == "no-cache"
    page = result.body.decode()
    assert int(headers["content-length"]) == len(result.body)
    order = [page.index(f'href="{name}"') for name in ("sub/", "a%20file.txt", "b.txt", "in-link")]
    assert order == sorted(order)  # directories first, then names in order
    for absent in (".hidden", ".git", "out-link"):
        assert absent not in page
    head = site.plan("/dir/", "HEAD")
    assert head.headers == result.headers and head.body == b""


def test_autoindex_json(make_site: Any) -> None:
    site = make_site(autoindex=True)
    result = site.plan("/dir/", headers={"accept": "application/json"})
    assert headers_of(result)["content-type"] == "application/json; charset=utf-8"
    items = json.loads(result.body)
    assert [item["name"] for item in items] == ["sub", "a file.txt", "b.txt", "in-link"]
    assert items[2] == {"name": "b.txt", "type": "file", "mtime": PAST_DATE, "size": 4}


def test_autoindex_still_prefers_the_index_and_redirects(make_site: Any, www: Path) -> None:
    (www / "dir" / "index.html").write_text("the index\n")
    site = make_site(autoindex=True)
    assert site.body(site.plan("/dir/")) == b"the index\n"
    assert site.status("/dir") == 301
    assert site.status("/empty-dir/") == 200
    assert site.status("/nope/") == 404


# -- error pages ----------------------------------------------------------------------------
def test_error_pages_come_from_the_docroot(make_site: Any) -> None:
    site = make_site(error_pages=((404, "/errors/404.html"), (403, "/errors/403.txt")))
    missing = site.plan("/nope.html")
    assert missing.status == 404
    headers = headers_of(missing)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert site.body(missing) == b"<h1>custom not found</h1>\n"
    assert headers["content-length"] == str(len(b"<h1>custom not found</h1>\n"))
    assert "etag" not in headers and "last-modified" not in headers
    head = site.plan("/nope.html", "HEAD")
    assert head.status == 404 and head.headers == missing.headers and head.file is None
    forbidden = site.plan("/empty-dir/")
    assert forbidden.status == 403 and site.body(forbidden) == b"custom forbidden\n"
    assert headers_of(forbidden)["content-type"] == "text/plain; charset=utf-8"
    # Not configured: the built-in page.
    assert site.plan("/%zz").status == 400 and b"400 Bad Request" in site.plan("/%zz").body


def test_a_missing_error_page_falls_back_to_the_built_in_one(make_site: Any, www: Path) -> None:
    site = make_site(error_pages=((404, "/errors/404.html"),))
    (www / "errors" / "404.html").unlink()
    result = site.plan("/nope.html")
    assert result.status == 404 and b"404 Not Found" in result.body


def test_an_error_page_is_never_read_through_a_symlink_out(make_site: Any, www: Path) -> None:
    os.symlink(www.parent / "outside" / "secret.js.gz", www / "errors" / "out.html")
    site = make_site(error_pages=((404, "/errors/out.html"),))
    result = site.plan("/nope.html")
    assert result.status == 404 and b"outside" not in site.body(result)


# -- caching headers, extra headers, MIME overrides, Server ------------------------------------
def test_cache_control_rules_by_glob(make_site: Any) -> None:
    site = make_site(cache_control=(
        ("*.js", "public, max-age=31536000, immutable"), ("/dir/**", None), ("*", "max-age=60"),
    ))
    assert headers_of(site.plan("/app.js"))["cache-control"] == (
        "public, max-age=31536000, immutable")
    assert "cache-control" not in headers_of(site.plan("/dir/b.txt"))
    assert headers_of(site.plan("/page.html"))["cache-control"] == "max-age=60"
    tag = tag_of(site, "/app.js")
    assert headers_of(site.plan("/app.js", headers={"if-none-match": tag}))[
        "cache-control"] == "public, max-age=31536000, immutable"


def test_extra_headers_go_on_every_response(make_site: Any) -> None:
    extra = (("X-Frame-Options", "DENY"), ("Strict-Transport-Security", "max-age=60"))
    site = make_site(headers=extra, autoindex=True)
    tag = tag_of(site, "/page.html")
    plans = [
        site.plan("/page.html"),
        site.plan("/page.html", "HEAD"),
        site.plan("/page.html", headers={"if-none-match": tag}),
        site.plan("/data.bin", headers={"range": "bytes=0-1"}),
        site.plan("/data.bin", headers={"range": "bytes=0-1,3-4"}),
        site.plan("/data.bin", headers={"range": "bytes=99999-"}),
        site.plan("/page.html", headers={"if-match": '"x"'}),
        site.plan("/nope"),
        site.plan("/dir"),
        site.plan("/dir/"),
        site.plan("/page.html", "POST"),
        site.plan("/page.html", "BREW"),
        site.site.error_plan(400),
        site.site.error_plan(304),
    ]
    assert {p.status for p in plans} >= {200, 206, 301, 304, 400, 404, 405, 412, 416, 501}
    for result in plans:
        headers = headers_of(result)
        assert headers["x-frame-options"] == "DENY", result.status
        assert headers["strict-transport-security"] == "max-age=60"


def test_mime_type_overrides(make_site: Any) -> None:
    site = make_site(mime_types=(("xyz", "font/xyz"), ("html", "text/html; charset=iso-8859-1"),
                                 ("bin", "text/x-binary")))
    assert headers_of(site.plan("/font.xyz"))["content-type"] == "font/xyz"
    assert headers_of(site.plan("/page.html"))["content-type"] == "text/html; charset=iso-8859-1"
    assert headers_of(site.plan("/data.bin"))["content-type"] == "text/x-binary; charset=utf-8"
    assert headers_of(site.plan("/app.js"))["content-type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize(("tokens", "value"), [(False, "forkserver"), (True, "forkserver/")])
def test_server_tokens(tokens: bool, value: str) -> None:
    header = server_header(Config(server_tokens=tokens))
    assert header == value if not tokens else header == value + __version__


def test_expired_entries_are_dropped_with_their_descriptors(site: Site, root: Path) -> None:
    (root / "mid.bin").write_bytes(bytes(CACHE_INLINE_BYTES * 2))
    (root / "small.bin").write_bytes(b"small")
    site.body(site.plan("/mid.bin"))
    site.body(site.plan("/small.bin"))
    assert site.site.files.descriptors == 1 and len(site.site.files.entries) == 2
    # Past its window an entry is renewed by a hit; nobody asks: not yet dropped.
    site.site.drop_expired(site.clock.now + CACHE_RECHECK_SECONDS)
    assert len(site.site.files.entries) == 2
    for body in site.bodies:
        close_body(body)  # the response is sent: only the cache holds the descriptor
    site.bodies.clear()
    before = open_fds()
    site.site.drop_expired(site.clock.now + CACHE_RECHECK_SECONDS + CACHE_IDLE_SECONDS)
    assert site.site.files.entries == {} and site.site.files.descriptors == 0
    assert len(before - open_fds()) == 1  # the worker's sweep gives the descriptor back
