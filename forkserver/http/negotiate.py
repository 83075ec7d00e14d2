"""Proactive negotiation (RFC 9110 §12): Accept-Encoding and Accept.

Owns the parsing of weighted lists (q-values) and the choice between a file and its
precompressed variants, and between an HTML and a JSON directory listing. Pure
functions of header values: must not look at files or build responses.

Decisions where the RFC leaves room (pinned by ``tests/unit/test_negotiate.py``):

* No Accept-Encoding field → the unencoded file. §12.5.3 would allow any coding, but
  a client that sends nothing may not decode anything (nginx, Apache, Caddy agree).
* An empty Accept-Encoding value → the unencoded file (§12.5.3: no coding wanted).
* The highest q wins among the variants that exist and ``identity``; at equal q,
  ``br`` beats ``gzip`` (smaller) and both beat ``identity``. ``x-gzip`` counts as
  ``gzip`` (§8.4.1.3). ``*`` gives its q to every coding not named. ``identity``
  not named (and no ``*``) is acceptable (§12.5.3) but only as the fallback: a
  client that lists ``gzip;q=0.5`` alone wants gzip, not an implicit q=1 identity.
* When even ``identity`` is refused (``identity;q=0`` or ``*;q=0``) and no variant is
  acceptable, the unencoded file is sent anyway rather than 406: §12.1 allows
  disregarding the field, and a response beats an error for a static file.
* A member with a malformed q-value is skipped, as if it were not there.
"""

from __future__ import annotations

import re

__all__ = ["BR", "GZIP", "choose_encoding", "coding_weights", "prefers_json", "prefers_plain_text"]

BR = "br"
GZIP = "gzip"
# Parsed header values by their text. Clients send the same few values on every
# request, so a worker keeps the answers; bounded so a client cycling through values
# cannot grow it.
CACHE_SIZE = 256
CACHE_MAX_VALUE = 256

_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MEDIA_RANGE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+)/([!#$%&'*+\-.^_`|~0-9A-Za-z]+)")

_weights_cache: dict[str, dict[str, float]] = {}


def _weighted(member: str) -> tuple[str, float] | None:
    """``gzip;q=0.5`` → ("gzip", 0.5); None for a malformed member."""
    name, _, parameters = member.partition(";")
    name = name.strip(" \t").lower()
    weight = 1.0
    for parameter in parameters.split(";") if parameters else ():
        key, _, raw = parameter.strip(" \t").partition("=")
        if key.lower() == "q":
            if not _QVALUE.fullmatch(raw):
                return None
            weight = float(raw)
    return name, weight


def coding_weights(value: str) -> dict[str, float]:
    """Accept-Encoding → {coding: q} with lower-cased names (RFC 9110 §12.5.3)."""
    cached = _weights_cache.get(value)
    if cached is not None:
        return cached
    weights: dict[str, float] = {}
    for member in value.split(","):
        if not member.strip(" \t"):
            continue
        parsed = _weighted(member)
        if parsed is None or not _TOKEN.fullmatch(parsed[0]):
            continue
        name, weight = parsed
        if name == "x-gzip":
            name = GZIP
        weights[name] = max(weight, weights.get(name, 0.0))
    if len(_weights_cache) < CACHE_SIZE and len(value) <= CACHE_MAX_VALUE:
        _weights_cache[value] = weights
    return weights


def choose_encoding(value: str | None, has_br: bool, has_gzip: bool) -> str | None:
    """The content coding to serve: ``"br"``, ``"gzip"`` or None (the file itself)."""
    if value is None or not (has_br or has_gzip):
        return None
    weights = coding_weights(value)
    star = weights.get("*")
    best: str | None = None
    best_weight = 0.0
    for coding, available in ((BR, has_br), (GZIP, has_gzip)):  # preference order
        if not available:
            continue
        weight = weights.get(coding, star if star is not None else 0.0)
        if weight > best_weight:
            best, best_weight = coding, weight
    if best is None:
        return None
    # identity competes with its own q, or *'s; unnamed, it is only the fallback.
    identity = weights.get("identity", star if star is not None else 0.0)
    return best if best_weight >= identity else None


def _media_weights(value: str) -> list[tuple[str, str, float]]:
    ranges = []
    for member in value.split(","):
        if not member.strip(" \t"):
            continue
        parsed = _weighted(member)
        if parsed is None:
            continue
        match = _MEDIA_RANGE.fullmatch(parsed[0])
        if match is not None:
            ranges.append((match[1], match[2], parsed[1]))
    return ranges


def _quality(ranges: list[tuple[str, str, float]], kind: str, subtype: str) -> float:
    """q of the most specific media range that matches (RFC 9110 §12.5.1)."""
    best_specificity, weight = -1, 0.0
    for range_type, range_subtype, q in ranges:
        if range_type == kind and range_subtype == subtype:
            specificity = 2
        elif range_type == kind and range_subtype == "*":
            specificity = 1
        elif range_type == "*" and range_subtype == "*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, weight = specificity, q
    return weight


def prefers_json(accept: str | None) -> bool:
    """Whether an Accept value ranks application/json above text/html (ties → HTML)."""
    if accept is None:
        return False
    ranges = _media_weights(accept.lower())
    return _quality(ranges, "application", "json") > _quality(ranges, "text", "html")


def prefers_plain_text(accept: str | None) -> bool:
    """Whether an Accept value ranks text/plain above application/json (ties → JSON).

    For the status endpoint: Prometheus asks for ``text/plain`` (or OpenMetrics, which
    it also takes the text exposition for) with a higher q than ``*/*``.
    """
    if accept is None:
        return False
    ranges = _media_weights(accept.lower())
    text = max(_quality(ranges, "text", "plain"),
               _quality(ranges, "application", "openmetrics-text"))
    return text > _quality(ranges, "application", "json")
