"""The settings of sites and rules: frozen values the configuration builds.

Owns only the shapes (SPEC §7, §8); checking YAML values into them is
``forkserver.sites.checks``, compiling them for requests is ``rules``/``hosts``.
Must not read files or know about workers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AuthSetting", "RuleSetting"]


@dataclass(frozen=True, slots=True)
class AuthSetting:
    """``auth: {realm: Staff, htpasswd: conf/staff.htpasswd}``; the path made absolute."""

    realm: str
    htpasswd: str


@dataclass(frozen=True, slots=True)
class RuleSetting:
    """One entry of ``rules:``, in the order written."""

    match: str  # a glob in the cache_control syntax
    redirect: str | None = None  # a template (forkserver.sites.redirects)
    status: int = 301  # of the redirect
    fallback: str | None = None  # a URL path in the docroot, percent-encoded
    allow: tuple[str, ...] | None = None  # networks, as ipaddress writes them
    auth: AuthSetting | None = None
    headers: tuple[tuple[str, str], ...] = ()
    line: int = 0  # where the rule starts in its file, for messages at load
