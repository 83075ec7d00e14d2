"""Accept-Encoding (RFC 9110 §12.5.3) over every representation a file can have.

Owns parsing the field into q-values and choosing among the codings on offer: the
precompressed variants ``br``, ``zstd``, ``gzip``, an on-the-fly gzip, and
``identity`` (the file itself, or a ``.gz`` decoded for the client). Pure functions
of the field's text: must not look at files or build responses.

Decisions (pinned by ``tests/unit/test_encoding_negotiation.py``):

* No field, or an empty one: identity only. §12.5.3 lets an absent field mean "any
  coding", but a client that sends nothing may decode nothing (nginx, Apache and
  Caddy agree), and an empty value means "no coding".
* The highest q wins; at equal q the order is ``br``, ``zstd``, ``gzip`` (smallest
  first), and any coding beats ``identity``. ``x-gzip`` is ``gzip`` (§8.4.1.3).
* ``*`` gives its q to every coding not named, ``identity`` included (§12.5.3).
  ``identity`` neither named nor covered by ``*`` is acceptable, but only as the
  fallback: ``gzip;q=0.5`` alone means gzip.
* A coding named twice takes its *lowest* q: a refusal anywhere in the field is a
  refusal (serving a coding the client may not decode breaks the page; serving
  identity never does).
* A member with a malformed q-value (``q=2``, ``q=0.0001``, ``q=abc``) is skipped;
  whitespace around the ``=`` of the weight is tolerated (a refusal written
  ``q = 0`` is still a refusal). Other parameters are ignored.
* Nothing acceptable — every coding on offer refused or absent, and identity refused
  (``identity;q=0``, or ``*;q=0`` without an ``identity`` entry) or not on offer (a
  ``.br``-only file) — is ``None``: the caller answers 406 (§12.5.3, §15.5.7).

Linear: one ``split(",")``, ``partition`` per member, fixed-shape patterns
(docs/security.md, "Parsing client bytes is linear").
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = [
    "BR",
    "GZIP",
    "IDENTITY",
    "PREFERENCE",
    "ZSTD",
    "coding_weights",
    "refuses_identity",
    "select_coding",
]

BR = "br"
ZSTD = "zstd"
GZIP = "gzip"
IDENTITY = "identity"
# Content codings in order of preference at equal q: smallest output first.
PREFERENCE: tuple[str, ...] = (BR, ZSTD, GZIP)
# The q an unnamed identity has when no "*" covers it: above refusal, below any q a
# client can write (the smallest is 0.001), so every acceptable coding beats it.
FALLBACK_Q = 0.0001
# Parsed values by their text: clients send the same few on every request. Bounded,
# so a client cycling through values cannot grow it.
CACHE_SIZE = 256
CACHE_MAX_VALUE = 256

_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]++")
_ALIASES = {"x-gzip": GZIP}

_cache: dict[str, dict[str, float]] = {}


def _member(member: str) -> tuple[str, float] | None:
    """``gzip;q=0.5`` → ("gzip", 0.5); None for an empty or malformed member."""
    name, _, parameters = member.partition(";")
    name = name.strip(" \t").lower()
    if not name or not _TOKEN.fullmatch(name):
        return None
    weight = 1.0
    if parameters:
        for parameter in parameters.split(";"):
            key, equals, raw = parameter.partition("=")
            if key.strip(" \t").lower() != "q":
                continue  # an accept-ext: ignored
            raw = raw.strip(" \t")
            if not equals or not _QVALUE.fullmatch(raw):
                return None
            weight = float(raw)
    return _ALIASES.get(name, name), weight


def coding_weights(value: str) -> dict[str, float]:
    """Accept-Encoding → {coding: q}, lower-cased, aliases folded, lowest q kept."""
    cached = _cache.get(value)
    if cached is not None:
        return cached
    weights: dict[str, float] = {}
    for member in value.split(","):
        parsed = _member(member)
        if parsed is None:
            continue
        name, weight = parsed
        previous = weights.get(name)
        weights[name] = weight if previous is None else min(previous, weight)
    if len(_cache) < CACHE_SIZE and len(value) <= CACHE_MAX_VALUE:
        _cache[value] = weights
    return weights


def refuses_identity(value: str | None) -> bool:
    """Whether the field refuses the unencoded representation (``identity;q=0``, or
    ``*;q=0`` without an ``identity`` entry): the one case where a file with no
    variants has no acceptable representation (406)."""
    if value is None:
        return False
    weights = coding_weights(value)
    return weights.get(IDENTITY, weights.get("*", FALLBACK_Q)) == 0.0


def select_coding(
    value: str | None, codings: Collection[str], identity: bool = True
) -> str | None:
    """The representation to send: a coding from ``codings``, ``"identity"``, or None.

    ``codings`` are the content codings on offer (any of ``PREFERENCE``); ``identity``
    says whether an unencoded representation exists (the file, or a ``.gz`` that can
    be decoded). None means no acceptable representation: 406.
    """
    if value is None or not value.strip(" \t"):
        return IDENTITY if identity else None
    weights = coding_weights(value)
    star = weights.get("*")
    unnamed = 0.0 if star is None else star
    best: str | None = None
    best_q = 0.0
    if codings:
        for coding in PREFERENCE:
            if coding in codings:
                q = weights.get(coding, unnamed)
                if q > best_q:
                    best, best_q = coding, q
    identity_q = weights.get(IDENTITY, FALLBACK_Q if star is None else star)
    if identity and identity_q > best_q:
        return IDENTITY
    return best  # None here: nothing on offer is acceptable
