"""ranges.py: the Range grammar, satisfiability, coalescing and multipart framing.

Table-driven; each case names the RFC 9110 section it pins. nginx-tests range.t is
mirrored where nginx agrees with the RFC; where it answers 416 to a syntax error we
ignore the field (200), which §14.2 allows and which gives the client its file.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkserver.static.ranges import (
    MAX_RANGES,
    ByteRange,
    content_range,
    multipart_framing,
    parse_range,
)

SIZE = 10_000
IGNORE: None = None
UNSATISFIABLE: list[ByteRange] = []


def parts(*pairs: tuple[int, int]) -> list[ByteRange]:
    return [ByteRange(first, last) for first, last in pairs]


RANGES: list[tuple[str, str, list[ByteRange] | None]] = [
    # single ranges (§14.1.2), as range.t
    ("int-range", "bytes=0-8", parts((0, 8))),
    ("suffix", "bytes=-10", parts((9990, 9999))),
    ("open-ended", "bytes=9990-", parts((9990, 9999))),
    ("last-pos past the end is clamped", "bytes=9990-20000", parts((9990, 9999))),
    ("the whole file", "bytes=0-", parts((0, 9999))),
    ("suffix longer than the file", "bytes=-20000", parts((0, 9999))),
    ("one byte", "bytes=0-0", parts((0, 0))),
    ("the last byte", "bytes=9999-9999", parts((9999, 9999))),
    ("unit is case-insensitive (14.1)", "Bytes=0-8", parts((0, 8))),
    ("leading zeros", "bytes=0000010-00020", parts((10, 20))),
    # several ranges (§14.6)
    ("two", "bytes=0-9,20-29", parts((0, 9), (20, 29))),
    ("OWS around commas (5.6.1)", "bytes=0-9 ,\t20-29", parts((0, 9), (20, 29))),
    ("empty members (5.6.1.2)", "bytes=,0-9,,20-29,", parts((0, 9), (20, 29))),
    ("request order kept (15.3.7.2)", "bytes=20-29,0-9", parts((20, 29), (0, 9))),
    ("overlap coalesced", "bytes=0-10,5-15", parts((0, 15))),
    ("adjacent coalesced", "bytes=0-9,10-19", parts((0, 19))),
    ("containment coalesced", "bytes=0-100,10-20", parts((0, 100))),
    ("coalesced part keeps its first position", "bytes=50-59,0-9,5-14",
     parts((50, 59), (0, 14))),
    ("a bridge merges three", "bytes=0-9,20-29,5-25", parts((0, 29))),
    ("unsatisfiable members dropped", "bytes=20000-,0-9", parts((0, 9))),
    ("zero suffix dropped", "bytes=-0,0-9", parts((0, 9))),
    ("suffix and int-range", "bytes=0-9,-10", parts((0, 9), (9990, 9999))),
    # unsatisfiable (§14.1.1, §15.5.17): 416
    ("first-pos at the end", "bytes=10000-", UNSATISFIABLE),
    ("first-pos past the end", "bytes=10001-10002", UNSATISFIABLE),
    ("zero suffix", "bytes=-0", UNSATISFIABLE),
    ("all members unsatisfiable", "bytes=10000-,20000-30000", UNSATISFIABLE),
    ("huge first-pos", "bytes=" + "9" * 400 + "-", UNSATISFIABLE),
    # ignored (§14.2): 200 with the whole file
    ("unknown unit (MUST ignore)", "items=0-5", IGNORE),
    ("no unit", "0-5", IGNORE),
    ("no equals sign", "bytes 0-5", IGNORE),
    ("space before =", "bytes =0-5", IGNORE),
    ("not a number (range.t: 416)", "bytes=alpha", IGNORE),
    ("no hyphen (range.t: 416)", "bytes=5", IGNORE),
    ("hyphen only", "bytes=-", IGNORE),
    ("last-pos before first-pos", "bytes=5-2", IGNORE),
    ("an invalid member spoils the set", "bytes=0-1,5-2", IGNORE),
    ("space inside a spec", "bytes=0 - 5", IGNORE),
    ("negative", "bytes=--5", IGNORE),
    ("no range-spec at all", "bytes=", IGNORE),
    ("only commas", "bytes=,,", IGNORE),
    ("two Range fields joined", "bytes=0-1, bytes=3-4", IGNORE),
    ("hex", "bytes=0x10-0x20", IGNORE),
    ("huge last-pos before huge first-pos", "bytes=" + "9" * 30 + "-" + "9" * 29, IGNORE),
    # the amplification guard (§17.15): more bytes than the file → 200
    ("sum beyond the file (range.t)", "bytes=0-10001,0-0", IGNORE),
    ("the file twice", "bytes=0-,0-", IGNORE),
    ("suffix and whole", "bytes=-1,0-", IGNORE),
    (f"more than {MAX_RANGES} specs", "bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1)), IGNORE),
    ("a flood of commas", "bytes=0-0" + "," * MAX_RANGES, IGNORE),
]


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in RANGES], ids=[c[0] for c in RANGES]
)
def test_rfc9110_14_range_header(value: str, expected: list[ByteRange] | None) -> None:
    assert parse_range(value, SIZE) == expected


def test_rfc9110_14_2_exactly_max_ranges_is_still_served() -> None:
    value = "bytes=" + ",".join(f"{i * 10}-{i * 10}" for i in range(MAX_RANGES))
    assert len(parse_range(value, SIZE) or []) == MAX_RANGES


@pytest.mark.parametrize("digits", [20, 1000, 5000])
def test_rfc9110_14_1_1_numbers_of_any_length_do_not_overflow(digits: int) -> None:
    """Python ints refuse str→int beyond 4300 digits; the parser never converts them."""
    huge = "9" * digits
    assert parse_range(f"bytes=0-{huge}", SIZE) == parts((0, 9999))
    assert parse_range(f"bytes=-{huge}", SIZE) == parts((0, 9999))
    assert parse_range(f"bytes={huge}-", SIZE) == []
    assert parse_range(f"bytes={huge}-{huge}", SIZE) == []


def test_rfc9110_14_1_2_one_byte_file() -> None:
    assert parse_range("bytes=0-", 1) == parts((0, 0))
    assert parse_range("bytes=-5", 1) == parts((0, 0))
    assert parse_range("bytes=1-", 1) == []


@given(
    st.lists(
        st.tuples(st.integers(0, 300) | st.none(), st.integers(0, 300) | st.none()),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 250),
)
def test_rfc9110_14_parts_are_always_inside_disjoint_and_bounded(
    specs: list[tuple[int | None, int | None]], size: int
) -> None:
    text = ",".join(f"{'' if a is None else a}-{'' if b is None else b}" for a, b in specs)
    result = parse_range("bytes=" + text, size)
    if result is None:
        return
    assert len(result) <= len(specs)
    covered: set[int] = set()
    for part in result:
        assert 0 <= part.first <= part.last < size
        span = set(range(part.first, part.last + 1))
        assert not covered & span  # disjoint after coalescing
        covered |= span
    assert sum(part.length for part in result) <= size
    ordered = sorted(result, key=lambda p: p.first)
    for left, right in itertools.pairwise(ordered):
        assert right.first > left.last + 1  # neither overlapping nor adjacent


def test_rfc9110_14_4_content_range() -> None:
    assert content_range(ByteRange(0, 499), 1234) == "bytes 0-499/1234"


def test_rfc9110_14_6_multipart_framing_parses_as_mime() -> None:
    data = bytes(range(256)) * 40
    chosen = parts((0, 9), (500, 509), (10_230, 10_239))
    heads, closing, total = multipart_framing(chosen, len(data), "text/plain", "SEPARATOR")
    body = b"".join(
        head + data[p.first : p.last + 1] for head, p in zip(heads, chosen, strict=True)
    ) + closing
    assert len(body) == total
    assert heads[0].startswith(b"--SEPARATOR\r\n")
    assert all(head.startswith(b"\r\n--SEPARATOR\r\n") for head in heads[1:])
    assert closing == b"\r\n--SEPARATOR--\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: multipart/byteranges; boundary=SEPARATOR\r\n\r\n" + body
    )
    found = list(message.iter_parts())
    assert len(found) == 3
    for piece, part in zip(found, chosen, strict=True):
        assert piece["Content-Type"] == "text/plain"
        assert piece["Content-Range"] == f"bytes {part.first}-{part.last}/{len(data)}"
        assert piece.get_payload(decode=True) == data[part.first : part.last + 1]
