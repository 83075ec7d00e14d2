"""Proactive negotiation (RFC 9110 §12.5.1): Accept, for listings and the status page.

Owns the parsing of weighted media-range lists (q-values) and the choice between an
HTML and a JSON directory listing, and between Prometheus text and JSON on the
status page. Pure functions of header values: must not look at files or build
responses. Accept-Encoding (content codings, 406) is ``forkserver.encoding.negotiation``.

Decisions where the RFC leaves room (pinned by ``tests/unit/test_negotiate.py``):
ties go to HTML (listings) and to JSON (the status page); a member with a malformed
q-value is skipped, as if it were not there.
"""

from __future__ import annotations

import re

__all__ = ["prefers_json", "prefers_plain_text"]

_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
_MEDIA_RANGE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+)/([!#$%&'*+\-.^_`|~0-9A-Za-z]+)")


def _weighted(member: str) -> tuple[str, float] | None:
    """``text/html;q=0.5`` → ("text/html", 0.5); None for a malformed member."""
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
