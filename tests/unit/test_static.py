"""The static planner: URL path → file, with real temporary trees and no mocks.

Every fd a plan hands out is closed by the ``site`` fixture's teardown, so a failing
assertion never leaks descriptors into the next test.
"""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkserver.config import Config
from forkserver.errors import HttpError, StartupError
from forkserver.http import Request
from forkserver.static import (
    KNOWN_METHODS,
    REASONS,
    Plan,
    StaticSite,
    content_type,
    http_date,
    resolve_path,
)

IS_ROOT = os.geteuid() == 0


# -- helpers ----------------------------------------------------------------------------
def make_request(
    path: str, method: str = "GET", query: str = "", content_length: int = 0
) -> Request:
    target = path + (f"?{query}" if query else "")
    return Request(
        method=method,
        target=target,
        path=path,
        query=query,
        minor=1,
        headers={"host": "example.test"},
        keep_alive=True,
        host="example.test",
        content_length=content_length,
        line=f"{method} {target} HTTP/1.1",
    )


class Site:
    """A StaticSite plus bookkeeping: every fd it returns is closed at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = StaticSite(Config(docroot=str(root)))
        self.fds: list[int] = []

    def plan(self, path: str, method: str = "GET", **kwargs: object) -> Plan:
        result = self.site.plan(make_request(path, method, **kwargs))  # type: ignore[arg-type]
        if result.file is not None:
            self.fds.append(result.file.fd)
        return result

    def status(self, path: str, method: str = "GET") -> int:
        return self.plan(path, method).status

    def body(self, result: Plan) -> bytes:
        """What the worker would send after the head."""
        if result.file is None:
            return result.body
        return result.body + os.pread(result.file.fd, result.file.length, result.file.offset)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.site.close()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


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
                      "linkidx", "%2e%2e", "back\\slash", "sp ace"):
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
        "loop": "loop",  # a loop
        "dangling": "nothing-here",
        "roundtrip.txt": "../www/a/b.txt",  # leaves and comes back in: inside
        "sub/up.html": "../index.html",
        "sub/escape.txt": "../../outside/secret.txt",
        "linkidx/index.html": "../sub/page.html",  # an index that is a symlink
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
    for segment in resolved.segments:
        assert segment and "/" not in segment and "\x00" not in segment
        assert not segment.startswith(".")


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


def test_files_carry_validators_and_no_accept_ranges_yet(site: Site, root: Path) -> None:
    result = site.plan("/style.css")
    headers = headers_of(result)
    st_ = os.stat(root / "style.css")
    assert headers["content-type"] == "text/css; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["last-modified"] == email.utils.formatdate(st_.st_mtime, usegmt=True)
    assert headers["etag"] == f'"{st_.st_ino:x}-{st_.st_size:x}-{st_.st_mtime_ns:x}"'
    # Ranges are not served yet, so they must not be advertised.
    assert "accept-ranges" not in headers
    # The worker adds these; the planner must not.
    assert not {"date", "server", "connection"} & set(headers)
    assert result.file is not None
    assert (result.file.offset, result.file.length) == (0, st_.st_size)
    assert not result.close


def test_file_body_fd_is_an_independent_cloexec_descriptor(site: Site) -> None:
    result = site.plan("/notes.txt")
    assert result.file is not None
    assert os.get_inheritable(result.file.fd) is False
    assert stat.S_ISREG(os.fstat(result.file.fd).st_mode)


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


def test_etag_changes_when_the_file_changes(site: Site, root: Path) -> None:
    path = root / "notes.txt"
    before = headers_of(site.plan("/notes.txt"))["etag"]
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', before)  # strong, no W/
    mtime_ns = path.stat().st_mtime_ns
    path.write_text("NOTES\n")  # same size, new content
    os.utime(path, ns=(mtime_ns + 1_000, mtime_ns + 1_000))  # even within one tick
    after_write = headers_of(site.plan("/notes.txt"))["etag"]
    assert after_write != before
    replacement = root / "notes.tmp"
    replacement.write_text("NOTES\n")
    os.utime(replacement, ns=(mtime_ns + 1_000, mtime_ns + 1_000))
    os.replace(replacement, path)  # an atomic deploy: same size and mtime, new inode
    assert headers_of(site.plan("/notes.txt"))["etag"] not in (before, after_write)


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
    "linkidx", "noindex", "pipe",
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
)
def test_nothing_outside_the_docroot_is_ever_served(
    property_site: Site, segments: list[str], trailing: bool, method: str
) -> None:
    path = "/" + "/".join(segments) + ("/" if trailing and segments else "")
    result = property_site.site.plan(make_request(path, method))
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
        os.close(result.file.fd)
