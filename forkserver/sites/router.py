"""From a request to a plan across sites and rules: the order of SPEC §7 and §8 in one place.

Owns the steps a request takes before and around the static site: pick the site
(421 when none answers), the rules' ``allow`` (403) → ``auth`` (401, or a bcrypt
check to run off the loop) → ``redirect`` → the file → ``fallback``, and the rules'
headers on whatever answers. Must not touch sockets or threads: a check that needs
bcrypt is handed to the ``submit`` the worker gives (``forkserver.offload``) and the
plan says ``waiting`` (the worker parks the connection, worker/parking.py, and plans
the request again when the check is done: then the answer is remembered). Files are
opened only through each site's ``StaticSite`` (its contained walk), so nothing here
can leave a docroot.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from forkserver.errors import HttpError
from forkserver.http import Request
from forkserver.http.response import Plan, encode_fields, keeps_alive
from forkserver.sites.auth import GRANTED, Pending, Verifier
from forkserver.sites.hosts import SiteTable
from forkserver.sites.rules import NOTHING, Decision, Rules
from forkserver.static import StaticSite
from forkserver.static.docroot import Refused
from forkserver.static.paths import resolve_path

__all__ = ["Router", "Site", "Submit"]

MISDIRECTED = 421  # RFC 9110 §15.5.20: no site here answers for that host
UNAUTHORIZED = 401
FORBIDDEN = 403
OVERLOADED = 503  # the pool's queue is full: say so at once rather than queue more
_FALLBACK_METHODS = frozenset({"GET", "HEAD"})
MEMORY_HOSTS = 256  # Host values remembered with their site
MEMORY_HOST_CHARS = 270  # a DNS name (253) or an IPv6 literal, plus ":port"
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class Site:
    """One site of the generation: its name for the logs, its files, its rules."""

    name: str  # the first of its names ("" for the one site of a config without sites:)
    static: StaticSite
    rules: Rules | None  # None: no rules, nothing to decide per path


class Outcome(Protocol):
    """What the pool hands back (``forkserver.offload.Finished``)."""

    @property
    def value(self) -> object: ...
    @property
    def error(self) -> Exception | None: ...


# ``Offload.submit``: run work off the loop, call back on it; None when the queue is full.
Submit = Callable[[Callable[[], bool], Callable[[Any], None]], object | None]


class _Check:
    """One bcrypt check in flight; requests with the same credentials wait on it.

    ``park(resume)`` is ``Plan.waiting``'s interface (http/response.py): the worker
    parks the connection and calls ``resume()`` on its loop when the check is done,
    then plans the request again, which finds the answer remembered.
    """

    __slots__ = ("_resumes",)

    def __init__(self) -> None:
        self._resumes: list[list[Callable[[], None] | None]] = []

    def park(self, resume: Callable[[], None]) -> _Parked:
        entry: list[Callable[[], None] | None] = [resume]
        self._resumes.append(entry)
        return _Parked(entry)

    def release(self) -> None:
        entries, self._resumes = self._resumes, []
        for entry in entries:
            resume = entry[0]
            if resume is not None:
                entry[0] = None
                resume()


class _Parked:
    __slots__ = ("_entry",)

    def __init__(self, entry: list[Callable[[], None] | None]) -> None:
        self._entry = entry

    def cancel(self) -> None:
        self._entry[0] = None


class Router:
    """Chooses the site and applies its rules; one per worker, built once per generation.

    ``submit`` runs a bcrypt check off the loop (the worker's ``Offload.submit``); the
    request's plan then says ``waiting`` and the worker plans it again when the check
    is done. Without ``submit`` (tests) the check runs inline.
    """

    __slots__ = ("_checks", "_first", "_hosts", "_sites", "submit", "verifier")

    def __init__(
        self, sites: SiteTable[Site] | None, first: Site, submit: Submit | None = None
    ) -> None:
        """``sites`` None: ``first`` is the one site (a config without ``sites:``).
        Otherwise ``first`` is the first site listed, whose pages answer 421."""
        self._sites = sites
        self._first = first
        self.submit = submit
        self.verifier = Verifier()
        self._checks: dict[bytes, _Check] = {}  # credentials' key → the check in flight
        self._hosts: dict[str, Site | None] = {}  # Host value as sent → its site

    def site(self, request: Request) -> Site | None:
        """The site for ``request``'s host (RFC 9112 §3.2.2), or None for 421."""
        sites = self._sites
        if sites is None:
            return self._first
        host = request.host
        known = self._hosts
        if host in known:  # a worker sees the same few Host values again and again
            return known[host]
        site = sites.lookup(host)
        if len(host) <= MEMORY_HOST_CHARS:
            if len(known) >= MEMORY_HOSTS:
                known.clear()  # a client cycling through names costs lookups, not memory
            known[host] = site
        return site

    def plan(self, request: Request, client: str) -> tuple[Site | None, Plan]:
        """(the site, its answer) for ``request`` from ``client``; None: 421."""
        site = self.site(request)
        if site is None:
            head = request.method == "HEAD"
            return None, _settle(request, self._first.static.error_plan(MISDIRECTED, head=head))
        return site, self._answer(request, site, client)

    def answer(self, request: Request, client: str) -> Plan:
        """``plan``'s answer alone: the worker's per-request entry (no tuple to build)."""
        site = self._first if self._sites is None else self.site(request)
        if site is None:
            head = request.method == "HEAD"
            return _settle(request, self._first.static.error_plan(MISDIRECTED, head=head))
        return self._answer(request, site, client)

    def _answer(self, request: Request, site: Site, client: str) -> Plan:
        rules = site.rules
        if rules is None:
            return site.static.plan(request)
        decision = rules.decide(request.path, request.query, client)
        if decision is NOTHING:
            return site.static.plan(request)
        if not decision.direct:
            return self._apply(request, site, decision)
        # The short way of a cache hit under header or auth rules: one verdict from
        # memory, the file, and the rules' fields encoded once per path's decision.
        guard = decision.guard
        if guard is not None:
            verdict = self.verifier.verdict(guard, request.headers.get("authorization"))
            if verdict is not GRANTED:
                return self._apply(request, site, decision, verdict)
        plan = site.static.plan(request)  # settled: our fields change no keep-alive
        headers = decision.headers
        if headers:
            plan.headers.extend(headers)
            if plan.encoded:  # a cache hit's field lines: add ours, encoded once
                plan.encoded += decision.encoded
        return plan

    # -- the order of SPEC §8 ------------------------------------------------------------
    def _apply(self, request: Request, site: Site, decision: Decision,
               verdict: bool | Pending | None = None) -> Plan:
        """The whole order; ``verdict``: the guard's, when the caller already asked."""
        static = site.static
        head = request.method == "HEAD"
        if decision.refused:
            return _with(request, static.error_plan(FORBIDDEN, head=head), decision.headers)
        guard = decision.guard
        if guard is not None:
            if verdict is None:
                verdict = self.verifier.verdict(guard, request.headers.get("authorization"))
            if isinstance(verdict, Pending):
                if self.submit is None:  # no pool: check inline (unit tests)
                    self.verifier.record(verdict.key, verdict.work())
                    return self._apply(request, site, decision)
                return self._wait(request, site, verdict)
            if verdict is not GRANTED:
                plan = static.error_plan(UNAUTHORIZED, head=head)
                plan.headers.append(("WWW-Authenticate", guard.challenge))
                return _with(request, plan, decision.headers)
        if decision.redirect is not None:
            status, location = decision.redirect
            plan = static.error_plan(status, head=head)
            plan.headers.append(("Location", location))
            return _with(request, plan, decision.headers)
        plan = static.plan(request)
        fallback = decision.fallback
        if (fallback is not None and plan.status == 404 and request.method in _FALLBACK_METHODS
                and _absent(static, request.path)):
            plan = static.plan(replace(request, target=fallback, path=fallback, query=""))
        return _with(request, plan, decision.headers)

    def _wait(self, request: Request, site: Site, pending: Pending) -> Plan:
        """A plan that waits for the check (one per credentials at a time), or 503."""
        check = self._checks.get(pending.key)
        if check is None:
            check = _Check()
            key = pending.key

            def done(outcome: Outcome) -> None:
                # bcrypt raises nothing for a hash that loaded; an error counts as "no".
                self.verifier.record(key, outcome.error is None and outcome.value is True)
                del self._checks[key]
                check.release()

            if self.submit is None or self.submit(pending.work, done) is None:
                plan = site.static.error_plan(OVERLOADED, head=request.method == "HEAD")
                plan.headers.append(("Retry-After", "1"))
                return _settle(request, plan)
            self._checks[key] = check
        return Plan(0, [], waiting=check)


def _with(request: Request, plan: Plan, headers: tuple[tuple[str, str], ...]) -> Plan:
    if headers:
        plan.headers.extend(headers)
        if plan.encoded:  # a cache hit's field lines, encoded once: add ours to them
            encoded = _ENCODED.get(headers)
            if encoded is None:
                encoded = _ENCODED[headers] = encode_fields(list(headers))
            plan.encoded += encoded
    return _settle(request, plan)


# The rules' header sets, encoded once each (a few per configuration; keyed by the
# Decision's tuple, which the rules keep for as long as they live).
_ENCODED: dict[tuple[tuple[str, str], ...], bytes] = {}


def _settle(request: Request, plan: Plan) -> Plan:
    """THE keep-alive rule, as the static site applies it to its own plans."""
    if not keeps_alive(request, plan):
        plan.close = True
    return plan


def _absent(static: StaticSite, path: str) -> bool:
    """Whether ``path`` names nothing at all in the docroot: only then may it fall back.

    Never for a path the static site refuses outright (400: bad encoding or a climb;
    a hidden name), and never for one that exists in any form (a FIFO, a symlink that
    leads out, a file it may not read): those keep their own answer, so a fallback
    neither hides a refusal nor tells which hidden files exist. The walk is contained
    like the static site's (``openat`` from the docroot, never following a symlink; a
    symlinked directory on the way counts as "exists"), and linear in the segments.
    """
    try:
        resolved = resolve_path(path)
    except HttpError:
        return False
    try:
        opened = static.docroot.open([], directory=False)
    except Refused:
        return False
    static.docroot.release(opened.parent)
    current = opened.fd
    try:
        for name in resolved.segments:
            try:
                info = os.lstat(name, dir_fd=current)
            except OSError as exc:
                return exc.errno == errno.ENOENT
            if not stat.S_ISDIR(info.st_mode):
                return False  # a file (or a symlink, FIFO…) where the path goes on or ends
            try:
                inner = os.open(name, _DIR_FLAGS, dir_fd=current)
            except OSError:
                return False
            os.close(current)
            current = inner
        return False  # the whole path exists (a directory)
    finally:
        os.close(current)
