"""Rules per path (SPEC §8), compiled once per generation, decided per request.

Owns the evaluation order: of ``allow``, ``auth``, ``redirect`` and ``fallback`` the
first matching rule that sets each applies; every matching rule's ``headers`` are
added; the checks run ``allow`` → ``auth`` → ``redirect`` → the file → ``fallback``
(the worker and the static site do the last two steps with what ``decide``
returns). Pure: (path, query, client address) in, a ``Decision`` out; no files,
sockets or clocks. Must not check passwords (``auth``) or serve files (``static``).

Globs are the ``cache_control`` ones, matched by the same linear matcher
(``forkserver.static.caching``): one matcher per kind answers "the first rule that sets
it", and each rule with headers has its own. What a path matched is remembered
(bounded, cleared when full, like the parser's memory of heads), so a site's hot
paths cost one dict lookup however many rules there are: for a path whose decision
depends on neither the client nor the query (no ``allow``, no ``redirect``) the memory
holds the ``Decision`` itself, its headers already encoded for a cached response.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from forkserver.config.model import RuleSetting
from forkserver.config.redirects import Template, compile_template, rest_offset
from forkserver.http.response import encode_fields
from forkserver.sites.auth import Guard
from forkserver.static.caching import CacheRules

__all__ = ["NOTHING", "Decision", "Rules"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Paths whose matches are remembered, and the longest path remembered: a client
# cycling through paths costs the matching each time, never memory.
MEMORY_PATHS = 4096
MEMORY_PATH_CHARS = 512
# Client addresses whose allow/deny answer is remembered, per rule set.
MEMORY_CLIENTS = 1024


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules say about one request, in the order it is applied."""

    refused: bool = False  # an allow list that does not hold the client: 403
    guard: Guard | None = None  # credentials to check (401 unless they pass)
    redirect: tuple[int, str] | None = None  # (status, Location)
    fallback: str | None = None  # the URL path to serve if the file is not found
    headers: tuple[tuple[str, str], ...] = ()  # added to the response
    # ``headers`` as the worker sends them, for a cache hit's encoded fields: made once
    # per path's decision (``Rules._match``), empty in the per-request decisions.
    encoded: bytes = b""
    # Nothing to do but check ``guard`` and add ``headers`` around the file: the
    # router's short way (no 403, no redirect, no fallback to look for).
    direct: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "direct", not self.refused and self.redirect is None
                           and self.fallback is None)


NOTHING = Decision()


@dataclass(frozen=True, slots=True)
class _Redirect:
    status: int
    template: Template
    rest_at: int  # where {rest} starts in the path (0 when the template has none)


@dataclass(frozen=True, slots=True)
class _Matched:
    """What one path matched when the client or the query matter (allow, redirect)."""

    allow: tuple[Network, ...] | None
    redirect: _Redirect | None
    constant: Decision  # the Decision when neither allow nor redirect need more


class Rules:
    """One site's rules, compiled. ``decide`` is the per-request entry point."""

    __slots__ = ("_allows", "_clients", "_fallbacks", "_guards", "_header_rules", "_kinds",
                 "_memory", "_redirects", "count")

    def __init__(self, settings: Sequence[RuleSetting]) -> None:
        self.count = len(settings)
        self._allows: dict[int, tuple[Network, ...]] = {}
        self._guards: dict[int, Guard] = {}
        self._redirects: dict[int, _Redirect] = {}
        self._fallbacks: dict[int, str] = {}
        headers: list[tuple[CacheRules, tuple[tuple[str, str], ...]]] = []
        for index, rule in enumerate(settings):
            if rule.allow is not None:
                self._allows[index] = tuple(ipaddress.ip_network(n) for n in rule.allow)
            if rule.auth is not None:
                users = rule.auth.users
                if users is None:
                    raise ValueError(f"{rule.auth.htpasswd} was not read at load")
                self._guards[index] = Guard(rule.auth.realm, users)
            if rule.redirect is not None:
                template = compile_template(rule.redirect)
                rest_at = rest_offset(rule.match) if template.uses_rest else 0
                if rest_at is None:
                    raise ValueError(f"{rule.match}: {{rest}} needs an anchored glob "
                                     "whose only star is its last")
                self._redirects[index] = _Redirect(rule.status, template, rest_at)
            if rule.fallback is not None:
                self._fallbacks[index] = rule.fallback
            if rule.headers:
                headers.append((_first_of([(index, rule.match)]), rule.headers))
        self._header_rules = tuple(headers)
        self._kinds = tuple(
            _first_of([(i, settings[i].match) for i in sorted(table)]) if table else None
            for table in (self._allows, self._guards, self._redirects, self._fallbacks)
        )
        # Path → its Decision (NOTHING when nothing matched), or the _Matched to finish.
        self._memory: dict[str, Decision | _Matched] = {}
        self._clients: dict[tuple[int, str], bool] = {}

    def decide(self, path: str, query: str, client: str) -> Decision:
        """The rules' decision for a request path (percent-encoded, as sent)."""
        matched = self._memory.get(path)
        if matched is None:
            matched = self._match(path)
            if len(path) <= MEMORY_PATH_CHARS:
                if len(self._memory) >= MEMORY_PATHS:
                    self._memory.clear()
                self._memory[path] = matched
        if matched.__class__ is Decision:  # the same for every client and query
            return matched
        assert isinstance(matched, _Matched)
        decision = matched.constant
        if matched.allow is not None and not self._allowed(matched.allow, client):
            return Decision(refused=True, headers=decision.headers)
        if matched.redirect is not None:
            redirect = matched.redirect
            location = redirect.template.render(path, path[redirect.rest_at :], query)
            return Decision(False, decision.guard, (redirect.status, location),
                            decision.fallback, decision.headers)
        return decision

    # -- matching ---------------------------------------------------------------------
    def _match(self, path: str) -> Decision | _Matched:
        if not path.startswith("/"):
            return NOTHING  # "*" (OPTIONS *) and CONNECT's "": no path for a rule to match
        allow_at, guard_at, redirect_at, fallback_at = (
            None if matcher is None or (found := matcher(path)) is None else int(found)
            for matcher in self._kinds
        )
        headers: tuple[tuple[str, str], ...] = ()
        for matcher, fields in self._header_rules:
            if matcher(path) is not None:
                headers += fields
        if allow_at is guard_at is redirect_at is fallback_at is None and not headers:
            return NOTHING
        constant = Decision(
            guard=None if guard_at is None else self._guards[guard_at],
            fallback=None if fallback_at is None else self._fallbacks[fallback_at],
            headers=headers,
            encoded=encode_fields(list(headers)) if headers else b"",
        )
        if allow_at is redirect_at is None:
            return constant
        return _Matched(
            None if allow_at is None else self._allows[allow_at],
            None if redirect_at is None else self._redirects[redirect_at],
            constant,
        )

    def _allowed(self, networks: tuple[Network, ...], client: str) -> bool:
        key = (id(networks), client)
        answer = self._clients.get(key)
        if answer is None:
            answer = _in_networks(networks, client)
            if len(self._clients) >= MEMORY_CLIENTS:
                self._clients.clear()
            self._clients[key] = answer
        return answer


def _first_of(rules: list[tuple[int, str]]) -> CacheRules:
    """A matcher answering the index (as text) of the first rule whose glob matches.

    CacheRules is the cache_control lookup: first match wins, linear in the path for
    any glob. An explicit catch-all with no value makes "no rule" answer None.
    """
    return CacheRules([*((pattern, str(index)) for index, pattern in rules), ("*", None)])


def _in_networks(networks: tuple[Network, ...], client: str) -> bool:
    """Whether ``client`` (an address as the worker knows it) is in one of ``networks``.

    A peer that is no IP address (a unix socket's "-") is in no network. An IPv4
    client seen through an IPv6 socket (``::ffff:10.0.0.1``) is its IPv4 address.
    """
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
