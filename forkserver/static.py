"""Static files: request → response plan.

Owns URL-path → file resolution (containment in the docroot, dotfiles, symlinks),
MIME types, validators, index files, redirects and error pages. May stat and open
files; must not send anything, touch sockets or signals, or know about workers.

Decisions where SPEC §5 leaves room (each pinned by ``tests/unit/test_static.py``):

* ``plan()`` never raises for a bad request: it returns the error plan itself (400
  for a malformed or climbing path, 404, 403, 405, 501, …). Only ``__init__`` raises
  (``StartupError`` when the docroot cannot be opened).
* Methods: GET and HEAD serve. POST, PUT, DELETE, PATCH, TRACE, CONNECT and OPTIONS
  (``OPTIONS *`` included) → 405 with ``Allow: GET, HEAD``; OPTIONS is not answered
  204, as in nginx, so one rule covers every method we do not serve. The method is
  checked before the path, so a missing file answers 405 too: it costs no filesystem
  lookup and does not tell a client which paths exist. Any other token (WebDAV verbs,
  lower-case ``get``) → 501, since methods are case-sensitive (RFC 9110 §9.1).
* The path is percent-decoded exactly once; ``%`` not followed by two hex digits
  → 400; the bytes must be strict UTF-8 (overlong forms such as ``%c0%ae`` and
  surrogates → 400); NUL → 400. ``%2f`` decodes to ``/`` and then separates
  segments, so ``%2e%2e%2f`` is a dot-segment like ``../``. ``%252e`` decodes once to
  the literal name ``%2e``.
* Dot-segments are resolved (RFC 3986 §5.2.4); a ``..`` that would climb above the
  docroot → 400. Empty segments (``//``) are merged, as nginx's ``merge_slashes on``.
  A backslash is an ordinary filename byte on POSIX and never separates segments.
* Any segment starting with ``.`` → 404, whether in the URL or in the real path a
  symlink leads to (``.git``, ``.env``, and ``.well-known`` as well).
* Symlinks are followed only when their real target stays inside the docroot; one
  that escapes answers 404 (not 403, so a client cannot tell an escaping link from a
  missing file). Only regular files are served; a FIFO, socket or device → 404.
* A directory without a trailing slash → 301 with a relative ``Location`` (the
  request path as sent, plus ``/``, plus the query); a directory with a slash → its
  ``index.html``, otherwise 403.
* A request that announced a body (``Content-Length`` > 0) is answered and the
  connection closed (``Plan.close``): the body is never read, so the bytes after the
  head cannot be trusted as the next request.

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

Not here yet: conditional requests, ``Range`` (files carry no ``Accept-Ranges`` until
ranges are served), caches.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from forkserver.config import Config
from forkserver.errors import HttpError, StartupError
from forkserver.http import Request

__all__ = [
    "REASONS",
    "FileBody",
    "Plan",
    "ResolvedPath",
    "StaticSite",
    "content_type",
    "etag",
    "http_date",
    "resolve_path",
]

# Reason phrases for the status line (RFC 9110 §15); the worker imports this table.
REASONS: dict[int, str] = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

SERVED_METHODS = frozenset({"GET", "HEAD"})
# Methods this server knows but never serves (RFC 9110 §9, plus PATCH from RFC 5789):
# 405 with Allow. Every other token is one we do not recognise: 501 (RFC 9110 §15.6.2).
KNOWN_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "OPTIONS"})
ALLOW = "GET, HEAD"
INDEX_FILE = "index.html"
NOSNIFF = ("X-Content-Type-Options", "nosniff")
HTML_TYPE = "text/html; charset=utf-8"
DEFAULT_TYPE = "application/octet-stream"

# Statuses whose responses never have content, so no Content-Length (RFC 9110 §8.6).
_NO_CONTENT = frozenset({204, 304})

# Media types by lower-cased extension. A table of our own rather than ``mimetypes``,
# whose answers depend on the host's /etc/mime.types: every machine must agree.
_TYPES: dict[str, str] = {
    # documents and code
    "html": "text/html",
    "htm": "text/html",
    "xhtml": "application/xhtml+xml",
    "css": "text/css",
    "js": "text/javascript",  # RFC 9239
    "mjs": "text/javascript",
    "json": "application/json",
    "map": "application/json",  # source maps
    "jsonld": "application/ld+json",
    "webmanifest": "application/manifest+json",
    "xml": "application/xml",
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "txt": "text/plain",
    "md": "text/markdown",
    "csv": "text/csv",
    "ics": "text/calendar",
    "vtt": "text/vtt",
    "yaml": "application/yaml",  # RFC 9512
    "yml": "application/yaml",
    "toml": "application/toml",
    "pdf": "application/pdf",
    "wasm": "application/wasm",
    # images
    "svg": "image/svg+xml",
    "png": "image/png",
    "apng": "image/apng",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "ico": "image/x-icon",
    "bmp": "image/bmp",
    # fonts
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
    "otf": "font/otf",
    # audio and video
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "webm": "video/webm",
    "ogv": "video/ogg",
    "mov": "video/quicktime",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    # archives: served as themselves, never with Content-Encoding
    "zip": "application/zip",
    "gz": "application/gzip",
    "tgz": "application/gzip",
    "tar": "application/x-tar",
    "bz2": "application/x-bzip2",
    "xz": "application/x-xz",
    "zst": "application/zstd",
    "7z": "application/x-7z-compressed",
    "epub": "application/epub+zip",
}

# Textual types that are not text/*: they get a charset parameter too.
_TEXTUAL = frozenset({
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/yaml",
    "application/toml",
    "application/javascript",
    "image/svg+xml",
})


def _with_charset(media_type: str) -> str:
    if media_type.startswith("text/") or media_type in _TEXTUAL:
        return f"{media_type}; charset=utf-8"
    return media_type


# Extension → full Content-Type value, charset included, computed once at import.
CONTENT_TYPES: dict[str, str] = {ext: _with_charset(kind) for ext, kind in _TYPES.items()}


def content_type(name: str) -> str:
    """The Content-Type for a file name (its last extension, case-insensitive)."""
    dot = name.rfind(".")
    if dot < 0:
        return DEFAULT_TYPE
    return CONTENT_TYPES.get(name[dot + 1 :].lower(), DEFAULT_TYPE)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# An IMF-fixdate has a four-digit year (RFC 9110 §5.6.7): clamp mtimes to 1970..9999.
_LAST_HTTP_DATE = 253402300799  # 9999-12-31T23:59:59Z


def http_date(seconds: float) -> str:
    """IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT`` (RFC 9110 §5.6.7)."""
    t = time.gmtime(min(max(int(seconds), 0), _LAST_HTTP_DATE))
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def etag(st: os.stat_result) -> str:
    """Strong validator ``"<inode>-<size>-<mtime_ns>"`` in hex (RFC 9110 §8.8.3).

    Built only from the file's metadata, so every worker computes the same tag for the
    same file without reading it; any write changes mtime_ns (and usually the size),
    and an atomic replace (rename) changes the inode. Machines behind one balancer
    see different inodes: they must share the tree (or a later digest ETag).
    """
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


# -- URL path → segments ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResolvedPath:
    """A URL path after decoding and dot-segment resolution.

    ``segments`` are plain names: never empty, ``.``, ``..``, never containing ``/``
    or NUL, never starting with ``.``. ``directory`` says the path ended with ``/``
    (or with a dot-segment, which RFC 3986 §5.2.4 turns into one). ``canonical``
    says the decoded path was already in that form, so the path as sent can be reused
    in a redirect.
    """

    segments: tuple[str, ...]
    directory: bool
    canonical: bool


# Characters kept as they are when a path or query is copied into a Location: the
# RFC 3986 pchar set plus "%" (escapes stay as sent). quote() encodes all the rest.
_URI_SAFE = "/%!$&'()*+,;=:@"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def resolve_path(path: str) -> ResolvedPath:
    """Decode a percent-encoded URL path once and resolve its dot-segments.

    Raises HttpError(400) for a bad escape, invalid UTF-8, NUL or a climb above the
    root, and HttpError(404) for a dot segment (hidden file or directory). Both carry
    ``close=False``: the request was framed correctly; only its path is refused.
    """
    if not path.startswith("/"):
        raise HttpError(400, "path must start with /", close=False)
    if "%" in path or not path.isascii():
        if _BAD_ESCAPE.search(path):
            raise HttpError(400, "invalid percent-encoding", close=False)
        try:
            decoded = unquote_to_bytes(path).decode("utf-8")  # strict: overlong → error
        except UnicodeError:  # also a lone surrogate, which no request line can carry
            raise HttpError(400, "path is not valid UTF-8", close=False) from None
    else:
        decoded = path
    if "\x00" in decoded:
        raise HttpError(400, "NUL in path", close=False)

    if "/." not in decoded and "//" not in decoded:
        # Fast path: no dot-segment, no dotfile, no empty segment.
        directory = decoded.endswith("/")
        body = decoded[1:-1] if directory else decoded[1:]
        return ResolvedPath(tuple(body.split("/")) if body else (), directory, True)

    stack: list[str] = []
    parts = decoded.split("/")[1:]
    for part in parts:
        if part == "..":
            if not stack:
                raise HttpError(400, "path climbs above the docroot", close=False)
            stack.pop()
        elif part and part != ".":
            stack.append(part)
    last = parts[-1]
    directory = last in ("", ".", "..")
    for segment in stack:
        if segment.startswith("."):
            raise HttpError(404, "hidden path segment", close=False)
    rebuilt = "/" + "/".join(stack) + ("/" if directory and stack else "")
    return ResolvedPath(tuple(stack), directory, rebuilt == decoded)


# -- plans -----------------------------------------------------------------------------
@dataclass(slots=True)
class FileBody:
    """A byte range of an open file that the worker sends (``os.sendfile``) and closes."""

    fd: int
    offset: int
    length: int


@dataclass(slots=True)
class Plan:
    """Everything the worker needs to answer a request.

    ``headers`` holds every response field except Date, Server and Connection, which
    the worker adds. ``body`` is sent after the head; ``file`` (when set) after that;
    then each segment of ``rest`` in order (a multipart/byteranges body alternates part
    heads and file ranges). The worker closes every FileBody it is handed, so each owns
    its descriptor (several ranges of one file take os.dup copies).
    ``close`` asks the worker to close the connection after this response.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    file: FileBody | None = None
    close: bool = False
    rest: list[bytes | FileBody] | None = None


def _page(status: int) -> bytes:
    """The HTML body for a status: fixed text only, never any request input."""
    title = f"{status} {REASONS.get(status, 'Error')}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{title}</title></head>\n"
        f"<body>\n<h1>{title}</h1>\n<hr>\n<p>forkserver</p>\n</body>\n</html>\n"
    ).encode()


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


class _Refused(Exception):
    """Resolution ended in an error status (internal to the planner)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class StaticSite:
    """One docroot as configured; built once per worker and reused for every request."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = os.path.realpath(config.docroot)
        # Prefix a resolved symlink target must start with to count as inside.
        self._prefix = self.root if self.root.endswith("/") else self.root + "/"
        try:
            self._root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StartupError(
                f"docroot {config.docroot} cannot be opened: {exc.strerror}"
            ) from None
        # Error pages, built once: (headers, body) per status.
        self._pages: dict[int, tuple[list[tuple[str, str]], bytes]] = {}
        for status in REASONS:
            if status >= 300:
                self._pages[status] = self._page_parts(status)

    def close(self) -> None:
        """Release the docroot descriptor (tests; a worker keeps it until it exits)."""
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    # -- public -------------------------------------------------------------------
    def plan(self, request: Request) -> Plan:
        """The response to ``request``; never raises for anything the client sent.

        Every refusal (400, 403, 404, 405, 501, …) comes back as an error plan. A
        request that announced a body gets ``close=True`` (the body is never read).
        """
        method = request.method
        head = method == "HEAD"
        if head or method == "GET":
            try:
                result = self._plan_file(request, head)
            except HttpError as error:
                result = self.error_plan(error.status, head=head)
            except _Refused as refused:
                result = self.error_plan(refused.status, head=head)
            except OSError:
                result = self.error_plan(500, head=head)  # fstat failed: I/O error
        elif method in KNOWN_METHODS:
            result = self.error_plan(405)
        else:
            result = self.error_plan(501)
        if request.content_length:
            result.close = True
        return result

    def error_plan(self, status: int, *, head: bool = False) -> Plan:
        """A small fixed HTML page for ``status``; with ``head`` the same headers, no body."""
        parts = self._pages.get(status)
        if parts is None:
            if status in _NO_CONTENT or status < 200:
                return Plan(status, [NOSNIFF])
            parts = self._pages[status] = self._page_parts(status)
        headers, body = parts
        return Plan(status, list(headers), b"" if head else body)

    # -- internals ----------------------------------------------------------------
    def _page_parts(self, status: int) -> tuple[list[tuple[str, str]], bytes]:
        body = _page(status)
        headers = [("Content-Type", HTML_TYPE), ("Content-Length", str(len(body))), NOSNIFF]
        if status == 405:
            headers.append(("Allow", ALLOW))
        return headers, body

    def _plan_file(self, request: Request, head: bool) -> Plan:
        resolved = resolve_path(request.path)
        names = list(resolved.segments)
        if resolved.directory:
            names.append(INDEX_FILE)
        fd = self._open(names, resolved.directory)
        try:
            st = os.fstat(fd)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                # With a trailing slash it is INDEX_FILE that turned out to be a
                # directory: there is no index to serve.
                if resolved.directory:
                    raise _Refused(403)
                return self._redirect(request, resolved, head)
            if not stat.S_ISREG(mode):
                raise _Refused(404)  # FIFO, socket, device: never served
            size = st.st_size
            headers = [
                ("Content-Type", content_type(names[-1] if names else "")),
                ("Content-Length", str(size)),
                ("Last-Modified", http_date(st.st_mtime)),
                ("ETag", etag(st)),
                NOSNIFF,
            ]
            if head or size == 0:
                return Plan(200, headers)
            body = FileBody(fd, 0, size)
            fd = -1  # the worker owns it now
            return Plan(200, headers, file=body)
        finally:
            if fd >= 0:
                os.close(fd)

    def _redirect(self, request: Request, resolved: ResolvedPath, head: bool) -> Plan:
        """301 to the directory with a slash (relative Location, RFC 9110 §10.2.2)."""
        if resolved.canonical:
            # The path as sent, its percent-encoding kept. Quoting again only touches
            # what is not already a URI character: a backslash (so no browser reads
            # "/\host" as "//host", an open redirect), controls, non-ASCII.
            location = quote(request.path, safe=_URI_SAFE) + "/"
        else:
            # Rebuilt from the normalised segments: "//evil.example" or "/a/../b"
            # never reach the Location as sent.
            location = quote("/" + "/".join(resolved.segments), safe="/") + "/"
        if request.query:
            location += "?" + quote(request.query, safe=_URI_SAFE + "?")
        plan = self.error_plan(301, head=head)
        plan.headers.append(("Location", location))
        return plan

    def _open(self, names: list[str], directory: bool) -> int:
        """Open the file ``names`` leads to, contained in the docroot; or raise _Refused."""
        try:
            try:
                return self._walk(names)
            except OSError as exc:
                if exc.errno not in _SYMLINK_ERRORS:
                    raise
            real = self._real_names(names)
            return self._walk(real)
        except OSError as exc:
            code = exc.errno
            if code == errno.ENOENT and directory:
                raise _Refused(self._missing_index_status(names[:-1])) from None
            if code in _FORBIDDEN_ERRORS:
                raise _Refused(403) from None
            if code in _MISSING_ERRORS:
                raise _Refused(404) from None
            if code in _OVERLOAD_ERRORS:
                raise _Refused(503) from None
            raise _Refused(500) from None

    def _missing_index_status(self, names: list[str]) -> int:
        """403 if ``names`` is a directory (it just has no index file), else 404."""
        fd = self._open(names, False)
        try:
            return 403 if stat.S_ISDIR(os.fstat(fd).st_mode) else 404
        finally:
            os.close(fd)

    def _walk(self, names: list[str]) -> int:
        """openat one component at a time from the docroot, never following a symlink."""
        if not names:
            return os.open(".", _FILE_FLAGS, dir_fd=self._root_fd)
        parent = self._root_fd
        try:
            for name in names[:-1]:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                if parent != self._root_fd:
                    os.close(parent)
                parent = fd
            try:
                return os.open(names[-1], _FILE_FLAGS, dir_fd=parent)
            except PermissionError:
                # A directory may be searchable but not readable (mode --x): it can
                # still hold an index file, so look at what it is without reading it.
                return self._probe_directory(names[-1], parent)
        finally:
            if parent != self._root_fd:
                os.close(parent)

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
            raise _Refused(404) from None
        if real == self.root:
            return []
        if not real.startswith(self._prefix):
            raise _Refused(404)  # a symlink out of the docroot
        real_names = real[len(self._prefix) :].split("/")
        for name in real_names:
            if name.startswith("."):
                raise _Refused(404)  # a symlink to a hidden file
        return real_names
