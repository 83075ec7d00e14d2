"""Which site a request is for: the normalized host name and the table of names.

Owns the normalization of the name that picks a site (RFC 9112 §3.2.2: the host of
an absolute-form target, else the Host field; the worker hands over
``Request.host``, which the parser already chose and validated) and the lookup
from that name to a site: an exact name, then the longest ``*.`` suffix, then the
default. The TLS layer uses the same table for the SNI name. Pure: no sockets, no
files, and nothing here knows what a site holds.

Both steps are linear in the name and cost the same for one site or a hundred: the
lookup is a dict probe for the exact name and one dict probe per label for the
wildcards, walking the labels right to left (never a scan of the sites).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "MAX_NAME_LENGTH",
    "Claim",
    "SiteTable",
    "ipv6_name",
    "site_name",
]

S = TypeVar("S")

# A DNS name has at most 253 characters (RFC 1035 §2.3.4, without the final dot); an
# IPv6 literal with brackets at most 47. Anything longer names no site.
MAX_NAME_LENGTH = 253
WILDCARD_PREFIX = "*."  # as config/sites.py writes a wildcard name


def site_name(host: str) -> str | None:
    """The name that picks a site for a ``Host`` value (or SNI name), or None.

    ``host`` is ``uri-host [":" port]``: the port is removed, the name lower-cased
    (host names are case-insensitive, RFC 3986 §3.2.2) and one trailing dot removed
    (``example.org.`` is the same name). An IPv6 literal keeps its brackets and is
    written in its compressed form (``[0:0::1]`` → ``[::1]``), so any spelling of one
    address finds the same site. "" (HTTP/1.0 without Host) stays "": only a default
    site answers it. None for a value that cannot name a site at all (a malformed
    literal, an overlong name, a non-numeric port); the caller treats it as unclaimed.
    """
    if not host:
        return ""
    if len(host) > MAX_NAME_LENGTH + 7:  # ":65535" and a final dot fit in 7 more
        return None
    if host[0] == "[":
        end = host.find("]")
        if end < 0 or not _port_ok(host, end + 1):
            return None
        return ipv6_name(host[1:end])
    name, colon, port = host.rpartition(":")
    if colon:
        if port and not (port.isascii() and port.isdigit()):  # "host:" is allowed
            return None
    else:
        name = host
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if len(name) > MAX_NAME_LENGTH:
        return None
    return name


def _port_ok(host: str, start: int) -> bool:
    """After an IPv6 literal: nothing, or ":" and digits (possibly none)."""
    if start == len(host):
        return True
    port = host[start + 1 :]
    return host[start] == ":" and (not port or (port.isascii() and port.isdigit()))


def ipv6_name(inside: str) -> str | None:
    """The compressed form of an IPv6 literal's inside, with brackets; None if invalid."""
    try:
        return f"[{ipaddress.IPv6Address(inside).compressed}]"
    except ValueError:
        # IPvFuture ("v1.x") has no canonical form: case-folded, as sent.
        return f"[{inside.lower()}]" if inside[:1] in ("v", "V") else None


@dataclass(frozen=True, slots=True)
class Claim(Generic[S]):
    """A lookup's answer: the site, and whether a name claimed it (not the default)."""

    site: S
    claimed: bool


class _Suffix(Generic[S]):
    """One label of the wildcard trie: the site ``*.<labels so far>`` names, if any."""

    __slots__ = ("children", "site")

    def __init__(self) -> None:
        self.children: dict[str, _Suffix[S]] = {}
        self.site: S | None = None


class SiteTable(Generic[S]):
    """Names → sites. Built once per generation; ``find`` costs dict probes only.

    ``entries`` pairs each site with its names as ``config.sites.config_name`` returns
    them. A name
    claimed twice raises ValueError (the configuration reports it with its line before
    a table is ever built).
    """

    __slots__ = ("_default", "_exact", "_wildcards")

    def __init__(
        self, entries: Iterable[tuple[Sequence[str], S]], default: S | None = None
    ) -> None:
        self._exact: dict[str, S] = {}
        self._wildcards: _Suffix[S] = _Suffix()
        self._default = default
        for names, site in entries:
            for name in names:
                self._add(name, site)

    def _add(self, name: str, site: S) -> None:
        if name.startswith(WILDCARD_PREFIX):
            node = self._wildcards
            for label in reversed(name[len(WILDCARD_PREFIX) :].split(".")):
                node = node.children.setdefault(label, _Suffix())
            if node.site is not None:
                raise ValueError(f"{name} is claimed twice")
            node.site = site
            return
        if name in self._exact:
            raise ValueError(f"{name} is claimed twice")
        self._exact[name] = site

    @property
    def default(self) -> S | None:
        return self._default

    def claimant(self, name: str) -> S | None:
        """The site a normalized name claims (exact, else longest ``*.``), or None.

        The default site is not consulted: for SNI, "no site claims this name" and
        "the default site claims it" lead to different certificates and checks.
        """
        site = self._exact.get(name)
        if site is not None:
            return site
        if not self._wildcards.children or name.startswith("["):
            return None
        labels = name.split(".")
        node = self._wildcards
        best: S | None = None
        # Right to left: "a.b.example.net" probes "net", "example", "b". A wildcard on
        # a suffix counts only with at least one label left of it, so "*.example.net"
        # is not "example.net" itself. The deepest hit is the longest suffix.
        for index in range(len(labels) - 1, 0, -1):
            child = node.children.get(labels[index])
            if child is None:
                break
            node = child
            if node.site is not None:
                best = node.site
        return best

    def find(self, host: str) -> Claim[S] | None:
        """The site for a ``Host`` value (see ``site_name``), or None: answer 421."""
        name = site_name(host)
        site = None if name is None else self.claimant(name)
        if site is not None:
            return Claim(site, True)
        if self._default is not None:
            return Claim(self._default, False)
        return None

    def lookup(self, host: str) -> S | None:
        """The site for a ``Host`` value or SNI name: claimed, else the default, else None."""
        found = self.find(host)
        return None if found is None else found.site
