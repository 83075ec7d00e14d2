"""The worker's side of sites and rules: one StaticSite per site, one Router.

Owns building the generation's sites (one ``StaticSite`` each, with its own open-file
cache, from the top-level Config with the site's overrides), the per-request entry
``plan(request, client)``, the sweep of every site's cache, and naming the site of a
logged request for the JSON access log. A bcrypt check goes to the worker's
``Offload`` and comes back as ``Plan.waiting``, which worker/parking.py parks and
resumes like any job off the loop. Must not parse HTTP, send bytes or decide what a
rule means (forkserver/sites/).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from forkserver.config import Config
from forkserver.http import Request
from forkserver.http.response import Plan
from forkserver.logformats import LoggedRequest
from forkserver.sites.hosts import SiteTable
from forkserver.sites.router import Router, Site, Submit
from forkserver.sites.rules import Rules
from forkserver.static import StaticSite

__all__ = ["SiteRouting", "needs_routing"]


def needs_routing(config: Config) -> bool:
    """Whether this configuration has sites or rules (else the worker keeps site.plan)."""
    return bool(config.sites or config.rules)


class SiteRouting:
    """Answers requests across the configured sites; built once per worker."""

    def __init__(self, config: Config, first: StaticSite, submit: Submit) -> None:
        sites = config.sites
        shares_top = bool(sites) and not sites[0].overrides
        main = Site(sites[0].names[0] if shares_top else "", first,
                    Rules(config.rules) if config.rules else None)
        self.statics = [first]
        table: SiteTable[Site] | None = None
        if sites:
            entries: list[tuple[tuple[str, ...], Site]] = []
            default: Site | None = None
            for index, setting in enumerate(sites):
                if index == 0 and shares_top:
                    site = main  # the top level itself: share its open-file cache
                else:
                    fields: dict[str, object] = dict(setting.overrides)
                    own = replace(config, **fields)  # type: ignore[arg-type]
                    static = StaticSite(own)
                    self.statics.append(static)
                    site = Site(setting.names[0], static, Rules(own.rules) if own.rules else None)
                entries.append((setting.names, site))
                if setting.default:
                    default = site
            table = SiteTable(entries, default)
        self.router = Router(table, main, submit)
        self.named = table is not None  # the JSON log names sites only when there are some
        # The answer to a request from a client: site, rules, file (or ``waiting``); the
        # router's own method, so a request pays no call in between.
        self.plan: Callable[[Request, str], Plan] = self.router.answer

    def drop_expired(self, now: float) -> None:
        """Every other site's open-file cache drops what is past its second (the sweep)."""
        for static in self.statics[1:]:
            static.drop_expired(now)

    def forget(self, path: str) -> None:
        """Every site's open-file cache drops ``path``: a file changed mid-send, and
        the path may be cached by any site that serves the same docroot."""
        for static in self.statics:
            static.forget(path)

    def site_name(self, request: LoggedRequest | str) -> str | None:
        """The site that answered a logged request (None: 421, or a request that did not
        parse); looked up again when the log is written, so the hot path stores nothing."""
        if not isinstance(request, Request):
            return None
        site = self.router.site(request)
        return None if site is None else site.name
