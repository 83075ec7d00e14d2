"""Static files: request → response plan, in one order of decisions.

Owns the order in which a request is decided (method, path, file, variant,
preconditions, range), index files, directory listings and redirects. May stat, open
and list files (through ``docroot``); must not send anything, touch sockets or
signals, know about workers, or read the clock (the worker's clock is given at
construction). Its pieces: ``paths`` (URL path decoding), ``docroot`` (the contained
walk), ``filecache`` (the open-file cache), ``pages`` (error pages), ``partial``
(206 plans); the rules it applies live in small pure modules: ``conditional`` (RFC
9110 §13), ``ranges`` (§14), ``negotiate`` (§12), ``mime``, ``caching``,
``autoindex``.

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
* The path is decoded by ``resolve_path`` (``paths.py``): 400 for a bad escape, bad
  UTF-8, NUL or a climb above the docroot; 404 for a hidden (dot) segment.
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
* Representations (``.br``/``.zst``/``.gz`` variants, gzip on the fly, a ``.gz``
  without its file, 406) and ETags (``etag``): ``coding.py``. Several ranges of a
  variant get the whole variant (200): a multipart body's Content-Encoding would
  describe the multipart document, not the parts.
* ``Last-Modified`` is never later than now (RFC 9110 §8.8.2.1): a file with an mtime
  in the future is dated now.
* Error pages, configured or built in: ``pages.py``.

Cost: a miss pays for one ``openat2``, one ``fstat``, a variant-index lookup and a
few dict lookups; the conditional and range machinery runs only when the request
carries those fields. A hit (``filecache``) pays none of it.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Mapping

from forkserver.config import Config
from forkserver.encoding.negotiation import refuses_identity
from forkserver.errors import HttpError
from forkserver.http.negotiate import prefers_json
from forkserver.http.request import Request
from forkserver.http.response import (
    NOSNIFF,
    FileBody,
    Plan,
    SharedDescriptor,
    encode_fields,
    file_version,
    keeps_alive,
)
from forkserver.static.autoindex import render_html, render_json
from forkserver.static.caching import CacheRules
from forkserver.static.coding import EPOCH, Codings, Outcome
from forkserver.static.conditional import (
    HttpDates,
    Verdict,
    evaluate_preconditions,
    if_range_holds,
)
from forkserver.static.docroot import Docroot, NoIndex, Opened, Refused
from forkserver.static.filecache import (
    CACHE_FILE_BYTES,
    CACHE_INLINE_BYTES,
    CACHE_RECHECK_SECONDS,
    CachedFile,
    FileCache,
)
from forkserver.static.freshness import identity, still_current
from forkserver.static.mime import CONTENT_TYPES, ContentTypes
from forkserver.static.pages import HTML_TYPE, ErrorPages, server_header
from forkserver.static.partial import partial_plan
from forkserver.static.paths import ResolvedPath, redirect_location, resolve_path
from forkserver.static.ranges import parse_range

__all__ = ["KNOWN_METHODS", "StaticSite"]

# Methods this server knows but never serves (RFC 9110 §9, plus PATCH from RFC 5789):
# 405 with Allow. Every other token is one we do not recognise: 501 (RFC 9110 §15.6.2).
KNOWN_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "OPTIONS"})
INDEX_FILE = "index.html"
JSON_TYPE = CONTENT_TYPES["json"]
ACCEPT_RANGES = ("Accept-Ranges", "bytes")
NO_RANGES = ("Accept-Ranges", "none")  # RFC 9110 §14.3: bodies made per file version
VARY_ENCODING = ("Vary", "Accept-Encoding")
VARY_ACCEPT = ("Vary", "Accept")
# Request fields that make a GET conditional (RFC 9110 §13.1).
_CONDITIONAL_FIELDS = frozenset(
    {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since"}
)


class StaticSite:
    """One docroot as configured; built once per worker and reused for every request.

    ``wall_clock`` (seconds since the epoch: Last-Modified is never later than now)
    and ``monotonic`` (the open-file cache's expiry) are the worker's clocks; tests
    give their own, so nothing waits for real time to pass.
    """

    def __init__(
        self, config: Config, *, wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.docroot = Docroot(config.docroot, monotonic=monotonic)
        self.root = self.docroot.root
        self.server = server_header(config)
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._types = ContentTypes(config.mime_types)
        self._cache_control = CacheRules(config.cache_control)
        self._extra = list(config.headers)
        self._precompressed = config.precompressed
        self._autoindex = config.autoindex
        self._http_date = HttpDates()  # Last-Modified strings
        self.files = FileCache()
        self._cache = self.files.entries  # the hot path's one dict lookup
        self.pages = ErrorPages(config, self.docroot, self._types)
        self.codings = Codings(self.docroot, config.precompressed, config.compress, config.etag)

    def close(self) -> None:
        """Release every descriptor (tests; a worker keeps them until it exits)."""
        self.files.clear()
        self.docroot.close()

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
            except Refused as refused:
                result = self.error_plan(refused.status, head=head)
            except Outcome as outcome:  # 406, 503, 500 logged, or a job to wait for
                result = outcome.answer(self.error_plan, head)
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
        """The page for ``status`` (``pages.py``); with ``head`` no body."""
        return self.pages.plan(status, head)

    def drop_expired(self, now: float) -> None:
        """Drop open-file cache entries past their second (monotonic ``now``)."""
        self.files.drop_expired(now)

    def forget(self, path: str) -> None:
        """Drop the open-file cache's entry for ``path`` (the worker saw it change)."""
        self.files.forget(path)

    # -- GET and HEAD: path → file → representation → preconditions → range ----------
    def _plan_get(self, request: Request, head: bool) -> Plan:
        entry = self._cache.get(request.path)
        if entry is not None:
            cached = self._cached_plan(request, head, entry)
            if cached is not None:
                return cached
        resolved = resolve_path(request.path)
        names = list(resolved.segments)
        if resolved.directory:
            names.append(INDEX_FILE)
        try:
            opened = self.docroot.open(names, resolved.directory)
        except NoIndex:
            return self._no_index(request, resolved, head)
        except Refused as refused:  # X.gz (.br, .zst) without X answers for X (SPEC §10)
            if refused.status != 404 or resolved.directory or not self._precompressed:
                raise
            return self._plan_file(request, head, names, Opened(-1, -1, names), EPOCH)
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
                raise Refused(404)  # FIFO, socket, device: never served
            fd = -1  # _plan_file owns it from here
            return self._plan_file(request, head, names, opened, st)
        finally:
            self.docroot.release(opened.parent)
            if fd >= 0:
                os.close(fd)

    def _plan_file(
        self, request: Request, head: bool, names: list[str], opened: Opened,
        st: os.stat_result,
    ) -> Plan:
        """The response for a regular file; owns ``opened.fd`` (sends or closes it)."""
        fields = request.headers
        media_type = self._types(names[-1])
        chosen = self.codings.select(fields, opened, st, media_type)  # owns opened.fd
        fd, st = chosen.fd, chosen.st
        try:
            now = self._wall_clock()
            mtime = st.st_mtime
            # Never later than the response's Date (RFC 9110 §8.8.2.1).
            last_modified = int(mtime) if mtime < now else int(now)
            tag = chosen.tag
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

            size = chosen.length
            headers = [("Content-Type", media_type), ("Content-Length", str(size))]
            headers.extend(validators)
            headers.append(ACCEPT_RANGES if chosen.ranges else NO_RANGES)
            if chosen.encoding is not None:
                headers.append(("Content-Encoding", chosen.encoding))
            headers.append(NOSNIFF)
            headers.extend(self._extra)

            range_field = fields.get("range")
            if range_field is not None and not head and size and chosen.ranges:
                # §13.2.2 step 5 and §13.1.5: If-Range decides whether Range applies.
                if_range = fields.get("if-range")
                if if_range is None or if_range_holds(
                    if_range, tag, last_modified, mtime, now
                ):
                    parts = parse_range(range_field, size)
                    if parts is not None and (len(parts) < 2 or chosen.encoding is None):
                        if not parts:  # none satisfiable (RFC 9110 §14.2, §15.5.17)
                            plan = self._failed(416, False, chosen.has_variants)
                            plan.headers.append(("Content-Range", f"bytes */{size}"))
                            return plan
                        owned, fd = fd, -1  # partial_plan owns it, even if it raises
                        return partial_plan(
                            parts, headers, owned, size, media_type, file_version(st)
                        )
            if fd < 0:  # made per file version: in memory, or decoded while sent
                memory, rest = chosen.content(head)
                return Plan(200, headers, memory, rest=rest)
            if head or not size:
                return Plan(200, headers)
            version = file_version(st)
            if (
                size <= CACHE_FILE_BYTES
                and not chosen.has_variants
                and last_modified == int(mtime)
                and self.files.admits(request.path)
            ):
                entry = CachedFile(
                    list(headers), encode_fields(headers), list(validators), tag,
                    last_modified, b"", None, version,
                    self._monotonic() + CACHE_RECHECK_SECONDS, names, identity(st),
                )
                kept = self.files.keep(request.path, entry, fd, size)
                if kept is not None:  # the cache (or this response) owns fd now
                    fd = -1  # the entry's field lines serve this response too
                    if isinstance(kept, bytes):
                        return Plan(200, headers, body=kept, encoded=entry.encoded)
                    return Plan(200, headers, file=kept, encoded=entry.encoded)
            if size <= CACHE_INLINE_BYTES:  # not kept: still head and body in one send
                content = os.pread(fd, size, 0)
                if len(content) == size:
                    return Plan(200, headers, content)
            body = FileBody(SharedDescriptor(fd), 0, size, version)
            fd = -1  # the body holds it now
            return Plan(200, headers, file=body)
        finally:
            if fd >= 0:
                os.close(fd)

    def _cached_plan(self, request: Request, head: bool, entry: CachedFile) -> Plan | None:
        """The answer from the cache (``entry`` is request.path's), or None to take the
        full path."""
        if entry is not self.files.last:  # asked for again in a row: nothing to reorder
            self.files.use(request.path, entry)
        fields = request.headers
        if "range" in fields or refuses_identity(fields.get("accept-encoding")):
            return None  # ranges, and the 406 of identity;q=0, take the full path
        now = self._monotonic()
        if now >= entry.expires:
            if not still_current(self.docroot, entry, self._precompressed):
                self.files.forget(request.path)
                return None
            entry.expires = now + CACHE_RECHECK_SECONDS
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
        lent = self.files.lend(entry, descriptor)
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

    def _failed(self, status: int, head: bool, has_variants: bool) -> Plan:
        """412 or 416 for a file: its page, plus Vary when the answer depended on it."""
        plan = self.error_plan(status, head=head)
        if has_variants:
            plan.headers.append(VARY_ENCODING)
        return plan

    # -- directories ----------------------------------------------------------------
    def _no_index(self, request: Request, resolved: ResolvedPath, head: bool) -> Plan:
        """A directory with no index: a listing with ``autoindex``, else 403."""
        if not self._autoindex:
            raise Refused(403)
        names = list(resolved.segments)
        url_path = "/" + "".join(name + "/" for name in names)
        listing = self.docroot.listing(names, url_path)
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

    def _redirect(self, request: Request, resolved: ResolvedPath, head: bool) -> Plan:
        """301 to the directory with a slash (relative Location, RFC 9110 §10.2.2)."""
        plan = self.error_plan(301, head=head)
        plan.headers.append(
            ("Location", redirect_location(request.path, request.query, resolved))
        )
        return plan
