"""http/negotiate.py: Accept for listings (Accept-Encoding: test_encoding_negotiation.py).

Each case names the RFC 9110 section it pins (§12.4.2 q-values, §12.5.1 Accept).
"""

from __future__ import annotations

import pytest

from forkserver.http.negotiate import prefers_json

ACCEPTS: list[tuple[str, str | None, bool]] = [
    ("no field", None, False),
    ("json", "application/json", True),
    ("browser", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
    ("curl", "*/*", False),
    ("json preferred", "application/json, text/html;q=0.9", True),
    ("equal: HTML", "application/json, text/html", False),
    ("json refused", "application/json;q=0", False),
    ("12.5.1 specific beats wildcard", "application/json;q=0.4, */*;q=0.9", False),
    ("12.5.1 type wildcard", "application/*, text/html;q=0.5", True),
    ("case-insensitive", "Application/JSON", True),
    ("json-ish subtype", "application/jsonl", False),
]


@pytest.mark.parametrize(
    ("value", "json"), [c[1:] for c in ACCEPTS], ids=[c[0] for c in ACCEPTS]
)
def test_rfc9110_12_5_1_accept_for_listings(value: str | None, json: bool) -> None:
    assert prefers_json(value) is json
