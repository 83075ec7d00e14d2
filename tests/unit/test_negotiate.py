"""negotiate.py: Accept-Encoding for precompressed variants, Accept for listings.

Each case names the RFC 9110 section it pins (§12.4.2 q-values, §12.5.1 Accept,
§12.5.3 Accept-Encoding).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkserver.http.negotiate import choose_encoding, coding_weights, prefers_json

BOTH = (True, True)

ENCODINGS: list[tuple[str, str | None, tuple[bool, bool], str | None]] = [
    ("12.5.3 no field: the file itself", None, BOTH, None),
    ("12.5.3 empty value: no coding wanted", "", BOTH, None),
    ("br preferred at equal q", "gzip, deflate, br", BOTH, "br"),
    ("browser value", "gzip, deflate, br, zstd", BOTH, "br"),
    ("only gzip exists", "gzip, br", (False, True), "gzip"),
    ("only br exists", "gzip, br", (True, False), "br"),
    ("no variant exists", "gzip, br", (False, False), None),
    ("only gzip accepted", "gzip", BOTH, "gzip"),
    ("12.4.2 higher q wins", "br;q=0.5, gzip;q=0.8", BOTH, "gzip"),
    ("12.5.3 unnamed identity is only the fallback", "gzip;q=0.5", BOTH, "gzip"),
    ("12.5.3 nothing acceptable: the file anyway", "identity;q=0, deflate", BOTH, None),
    ("12.4.2 q=0 refuses", "br;q=0, gzip", BOTH, "gzip"),
    ("12.4.2 q=0 for both", "br;q=0, gzip;q=0", BOTH, None),
    ("12.4.2 OWS and case", "GZip ; Q=0.3 ,BR;q=0.2", BOTH, "gzip"),
    ("12.4.2 q=1.000", "br;q=1.000", BOTH, "br"),
    ("12.4.2 q=0.001 still acceptable", "br;q=0.001", BOTH, "br"),
    ("12.5.3 * covers unnamed codings", "*", BOTH, "br"),
    ("12.5.3 * with q", "*;q=0.5, gzip;q=0.6", BOTH, "gzip"),
    ("12.5.3 * excluded, named kept", "*;q=0, gzip", BOTH, "gzip"),
    ("12.5.3 identity preferred by q", "gzip;q=0.5, identity", BOTH, None),
    ("12.5.3 identity equal: coding wins", "gzip, identity", BOTH, "gzip"),
    ("12.5.3 identity refused", "gzip;q=0.1, identity;q=0", BOTH, "gzip"),
    ("12.5.3 * lowers identity too", "*;q=0.2, br;q=0.3", BOTH, "br"),
    ("8.4.1.3 x-gzip is gzip", "x-gzip", BOTH, "gzip"),
    ("deflate only: no variant", "deflate", BOTH, None),
    ("12.4.2 malformed q skips the member", "br;q=2, gzip", BOTH, "gzip"),
    ("12.4.2 q with four decimals is malformed", "br;q=0.0001, gzip;q=0.1", BOTH, "gzip"),
    ("empty members", ", ,gzip,", BOTH, "gzip"),
    ("junk", ";;;,=,q=1", BOTH, None),
]


@pytest.mark.parametrize(
    ("value", "available", "expected"),
    [c[1:] for c in ENCODINGS],
    ids=[c[0] for c in ENCODINGS],
)
def test_rfc9110_12_5_3_accept_encoding(
    value: str | None, available: tuple[bool, bool], expected: str | None
) -> None:
    assert choose_encoding(value, *available) == expected


@given(st.text(alphabet="abgrzip*;q=0.15, \t", max_size=40))
def test_rfc9110_12_5_3_any_value_gives_a_choice_never_an_error(value: str) -> None:
    chosen = choose_encoding(value, True, True)
    assert chosen in (None, "br", "gzip")
    if chosen is not None:
        assert all(0.0 <= q <= 1.0 for q in coding_weights(value).values())


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
