"""encoding/negotiation.py: Accept-Encoding over br, zstd, gzip and identity.

Each case names the RFC 9110 section it pins (§12.4.2 q-values, §12.5.3
Accept-Encoding, §8.4.1.3 x-gzip, §15.5.7 406).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkserver.encoding.negotiation import (
    BR,
    GZIP,
    IDENTITY,
    ZSTD,
    coding_weights,
    refuses_identity,
    select_coding,
)

ALL = frozenset({BR, ZSTD, GZIP})
NONE: frozenset[str] = frozenset()

# (name, Accept-Encoding, codings on offer, identity on offer, expected; None = 406)
CASES: list[tuple[str, str | None, frozenset[str], bool, str | None]] = [
    ("12.5.3 no field: identity", None, ALL, True, IDENTITY),
    ("12.5.3 empty value: no coding wanted", "", ALL, True, IDENTITY),
    ("12.5.3 blank value", " \t", ALL, True, IDENTITY),
    ("browser value: br first", "gzip, deflate, br, zstd", ALL, True, BR),
    ("equal q order br, zstd, gzip", "gzip, zstd, br", ALL, True, BR),
    ("equal q: zstd before gzip", "gzip, zstd", ALL, True, ZSTD),
    ("zstd only on offer", "gzip, deflate, br, zstd", frozenset({ZSTD}), True, ZSTD),
    ("12.4.2 higher q wins over order", "br;q=0.5, zstd;q=0.7, gzip;q=0.9", ALL, True, GZIP),
    ("12.4.2 zstd by q", "br;q=0.5, zstd;q=0.8, gzip;q=0.7", ALL, True, ZSTD),
    ("12.5.3 unnamed identity only the fallback", "gzip;q=0.5", ALL, True, GZIP),
    ("12.5.3 identity preferred by q", "gzip;q=0.5, identity", ALL, True, IDENTITY),
    ("12.5.3 identity equal: coding wins", "gzip, identity", ALL, True, GZIP),
    ("12.5.3 identity refused, coding kept", "gzip;q=0.1, identity;q=0", ALL, True, GZIP),
    ("15.5.7 identity refused, no coding on offer", "identity;q=0", NONE, True, None),
    ("15.5.7 identity refused, coding not wanted", "identity;q=0, deflate", ALL, True, None),
    ("15.5.7 *;q=0 refuses identity too", "*;q=0", ALL, True, None),
    ("12.5.3 *;q=0 with identity named", "*;q=0, identity", ALL, True, IDENTITY),
    ("12.5.3 *;q=0 with a coding named", "*;q=0, gzip", ALL, True, GZIP),
    ("12.5.3 * covers unnamed codings", "*", ALL, True, BR),
    ("12.5.3 * with q", "*;q=0.5, gzip;q=0.6", ALL, True, GZIP),
    ("12.5.3 * lowers identity too", "*;q=0.2, br;q=0.3", ALL, True, BR),
    ("12.5.3 * above a named coding", "*;q=0.9, gzip;q=0.1", frozenset({GZIP}), True, IDENTITY),
    ("12.4.2 q=0 refuses", "br;q=0, gzip", ALL, True, GZIP),
    ("12.4.2 q=0 for all: identity", "br;q=0, zstd;q=0, gzip;q=0", ALL, True, IDENTITY),
    ("duplicates: the lowest q", "gzip, gzip;q=0", ALL, True, IDENTITY),
    ("duplicates: lowest q, either order", "gzip;q=0, gzip;q=1", ALL, True, IDENTITY),
    ("duplicates: same q", "br, br, br", ALL, True, BR),
    ("8.4.1.3 x-gzip is gzip", "x-gzip", ALL, True, GZIP),
    ("8.4.1.3 x-gzip refusal refuses gzip", "gzip, x-gzip;q=0", ALL, True, IDENTITY),
    ("12.4.2 OWS and case", "GZip ; Q=0.3 ,BR;q=0.2", ALL, True, GZIP),
    ("12.4.2 q=1.000", "br;q=1.000", ALL, True, BR),
    ("12.4.2 q=1.", "br;q=1.", ALL, True, BR),
    ("12.4.2 q=0.", "br;q=0., gzip", ALL, True, GZIP),
    ("12.4.2 q=0.001 still acceptable", "br;q=0.001", ALL, True, BR),
    ("12.4.2 malformed q skips the member", "br;q=2, gzip", ALL, True, GZIP),
    ("12.4.2 q=1.001 is malformed", "br;q=1.001, gzip;q=0.5", ALL, True, GZIP),
    ("12.4.2 four decimals is malformed", "br;q=0.0001, gzip;q=0.1", ALL, True, GZIP),
    ("12.4.2 negative q is malformed", "br;q=-1, gzip;q=0.1", ALL, True, GZIP),
    ("12.4.2 q=abc is malformed", "br;q=abc", ALL, True, IDENTITY),
    ("12.4.2 q without value is malformed", "br;q, gzip;q=0.2", ALL, True, GZIP),
    ("spaced refusal is still a refusal", "gzip;q = 0", ALL, True, IDENTITY),
    ("other parameters ignored", "gzip;level=9;q=0.5", ALL, True, GZIP),
    ("empty members", ", ,gzip,", ALL, True, GZIP),
    ("junk", ";;;,=,q=1", ALL, True, IDENTITY),
    ("non-token name skipped", "g\"zip, br", ALL, True, BR),
    ("deflate only: identity", "deflate", ALL, True, IDENTITY),
    # Precompressed-only files: identity exists only for a .gz (decoded on the fly).
    (".br-only, client without br", "gzip", frozenset({BR}), False, None),
    (".zst-only, no field", None, frozenset({ZSTD}), False, None),
    (".zst-only, client takes zstd", "zstd", frozenset({ZSTD}), False, ZSTD),
    (".gz-only, no field: decoded", None, frozenset({GZIP}), True, IDENTITY),
    (".gz-only, client takes gzip", "gzip, br", frozenset({GZIP}), True, GZIP),
    (".br-only, *", "*", frozenset({BR}), False, BR),
    (".br-only, br refused", "br;q=0, *", frozenset({BR}), False, None),
]


@pytest.mark.parametrize(
    ("value", "codings", "identity", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_rfc9110_12_5_3_select_coding(
    value: str | None, codings: frozenset[str], identity: bool, expected: str | None
) -> None:
    assert select_coding(value, codings, identity) == expected


def test_weights_fold_aliases_and_keep_the_lowest_q() -> None:
    assert coding_weights("x-gzip;q=0.8, GZIP;q=0.5, br") == {"gzip": 0.5, "br": 1.0}


@given(st.text(alphabet=" \t,;=.0123456789qQ*abgrzstdxi-", max_size=80))
def test_property_any_value_gives_an_offered_answer(value: str) -> None:
    for codings in (ALL, NONE, frozenset({GZIP})):
        for identity in (True, False):
            answer = select_coding(value, codings, identity)
            if answer == IDENTITY:
                assert identity
            elif answer is not None:
                assert answer in codings


@pytest.mark.parametrize(
    ("value", "refused"),
    [(None, False), ("", False), ("gzip", False), ("identity;q=0", True), ("*;q=0", True),
     ("*;q=0, identity", False), ("identity;q=0.5", False), ("IDENTITY;Q=0, gzip", True),
     ("identity;q=0, identity", True)],
)
def test_rfc9110_12_5_3_refuses_identity(value: str | None, refused: bool) -> None:
    assert refuses_identity(value) is refused
