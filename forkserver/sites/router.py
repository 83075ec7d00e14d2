"""From a request to a plan across sites and rules: the order of SPEC §7 and §8 in one place.

Owns the steps a request takes before and around the static site: pick the site
(421 when none answers), the rules' ``allow`` (403) → ``auth`` (401, or a bcrypt
check to run off the loop) → ``redirect`` → the file → ``fallback``, and the rules'
headers on whatever answers. Must not touch sockets or threads: a check that needs
bcrypt comes back as an ``AuthCheck`` and the worker runs it (``forkserver.offload``)
and calls ``AuthCheck.finish`` on its loop. Files are opened only through each
site's ``StaticSite`` (its contained walk), so nothing here can leave a docroot.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace

from forkserver.errors import HttpError
from forkserver.http import Request
from forkserver.http.response import Plan, keeps_alive
from forkserver.sites.auth import GRANTED, Pending, Verifier
from forkserver.sites.hosts import SiteTable
from forkserver.sites.rules import NOTHING, Decision, Rules
from forkserver.static import StaticSite
from forkserver.static.docroot import Refused
from forkserver.static.paths import resolve_path

__all__ = ["AuthCheck", "Router", "Site"]

MISDIRECTED = 421  # RFC 9110 §15.5.20: no site here answers for that host
UNAUTHORIZED = 401
FORBIDDEN = 403
_FALLBACK_METHODS = frozenset({"GET", "HEAD"})
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class Site:
    """One site of the generation: its name for the logs, its files, its rules."""

    name: str  # the first of its names ("" for the one site of a config without sites:)
    static: StaticSite
    rules: Rules | None  # None: no rules, nothing to decide per path


class AuthCheck:
    """A request waiting for a bcrypt check: run ``work`` off the loop, then ``finish``."""

    __slots__ = ("_resume", "key", "site", "work")

    def __init__(self, site: Site, pending: Pending, resume: Callable[[bool], Plan]) -> None:
        self.site = site
        self.key = pending.key
        self.work = pending.work
        self._resume = resume

    def finish(self, granted: bool) -> Plan:
        """The plan once the check says ``granted`` (on the loop's thread)."""
        return self._resume(granted)


class Router:
    """Chooses the site and applies its rules; one per worker, built once per generation."""

    __slots__ = ("_first", "_sites", "verifier")

    def __init__(self, sites: SiteTable[Site] | None, first: Site) -> None:
        """``sites`` None: ``first`` is the one site (a config without ``sites:``).
        Otherwise ``first`` is the first site listed, whose pages answer 421."""
        self._sites = sites
        self._first = first
        self.verifier = Verifier()

    def site(self, request: Request) -> Site | None:
        """The site for ``request``'s host (RFC 9112 §3.2.2), or None for 421."""
        if self._sites is None:
            return self._first
        return self._sites.lookup(request.host)

    def misdirected(self, request: Request) -> Plan:
        """421 for a host no site answers (RFC 9110 §15.5.20)."""
        head = request.method == "HEAD"
        return _settle(request, self._first.static.error_plan(MISDIRECTED, head=head))

    def plan(self, request: Request, client: str, site: Site) -> Plan | AuthCheck:
        """The answer of ``site`` to ``request`` from ``client``, rules applied."""
        rules = site.rules
        if rules is None:
            return site.static.plan(request)
        decision = rules.decide(request.path, request.query, client)
        if decision is NOTHING:
            return site.static.plan(request)
        return self._apply(request, site, decision, checked=False)

    # -- the order of SPEC §8 ------------------------------------------------------------
    def _apply(
        self, request: Request, site: Site, decision: Decision, checked: bool
    ) -> Plan | AuthCheck:
        static = site.static
        head = request.method == "HEAD"
        if decision.refused:
            return _with(request, static.error_plan(FORBIDDEN, head=head), decision.headers)
        guard = decision.guard
        if guard is not None and not checked:
            verdict = self.verifier.verdict(guard, request.headers.get("authorization"))
            if isinstance(verdict, Pending):
                def resume(granted: bool) -> Plan:
                    self.verifier.record(verdict.key, granted)
                    if not granted:
                        return self._unauthorized(request, site, decision)
                    answer = self._apply(request, site, decision, checked=True)
                    assert isinstance(answer, Plan)
                    return answer
                return AuthCheck(site, verdict, resume)
            if verdict is not GRANTED:
                return self._unauthorized(request, site, decision)
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

    def _unauthorized(self, request: Request, site: Site, decision: Decision) -> Plan:
        assert decision.guard is not None
        plan = site.static.error_plan(UNAUTHORIZED, head=request.method == "HEAD")
        plan.headers.append(("WWW-Authenticate", decision.guard.challenge))
        return _with(request, plan, decision.headers)


def _with(request: Request, plan: Plan, headers: tuple[tuple[str, str], ...]) -> Plan:
    if headers:
        plan.headers.extend(headers)
        plan.encoded = b""  # the cached encoding no longer says everything
    return _settle(request, plan)


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
