"""Which representation of a file answers, and its entity-tag (SPEC §10).

Owns the choice among a file's representations — a fresh ``.br``/``.zst``/``.gz``
variant, gzip made on the fly (``compress:``), a ``.gz`` decoded for a client without
gzip, or the file itself — by Accept-Encoding (``forkserver.encoding.negotiation``),
and the ETag of the chosen one (``etag: mtime | content``). Must not open anything
but through the contained walk (``docroot``: a variant that is a symlink out of the
docroot is never found) nor build a response; slow work (compressing, hashing,
decoding) goes through the worker's ``Preparations``, never on the loop's turn for
large inputs.

Outcomes other than a representation are exceptions the site turns into plans:
``NotAcceptable`` (406 with Vary), ``Deferred`` (park the request until a job ends,
then plan it again), ``Unavailable`` (503: the pool is full), ``Broken`` (500, and
the reason goes to the error log).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping

from forkserver.encoding import (
    GZIP,
    IDENTITY,
    Busy,
    CompressSettings,
    Failed,
    Preparations,
    Submit,
    TypeList,
    Waiting,
    coded_tag,
    file_identity,
    select_coding,
)
from forkserver.http.response import Plan
from forkserver.static.conditional import etag
from forkserver.static.docroot import Docroot, NoIndex, Opened, Refused
from forkserver.static.variants import VARIANT_SUFFIXES, DecodedBody, Representation

__all__ = ["EPOCH", "Broken", "Codings", "Deferred", "NotAcceptable", "Outcome", "Unavailable"]

VARY_ENCODING = ("Vary", "Accept-Encoding")
# The stat of a file that does not exist: what its variants are compared with (any
# variant is fresher), and what site.py hands ``select`` for it.
EPOCH = os.stat_result((0,) * os.stat_result.n_fields)


ErrorPlan = Callable[..., Plan]  # StaticSite.error_plan(status, *, head)


class Outcome(Exception):
    """An answer other than a representation; ``answer`` makes its plan."""

    def answer(self, error_plan: ErrorPlan, head: bool) -> Plan:
        raise NotImplementedError


class NotAcceptable(Outcome):
    """No representation is acceptable (RFC 9110 §12.5.3, §15.5.7): 406, with Vary."""

    def answer(self, error_plan: ErrorPlan, head: bool) -> Plan:
        plan = error_plan(406, head=head)
        plan.headers.append(VARY_ENCODING)
        return plan


class Deferred(Outcome):
    """A job the answer needs is running: park on ``waiting``, then plan again."""

    def __init__(self, waiting: Waiting) -> None:
        super().__init__("waiting for a job")
        self.waiting = waiting

    def answer(self, error_plan: ErrorPlan, head: bool) -> Plan:
        return Plan(0, [], waiting=self.waiting)


class Unavailable(Outcome):
    """The pool is full and the answer needs it: 503, try again in a second."""

    def answer(self, error_plan: ErrorPlan, head: bool) -> Plan:
        plan = error_plan(503, head=head)
        plan.headers.append(("Retry-After", "1"))
        return plan


class Broken(Outcome):
    """The file cannot be served as asked: 500, and ``reason`` goes to the error log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def answer(self, error_plan: ErrorPlan, head: bool) -> Plan:
        plan = error_plan(500, head=head)
        plan.log = self.reason
        return plan


class Codings:
    """One site's representations: variants, on-the-fly gzip, decoding, ETags."""

    def __init__(
        self, docroot: Docroot, precompressed: bool, compress: CompressSettings,
        etag_mode: str, submit: Submit | None = None,
    ) -> None:
        self.docroot = docroot
        self.precompressed = precompressed
        self.compress = compress
        self.listed = TypeList(compress.types)
        self.content_tags = etag_mode == "content"
        self.hub = Preparations(submit)

    def attach(self, submit: Submit) -> None:
        """Run slow jobs on the worker's pool from now on (made after fork)."""
        self.hub.attach(submit)

    # -- the file exists ---------------------------------------------------------------
    def select(
        self, fields: Mapping[str, str], opened: Opened, st: os.stat_result,
        media_type: str,
    ) -> Representation:
        """The representation of a file; owns ``opened.fd`` (in the result, or closed).

        ``opened.fd`` -1 means the file itself does not exist: its precompressed
        variants alone may answer (``variant_only``), else Refused(404) stands.
        """
        fd = opened.fd
        if fd < 0:
            return self.variant_only(opened.names, fields)
        try:
            variants: set[str] = set()
            if self.precompressed:
                # The variant index once for all suffixes (all of them indexed): most
                # directories hold no variant at all, and then nothing is probed.
                known = self.docroot.variants.known(opened.names)
                if known is None or known:
                    name = opened.names[-1]
                    for coding, suffix in VARIANT_SUFFIXES.items():
                        variant = name + suffix
                        if (known is None or variant in known) and self.docroot.probe_variant(
                            opened, variant, st
                        ):
                            variants.add(coding)
            fly = (
                self.compress.gzip and GZIP not in variants
                and st.st_size >= self.compress.min_size and self.listed(media_type)
            )
            offer = variants | {GZIP} if fly else variants
            choice = select_coding(fields.get("accept-encoding"), offer)
            if choice is None:
                raise NotAcceptable
            vary = bool(offer)
            if choice in variants:
                opened_variant = self.docroot.open_variant(
                    opened, opened.names[-1] + VARIANT_SUFFIXES[choice], st
                )
                if opened_variant is not None:
                    variant_fd, info = opened_variant
                    try:
                        tag = self.tag(variant_fd, info)
                    except BaseException:
                        os.close(variant_fd)
                        raise
                    return Representation(variant_fd, info, choice, vary, tag, info.st_size)
                choice = IDENTITY  # gone or swapped since the probe: the file itself
            tag = self.tag(fd, st)
            if choice == GZIP:  # on the fly
                made = self._on_the_fly(fd, st, tag)
                if made is not None:
                    return made
            chosen = Representation(fd, st, None, vary, tag, st.st_size)
            fd = -1
            return chosen
        finally:
            if fd >= 0:
                os.close(fd)

    def _on_the_fly(self, fd: int, st: os.stat_result, tag: str) -> Representation | None:
        """gzip of the file from the cache (or made now); None: send it as it is."""
        level = self.compress.level
        body = self.hub.gzip_body(fd, file_identity(st), level)
        if isinstance(body, Waiting):
            raise Deferred(body)
        if not isinstance(body, bytes):
            return None  # too large, the pool is full, or it failed: uncompressed
        return Representation(-1, st, GZIP, True, coded_tag(tag, f"gzip{level}"), len(body),
                              body=body, ranges=False)

    def tag(self, fd: int, st: os.stat_result) -> str:
        """The ETag of the open file ``fd``: from its metadata, or from its bytes."""
        if not self.content_tags:
            return etag(st)
        tag = self.hub.content_tag(fd, file_identity(st))
        if isinstance(tag, str):
            return tag
        if isinstance(tag, Waiting):
            raise Deferred(tag)
        if isinstance(tag, Busy):
            raise Unavailable
        raise Broken(f"cannot be hashed: {tag.reason}")

    # -- only precompressed variants exist ---------------------------------------------
    def variant_only(self, names: list[str], fields: Mapping[str, str]) -> Representation:
        """``X`` is missing: its ``X.br``/``X.zst``/``X.gz`` answer for it, or Refused(404).

        Opened through the contained walk like any file: a variant that is a symlink
        out of the docroot, hidden, or not a regular file is not there.
        """
        if not self.precompressed or not names:
            raise Refused(404)
        try:
            directory = self.docroot.open(names[:-1], directory=False)
        except NoIndex:
            raise Refused(404) from None
        found: dict[str, tuple[int, os.stat_result]] = {}
        try:
            if not stat.S_ISDIR(os.fstat(directory.fd).st_mode):
                raise Refused(404)
            beside = Opened(-1, directory.fd, [*directory.names, names[-1]])
            for coding, suffix in VARIANT_SUFFIXES.items():
                if os.access(names[-1] + suffix, os.F_OK, dir_fd=directory.fd,
                             follow_symlinks=False):
                    opened = self.docroot.open_variant(beside, names[-1] + suffix, EPOCH)
                    if opened is not None:
                        found[coding] = opened
            if not found:
                raise Refused(404)
            choice = select_coding(fields.get("accept-encoding"), found, GZIP in found)
            if choice is None:
                raise NotAcceptable
            if choice != IDENTITY:
                fd, info = found.pop(choice)
                try:
                    tag = self.tag(fd, info)
                except BaseException:
                    os.close(fd)
                    raise
                return Representation(fd, info, choice, True, tag, info.st_size)
            fd, info = found.pop(GZIP)
            return self._decoded(fd, info, names[-1])
        finally:
            for fd, _ in found.values():
                os.close(fd)
            os.close(directory.fd)
            self.docroot.release(directory.parent)

    def _decoded(self, fd: int, st: os.stat_result, name: str) -> Representation:
        """``X.gz`` decoded for a client without gzip; owns ``fd``."""
        try:
            decoded = self.hub.decode(fd, file_identity(st))
            if isinstance(decoded, Waiting):
                raise Deferred(decoded)
            if isinstance(decoded, Busy):
                raise Unavailable
            if isinstance(decoded, Failed):
                raise Broken(f"{name}.gz cannot be read: {decoded.reason}")
            if decoded.problem is not None:
                raise Broken(f"{name}.gz not served decoded: {decoded.problem}")
            tag = coded_tag(self.tag(fd, st), "gunzip")
            if decoded.body is not None:
                return Representation(-1, st, None, True, tag, decoded.size,
                                      body=decoded.body, ranges=False)
            stream = DecodedBody(fd, st.st_size, decoded.size)
            fd = -1
            return Representation(-1, st, None, True, tag, decoded.size, stream=stream,
                                  ranges=False)
        finally:
            if fd >= 0:
                os.close(fd)


