"""Static files: request → response plan.

Owns URL-path → file resolution (containment in the docroot, dotfiles, symlinks),
the order in which a request is decided (method, path, file, variant, preconditions,
range), index files, directory listings, redirects and error pages. May stat, open
and list files; must not send anything, touch sockets or signals, or know about
workers. The rules it applies live in small pure modules: ``conditional`` (RFC 9110
§13), ``ranges`` (§14), ``negotiate`` (§12), ``mime``, ``caching``, ``autoindex``.

Decisions where SPEC §5 leaves room (each pinned by ``tests/unit/test_static.py``;
docs/http.md lists every behaviour with its RFC section):

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
  symlink leads to (``.git``, ``.env``, ``.htpasswd``). One exception: ``.well-known``
  as the first segment (RFC 8615), which exists to be public: ACME http-01
  challenges, ``security.txt``. Dot-names below it are hidden again.
* Symlinks are followed only when their real target stays inside the docroot; one
  that escapes answers 404 (not 403, so a client cannot tell an escaping link from a
  missing file). Only regular files are served; a FIFO, socket or device → 404.
* A directory without a trailing slash → 301 with a relative ``Location`` (the
  request path as sent, plus ``/``, plus the query); a directory with a slash → its
  ``index.html``, otherwise a listing (``autoindex: true``) or 403.
* A request that announced a body (``Content-Length`` > 0) is answered and the
  connection closed (``Plan.close``): the body is never read, so the bytes after the
  head cannot be trusted as the next request.
* The order of decisions for GET/HEAD of a file (RFC 9110 §13.2.1, §13.2.2): the
  path and the file (3xx/4xx first, so preconditions never turn a 404 into a 412),
  then the representation (the file or a precompressed variant, by Accept-Encoding),
  then the preconditions on *that* representation's validators (304/412), then Range
  (GET only, §14.2: HEAD ignores Range and gets the 200 headers).
* Precompressed variants ``X.br``/``X.gz`` are looked for next to the file actually
  opened (after following a symlink), must be regular files inside the docroot and
  no older than X; X itself must exist. Several ranges of a variant are answered
  with the whole variant (200): a Content-Encoding on a multipart body would
  describe the multipart document, not the parts.
* ``Last-Modified`` is never later than now (RFC 9110 §8.8.2.1): a file with an mtime
  in the future is dated now.
* Configured error pages (403/404/500) are read from the docroot through the same
  contained walk on every use; if one cannot be served the built-in page is sent.

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

Cost: a plain GET pays for the walk, one ``fstat``, two ``faccessat`` probes for
variants (when ``precompressed`` is on: about 2-4 µs of a ~15-20 µs plan) and a few
dict lookups; the conditional and range machinery runs only when the request
carries those fields.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from forkserver import SERVER_NAME, __version__
from forkserver.autoindex import render_html, render_json, scan_directory
from forkserver.caching import CacheRules
from forkserver.conditional import (
    Verdict,
    etag,
    evaluate_preconditions,
    http_date,
    if_range_holds,
)
from forkserver.config import Config
from forkserver.errors import HttpError, StartupError
from forkserver.http.request import Request
from forkserver.http.response import (
    NOSNIFF,
    REASONS,
    FileBody,
    Plan,
    SharedDescriptor,
    close_body,
    encode_fields,
    file_version,
    keeps_alive,
)
from forkserver.mime import CONTENT_TYPES, DEFAULT_TYPE, ContentTypes, content_type
from forkserver.negotiate import BR, GZIP, choose_encoding, prefers_json
from forkserver.ranges import ByteRange, content_range, multipart_framing, parse_range

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_TYPE",
    "NOSNIFF",
    "REASONS",
    "FileBody",
    "Plan",
    "ResolvedPath",
    "StaticSite",
    "close_body",
    "content_type",
    "encode_fields",
    "etag",
    "file_version",
    "http_date",
    "resolve_path",
    "server_header",
]

# Methods this server knows but never serves (RFC 9110 §9, plus PATCH from RFC 5789):
# 405 with Allow. Every other token is one we do not recognise: 501 (RFC 9110 §15.6.2).
KNOWN_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "OPTIONS"})
ALLOW = "GET, HEAD"
INDEX_FILE = "index.html"
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = CONTENT_TYPES["json"]
ACCEPT_RANGES = ("Accept-Ranges", "bytes")
VARY_ENCODING = ("Vary", "Accept-Encoding")

# The open-file cache (per worker): small files are answered from memory, head and
# body in one send, with no syscall at all. Like nginx's open_file_cache_valid, an
# entry is trusted for CACHE_RECHECK_SECONDS: the first hit after that takes the full
# path again (walk, open, fstat, read), which re-checks content, containment,
# dotfiles, permissions and newly added .br/.gz variants. So a rewritten, replaced or
# deleted file is served fresh within a second. A stat on every hit instead cost
# about 2.4 us of a 1 KiB request's ~28 us of CPU (bench/hotpath.py).
#
# Files up to CACHE_INLINE_BYTES are kept in memory. Larger ones up to CACHE_FILE_BYTES
# keep an open descriptor instead, and a hit sends a dup of it with sendfile: for
# 64 KiB, copying the content into the socket costs more than dup + sendfile + close
# (measured: 64 KiB keep-alive ~30k req/s from memory, ~25k through the full path
# with sendfile, ~37k from a cached descriptor).
CACHE_INLINE_BYTES = 16 * 1024
CACHE_FILE_BYTES = 1024 * 1024  # larger files take the full path every time
CACHE_TOTAL_BYTES = 4 * 1024 * 1024  # per worker; keeps master + 2 workers well under 40 MiB
CACHE_DESCRIPTORS = 128  # per worker: open descriptors the cache may hold
CACHE_RECHECK_SECONDS = 1.0
VARY_ACCEPT = ("Vary", "Accept")
# Suffix of each precompressed variant, in order of preference at equal q.
VARIANT_SUFFIXES = {BR: ".br", GZIP: ".gz"}
# Multipart boundary: 24 random hex digits cannot plausibly occur in a file (and a
# client cannot predict them to plant one).
BOUNDARY_BYTES = 12
# Last-Modified strings by second: the same few mtimes recur on every request.
DATE_CACHE_SIZE = 4096

# Statuses whose responses never have content, so no Content-Length (RFC 9110 §8.6).
_NO_CONTENT = frozenset({204, 304})
# Request fields that make a GET conditional (RFC 9110 §13.1).
_CONDITIONAL_FIELDS = frozenset(
    {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since"}
)


def server_header(config: Config) -> str:
    """The Server field: the product name, plus the version with ``server_tokens``."""
    return f"{SERVER_NAME}/{__version__}" if config.server_tokens else SERVER_NAME


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
    if _hidden(stack):
        raise HttpError(404, "hidden path segment", close=False)
    rebuilt = "/" + "/".join(stack) + ("/" if directory and stack else "")
    return ResolvedPath(tuple(stack), directory, rebuilt == decoded)


# RFC 8615: the one dot-name served, and only at the top of the docroot.
WELL_KNOWN = ".well-known"


def _hidden(names: list[str]) -> bool:
    """Whether a path (segments from the docroot down) names a dotfile or dot-directory."""
    return any(
        name.startswith(".") and (index or name != WELL_KNOWN)
        for index, name in enumerate(names)
    )


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


class _NoIndex(Exception):
    """The path is a directory without a servable index file (a listing or 403)."""


@dataclass(slots=True)
class _Opened:
    """A file opened by the contained walk: its fd, its directory and the names walked.

    ``names`` are symlink-free when the walk had to follow a symlink (the real path);
    ``parent`` is an O_PATH descriptor of the containing directory, or the docroot's.
    """

    fd: int
    parent: int
    names: list[str]


@dataclass(slots=True)
class _Representation:
    """The selected representation: the file itself or one precompressed variant."""

    fd: int
    st: os.stat_result
    encoding: str | None  # "br", "gzip" or None
    has_variants: bool  # the response varies by Accept-Encoding


@dataclass(slots=True)
class _Cached:
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
    expires: float  # monotonic time after which the next hit takes the full path


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
        self.server = server_header(config)
        self._types = ContentTypes(config.mime_types)
        self._cache_control = CacheRules(config.cache_control)
        self._extra = list(config.headers)
        self._precompressed = config.precompressed
        self._autoindex = config.autoindex
        self._error_pages = dict(config.error_pages)
        self._dates: dict[int, str] = {}
        self._cache: dict[str, _Cached] = {}  # request path → entry, oldest first
        self._cache_bytes = 0
        self._cache_descriptors = 0
        # Error pages, built once: (headers, body) per status.
        self._pages: dict[int, tuple[list[tuple[str, str]], bytes]] = {}
        for status in REASONS:
            if status >= 300:
                self._pages[status] = self._page_parts(status)

    def close(self) -> None:
        """Release every descriptor (tests; a worker keeps them until it exits)."""
        for path in list(self._cache):
            self._forget(path)
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
                result = self._plan_get(request, head)
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
        if not keeps_alive(request, result):
            result.close = True
        return result

    def error_plan(self, status: int, *, head: bool = False) -> Plan:
        """The page for ``status``: the configured file, else a small fixed HTML page.

        With ``head`` the same headers and no body.
        """
        if status in self._error_pages:
            custom = self._custom_error_plan(status, head)
            if custom is not None:
                return custom
        parts = self._pages.get(status)
        if parts is None:
            if status in _NO_CONTENT or status < 200:
                return Plan(status, [NOSNIFF, *self._extra])
            parts = self._pages[status] = self._page_parts(status)
        headers, body = parts
        return Plan(status, list(headers), b"" if head else body)

    # -- error pages ----------------------------------------------------------------
    def _page_parts(self, status: int) -> tuple[list[tuple[str, str]], bytes]:
        body = _page(status)
        headers = [("Content-Type", HTML_TYPE), ("Content-Length", str(len(body))), NOSNIFF]
        if status == 405:
            headers.append(("Allow", ALLOW))
        headers.extend(self._extra)
        return headers, body

    def _custom_error_plan(self, status: int, head: bool) -> Plan | None:
        """The configured page for ``status`` from the docroot, or None if unservable."""
        names = self._error_pages[status].strip("/").split("/")
        try:
            opened = self._open(names, directory=False)
        except (_Refused, _NoIndex):
            return None
        fd = opened.fd
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            headers = [
                ("Content-Type", self._types(names[-1])),
                ("Content-Length", str(st.st_size)),
                NOSNIFF,
                *self._extra,
            ]
            if head or not st.st_size:
                return Plan(status, headers)
            body = FileBody(SharedDescriptor(fd), 0, st.st_size, file_version(st))
            fd = -1  # the body holds it now
            return Plan(status, headers, file=body)
        except OSError:
            return None
        finally:
            self._release(opened.parent)
            if fd >= 0:
                os.close(fd)

    # -- GET and HEAD -------------------------------------------------------------
    def _plan_get(self, request: Request, head: bool) -> Plan:
        if request.path in self._cache:
            cached = self._cached_plan(request, head)
            if cached is not None:
                return cached
        resolved = resolve_path(request.path)
        names = list(resolved.segments)
        if resolved.directory:
            names.append(INDEX_FILE)
        try:
            opened = self._open(names, resolved.directory)
        except _NoIndex:
            return self._no_index(request, resolved, head)
        fd = opened.fd
        try:
            st = os.fstat(fd)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                # With a trailing slash it is INDEX_FILE that turned out to be a
                # directory: there is no index to serve.
                if resolved.directory:
                    return self._no_index(request, resolved, head)
                return self._redirect(request, resolved, head)
            if not stat.S_ISREG(mode):
                raise _Refused(404)  # FIFO, socket, device: never served
            fd = -1  # _plan_file owns it from here
            return self._plan_file(request, head, names, opened, st)
        finally:
            self._release(opened.parent)
            if fd >= 0:
                os.close(fd)

    def _plan_file(
        self, request: Request, head: bool, names: list[str], opened: _Opened,
        st: os.stat_result,
    ) -> Plan:
        """The response for a regular file; owns ``opened.fd`` (sends or closes it)."""
        fields = request.headers
        try:
            chosen = self._representation(fields, opened, st)
        except BaseException:
            os.close(opened.fd)
            raise
        fd, st = chosen.fd, chosen.st
        try:
            now = time.time()
            mtime = st.st_mtime
            # Never later than the response's Date (RFC 9110 §8.8.2.1).
            last_modified = int(mtime) if mtime < now else int(now)
            tag = etag(st)
            validators = [("Last-Modified", self._http_date(last_modified)), ("ETag", tag)]
            cache_control = self._cache_control("/" + "/".join(names))
            if cache_control is not None:
                validators.append(("Cache-Control", cache_control))
            if chosen.has_variants:
                validators.append(VARY_ENCODING)

            answer = self._precondition_answer(
                fields, tag, last_modified, validators, head, chosen.has_variants
            )
            if answer is not None:
                return answer

            size = st.st_size
            media_type = self._types(names[-1])
            headers = [("Content-Type", media_type), ("Content-Length", str(size))]
            headers.extend(validators)
            headers.append(ACCEPT_RANGES)
            if chosen.encoding is not None:
                headers.append(("Content-Encoding", chosen.encoding))
            headers.append(NOSNIFF)
            headers.extend(self._extra)

            range_field = fields.get("range")
            if range_field is not None and not head and size:
                # §13.2.2 step 5 and §13.1.5: If-Range decides whether Range applies.
                if_range = fields.get("if-range")
                if if_range is None or if_range_holds(
                    if_range, tag, last_modified, mtime, now
                ):
                    parts = parse_range(range_field, size)
                    if parts is not None and (len(parts) < 2 or chosen.encoding is None):
                        owned, fd = fd, -1  # _partial owns it, even if it raises
                        return self._partial(parts, headers, owned, size, media_type, chosen)
            if head or not size:
                return Plan(200, headers)
            version = file_version(st)
            if (
                size <= CACHE_FILE_BYTES
                and not chosen.has_variants
                and last_modified == int(mtime)
            ):
                entry = _Cached(
                    list(headers), encode_fields(headers), list(validators), tag,
                    last_modified, b"", None, version,
                    time.monotonic() + CACHE_RECHECK_SECONDS,
                )
                if size <= CACHE_INLINE_BYTES:
                    content = os.pread(fd, size, 0)
                    if len(content) == size:
                        entry.content = content
                        self._remember(request.path, entry)
                        return Plan(200, headers, body=content)
                else:
                    # The cache and this response share the one open descriptor.
                    descriptor = SharedDescriptor(fd)
                    fd = -1
                    entry.descriptor = descriptor.share()
                    self._remember(request.path, entry)
                    return Plan(200, headers, file=FileBody(descriptor, 0, size, version))
            body = FileBody(SharedDescriptor(fd), 0, size, version)
            fd = -1  # the body holds it now
            return Plan(200, headers, file=body)
        finally:
            if fd >= 0:
                os.close(fd)

    def _cached_plan(self, request: Request, head: bool) -> Plan | None:
        """The answer from the cache, or None to take the full path."""
        entry = self._cache[request.path]
        fields = request.headers
        if "range" in fields:
            return None
        if time.monotonic() >= entry.expires:
            self._forget(request.path)
            return None
        if not _CONDITIONAL_FIELDS.isdisjoint(fields):
            answer = self._precondition_answer(
                fields, entry.tag, entry.last_modified, entry.validators, head, False
            )
            if answer is not None:
                return answer
        descriptor = entry.descriptor
        if descriptor is None or head:
            body = b"" if head else entry.content
            return Plan(200, list(entry.headers), body, encoded=entry.encoded)
        # Lent: the response holds a reference until the worker's close_body (a dup +
        # close per hit cost two syscalls of six).
        lent = FileBody(descriptor.share(), 0, entry.version[0], entry.version)
        return Plan(200, list(entry.headers), file=lent, encoded=entry.encoded)

    def _precondition_answer(
        self, fields: Mapping[str, str], tag: str | None, last_modified: int | None,
        validators: list[tuple[str, str]], head: bool, has_variants: bool,
    ) -> Plan | None:
        """304 or 412 when the preconditions say so (RFC 9110 §13.2.2), else None."""
        if _CONDITIONAL_FIELDS.isdisjoint(fields):
            return None
        verdict = evaluate_preconditions(fields, tag, last_modified)
        if verdict is Verdict.NOT_MODIFIED:
            # RFC 9110 §15.4.5: the validators and caching fields a 200 would carry,
            # and no content fields.
            return Plan(304, [*validators, NOSNIFF, *self._extra])
        if verdict is Verdict.FAILED:
            return self._failed(412, head, has_variants)
        return None

    def _remember(self, path: str, entry: _Cached) -> None:
        self._forget(path)
        size = len(entry.content)
        descriptors = 0 if entry.descriptor is None else 1
        while self._cache and (
            self._cache_bytes + size > CACHE_TOTAL_BYTES
            or self._cache_descriptors + descriptors > CACHE_DESCRIPTORS
        ):
            self._forget(next(iter(self._cache)))  # the oldest entry
        self._cache[path] = entry
        self._cache_bytes += size
        self._cache_descriptors += descriptors

    def drop_expired(self, now: float) -> None:
        """Drop entries past their second (monotonic ``now``), so their descriptors
        are not held until the path is asked for again. Entries are in order of
        expiry (each is added anew with now + CACHE_RECHECK_SECONDS)."""
        cache = self._cache
        while cache:
            path, entry = next(iter(cache.items()))
            if entry.expires > now:
                return
            self._forget(path)

    def forget(self, path: str) -> None:
        """Drop the open-file cache's entry for ``path`` (the worker saw it change)."""
        self._forget(path)

    def _forget(self, path: str) -> None:
        entry = self._cache.pop(path, None)
        if entry is not None:
            self._cache_bytes -= len(entry.content)
            if entry.descriptor is not None:
                self._cache_descriptors -= 1
                entry.descriptor.close()  # open until the last lent response is done

    def _partial(
        self, parts: list[ByteRange], headers: list[tuple[str, str]], fd: int, size: int,
        media_type: str, chosen: _Representation,
    ) -> Plan:
        """206 for satisfiable parts, 416 for none (RFC 9110 §14.2); owns ``fd``."""
        version = file_version(chosen.st)
        try:
            if not parts:
                plan = self._failed(416, False, chosen.has_variants)
                plan.headers.append(("Content-Range", f"bytes */{size}"))
                return plan
            if len(parts) == 1:
                part = parts[0]
                partial = _replace_fields(headers, {
                    "Content-Length": str(part.length),
                    "Content-Range": content_range(part, size),
                })
                body = FileBody(SharedDescriptor(fd), part.first, part.length, version)
                fd = -1  # the body holds it now
                return Plan(206, partial, file=body)
            boundary = secrets.token_hex(BOUNDARY_BYTES)
            heads, closing, total = multipart_framing(parts, size, media_type, boundary)
            multipart = _replace_fields(headers, {
                "Content-Type": f"multipart/byteranges; boundary={boundary}",
                "Content-Length": str(total),
            })
            rest: list[bytes | FileBody] = []
            try:
                for part_head, part in zip(heads[1:], parts[1:], strict=True):
                    rest.append(part_head)
                    rest.append(FileBody(
                        SharedDescriptor(os.dup(fd)), part.first, part.length, version
                    ))
            except OSError:
                for segment in rest:
                    if isinstance(segment, FileBody):
                        close_body(segment)
                raise
            rest.append(closing)
            first = FileBody(SharedDescriptor(fd), parts[0].first, parts[0].length, version)
            fd = -1  # the body holds it now
            return Plan(206, multipart, body=heads[0], file=first, rest=rest)
        finally:
            if fd >= 0:
                os.close(fd)

    def _failed(self, status: int, head: bool, has_variants: bool) -> Plan:
        """412 or 416 for a file: its page, plus Vary when the answer depended on it."""
        plan = self.error_plan(status, head=head)
        if has_variants:
            plan.headers.append(VARY_ENCODING)
        return plan

    # -- precompressed variants -----------------------------------------------------
    def _representation(
        self, fields: Mapping[str, str], opened: _Opened, st: os.stat_result
    ) -> _Representation:
        """The file or a fresh precompressed variant, by Accept-Encoding (§12.5.3)."""
        if not self._precompressed:
            return _Representation(opened.fd, st, None, False)
        name = opened.names[-1]
        has_br = self._fresh_variant(opened, name + VARIANT_SUFFIXES[BR], st)
        has_gzip = self._fresh_variant(opened, name + VARIANT_SUFFIXES[GZIP], st)
        if not (has_br or has_gzip):
            return _Representation(opened.fd, st, None, False)
        encoding = choose_encoding(fields.get("accept-encoding"), has_br, has_gzip)
        if encoding is not None:
            variant = self._open_variant(opened, name + VARIANT_SUFFIXES[encoding], st)
            if variant is not None:
                os.close(opened.fd)
                return _Representation(variant[0], variant[1], encoding, True)
        return _Representation(opened.fd, st, None, True)

    def _fresh_variant(self, opened: _Opened, name: str, original: os.stat_result) -> bool:
        """Whether ``name`` beside the file is a regular file, inside, not older than it."""
        parent = opened.parent
        # Most files have no variant: faccessat answers that without building an
        # exception or a stat result (about half the cost of a failing os.stat).
        if not os.access(name, os.F_OK, dir_fd=parent, follow_symlinks=False):
            return False  # ENOENT, and ENAMETOOLONG and friends mean "none" too
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return False
        if stat.S_ISLNK(info.st_mode):
            variant = self._open_variant(opened, name, original)
            if variant is None:
                return False
            os.close(variant[0])
            return True
        return stat.S_ISREG(info.st_mode) and info.st_mtime_ns >= original.st_mtime_ns

    def _open_variant(
        self, opened: _Opened, name: str, original: os.stat_result
    ) -> tuple[int, os.stat_result] | None:
        """Open a variant by the contained walk; judged by fstat, so a swap cannot fool it."""
        try:
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=opened.parent)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    return None
                linked = self._open([*opened.names[:-1], name], directory=False)
                self._release(linked.parent)
                fd = linked.fd
        except (_Refused, _NoIndex):
            return None
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_mtime_ns < original.st_mtime_ns:
            os.close(fd)  # a stale variant is never served
            return None
        return fd, info

    # -- directories ----------------------------------------------------------------
    def _no_index(self, request: Request, resolved: ResolvedPath, head: bool) -> Plan:
        """A directory with no index: a listing with ``autoindex``, else 403."""
        if not self._autoindex:
            raise _Refused(403)
        names = list(resolved.segments)
        opened = self._open(names, directory=False)
        try:
            if not stat.S_ISDIR(os.fstat(opened.fd).st_mode):
                raise _Refused(404)
            url_path = "/" + "".join(name + "/" for name in names)
            try:
                listing = scan_directory(
                    opened.fd, url_path, lambda name: self._inside([*opened.names, name])
                )
            except OSError:
                raise _Refused(403) from None  # a search-only directory cannot be listed
        finally:
            self._release(opened.parent)
            os.close(opened.fd)
        fields = request.headers
        # A listing has no validators: only "*" can match (RFC 9110 §13.1.1, §13.1.2).
        answer = self._precondition_answer(fields, None, None, [VARY_ACCEPT], head, False)
        if answer is not None:
            return answer
        if prefers_json(fields.get("accept")):
            body, media_type = render_json(listing), JSON_TYPE
        else:
            body, media_type = render_html(listing), HTML_TYPE
        headers = [("Content-Type", media_type), ("Content-Length", str(len(body)))]
        cache_control = self._cache_control(url_path)
        if cache_control is not None:
            headers.append(("Cache-Control", cache_control))
        headers.extend((VARY_ACCEPT, NOSNIFF, *self._extra))
        return Plan(200, headers, b"" if head else body)

    def _inside(self, names: list[str]) -> bool:
        """Whether the symlink ``names`` leads inside the docroot, to no hidden name."""
        try:
            self._real_names(names)
        except _Refused:
            return False
        return True

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

    def _http_date(self, seconds: int) -> str:
        value = self._dates.get(seconds)
        if value is None:
            if len(self._dates) >= DATE_CACHE_SIZE:
                self._dates.clear()
            value = self._dates[seconds] = http_date(seconds)
        return value

    # -- the contained walk -----------------------------------------------------------
    def _release(self, parent: int) -> None:
        if parent != self._root_fd:
            os.close(parent)

    def _open(self, names: list[str], directory: bool) -> _Opened:
        """Open what ``names`` leads to, contained in the docroot; or raise _Refused.

        With ``directory`` (the last name is the index file) a directory without it
        raises _NoIndex. The caller closes ``fd`` and releases ``parent``.
        """
        try:
            try:
                fd, parent = self._walk(names)
                return _Opened(fd, parent, names)
            except OSError as exc:
                if exc.errno not in _SYMLINK_ERRORS:
                    raise
            real = self._real_names(names)
            fd, parent = self._walk(real)
            return _Opened(fd, parent, real)
        except OSError as exc:
            code = exc.errno
            if code == errno.ENOENT and directory:
                if self._is_directory(names[:-1]):
                    raise _NoIndex from None
                raise _Refused(404) from None
            if code in _FORBIDDEN_ERRORS:
                raise _Refused(403) from None
            if code in _MISSING_ERRORS:
                raise _Refused(404) from None
            if code in _OVERLOAD_ERRORS:
                raise _Refused(503) from None
            raise _Refused(500) from None

    def _is_directory(self, names: list[str]) -> bool:
        opened = self._open(names, False)
        try:
            return stat.S_ISDIR(os.fstat(opened.fd).st_mode)
        finally:
            self._release(opened.parent)
            os.close(opened.fd)

    def _walk(self, names: list[str]) -> tuple[int, int]:
        """openat one component at a time from the docroot, never following a symlink.

        Returns (fd of the last name, O_PATH fd of its directory or the docroot's).
        """
        root = self._root_fd
        if not names:
            return os.open(".", _FILE_FLAGS, dir_fd=root), root
        parent = root
        try:
            for name in names[:-1]:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                if parent != root:
                    os.close(parent)
                parent = fd
            try:
                return os.open(names[-1], _FILE_FLAGS, dir_fd=parent), parent
            except PermissionError:
                # A directory may be searchable but not readable (mode --x): it can
                # still hold an index file, so look at what it is without reading it.
                return self._probe_directory(names[-1], parent), parent
        except BaseException:
            if parent != root:
                os.close(parent)
            raise

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
        if _hidden(real_names):
            raise _Refused(404)  # a symlink to a hidden file
        return real_names


def _replace_fields(
    headers: list[tuple[str, str]], changes: dict[str, str]
) -> list[tuple[str, str]]:
    """``headers`` with the named fields' values replaced; new names are appended."""
    replaced = [(name, changes.pop(name, value)) for name, value in headers]
    replaced.extend(changes.items())
    return replaced
