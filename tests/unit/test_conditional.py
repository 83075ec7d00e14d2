"""conditional.py: HTTP-dates, entity-tags and the RFC 9110 §13.2.2 sequence.

Table-driven: each case names the RFC 9110 section it pins. The nginx-tests cases of
not_modified.t are mirrored where nginx agrees with the RFC; where it does not (the
If-Modified-Since precedence) the case says so.
"""

from __future__ import annotations

import calendar
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkserver.static.conditional import (
    Verdict,
    etag,
    evaluate_preconditions,
    http_date,
    if_range_holds,
    parse_etags,
    parse_http_date,
)

EXAMPLE = 784111777  # RFC 9110 §5.6.7's example: Sun, 06 Nov 1994 08:49:37 GMT
TAG = '"abc-12-34"'
OTHER = '"def-56-78"'
LAST_MODIFIED = 1_700_000_000  # Tue, 14 Nov 2023 22:13:20 GMT
LM_TEXT = "Tue, 14 Nov 2023 22:13:20 GMT"
BEFORE = "Tue, 14 Nov 2023 22:13:19 GMT"
AFTER = "Tue, 14 Nov 2023 22:13:21 GMT"
PROCEED, NOT_MODIFIED, FAILED = Verdict.PROCEED, Verdict.NOT_MODIFIED, Verdict.FAILED


# -- HTTP-date (RFC 9110 §5.6.7) -------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", EXAMPLE),  # obsolete RFC 850 form
        ("Sun Nov  6 08:49:37 1994", EXAMPLE),  # obsolete asctime form
        ("Sun Nov 16 08:49:37 1994", EXAMPLE + 10 * 86400),
        ("Mon, 06 Nov 1994 08:49:37 GMT", EXAMPLE),  # day name is not checked
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
        ("Tue, 19 Jan 2038 03:14:08 GMT", 2**31),  # nginx not_modified.t: past 32 bits
        ("Fri, 31 Dec 9999 23:59:59 GMT", 253402300799),
        ("Wed, 31 Dec 2008 23:59:60 GMT", 1230768000),  # a leap second
        ("Thu, 29 Feb 2024 12:00:00 GMT", 1709208000),
    ],
)
def test_rfc9110_5_6_7_all_three_date_formats_are_accepted(text: str, seconds: int) -> None:
    assert parse_http_date(text, now=1_700_000_000) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37 gmt",  # GMT is case-sensitive
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 6 Nov 1994 08:49:37 GMT",  # two-digit day in IMF-fixdate
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 30 Feb 1994 08:49:37 GMT",  # no such day
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",  # a list
        " Sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT ",
        "784111777",
        "Sun, 06 Nov 1994 08:49:37 +0000",
    ],
)
def test_rfc9110_5_6_7_anything_else_is_not_a_date(text: str) -> None:
    assert parse_http_date(text) is None


def test_rfc9110_5_6_7_rfc850_two_digit_years_stay_within_50_years() -> None:
    now = calendar.timegm((2026, 6, 1, 0, 0, 0))
    assert parse_http_date("Monday, 01-Jan-76 00:00:00 GMT", now) == calendar.timegm(
        (2076, 1, 1, 0, 0, 0)
    )
    assert parse_http_date("Tuesday, 01-Jan-77 00:00:00 GMT", now) == calendar.timegm(
        (1977, 1, 1, 0, 0, 0)
    )


@given(st.integers(min_value=0, max_value=253402300799))
def test_rfc9110_5_6_7_http_date_round_trips(seconds: int) -> None:
    text = http_date(seconds)
    assert len(text) == 29
    assert parse_http_date(text) == seconds


def test_etag_is_strong_and_built_from_inode_size_and_mtime_ns() -> None:
    st_ = os.stat(__file__)
    assert etag(st_) == f'"{st_.st_ino:x}-{st_.st_size:x}-{st_.st_mtime_ns:x}"'


# -- entity-tag lists (RFC 9110 §8.8.3, §13.1.1) -----------------------------------------
@pytest.mark.parametrize(
    ("value", "tags"),
    [
        ("*", ["*"]),
        ('"a"', ['"a"']),
        ('W/"a"', ['W/"a"']),
        ('"a", "b"', ['"a"', '"b"']),
        ('"a",W/"b" ,  "c"', ['"a"', 'W/"b"', '"c"']),
        ('"a,b"', ['"a,b"']),  # a comma may sit inside an opaque-tag
        ('"", "x"', ['""', '"x"']),
        (', "a", , "b",', ['"a"', '"b"']),  # empty list members are allowed (§5.6.1.2)
        ('"a" , "b"', ['"a"', '"b"']),
        ("a", None),  # not quoted
        ('w/"a"', None),  # W/ is case-sensitive
        ('"a" "b"', None),  # no comma
        ('"a", *', None),  # * is only valid alone
        ('"a', None),
        ("", None),
        ('"a\\"', ['"a\\"']),  # no escaping inside an entity-tag: a backslash is data
        # Runs of separators (issue 13: these once took exponential time)
        ('"a",,,,"b"', ['"a"', '"b"']),
        ('"a" ,, ,\t, "b" ,', ['"a"', '"b"']),
        (",,,", None),  # no entity-tag at all
        ('"a"' + "," * 30 + "x", None),
        ('"a"' + " ," * 30 + ' "b" x', None),
        ('"a' + "," * 30, None),  # the quote never closes
    ],
)
def test_rfc9110_8_8_3_entity_tag_lists(value: str, tags: list[str] | None) -> None:
    assert parse_etags(value) == tags


# -- the precondition sequence (RFC 9110 §13.2.2) ---------------------------------------
PRECONDITIONS: list[tuple[str, dict[str, str], Verdict]] = [
    ("none", {}, PROCEED),
    # step 1: If-Match (§13.1.1), strong comparison
    ("13.1.1 If-Match exact", {"if-match": TAG}, PROCEED),
    ("13.1.1 If-Match in a list", {"if-match": f"{OTHER}, {TAG}"}, PROCEED),
    ("13.1.1 If-Match *", {"if-match": "*"}, PROCEED),
    ("13.1.1 If-Match mismatch", {"if-match": OTHER}, FAILED),
    ("13.1.1 If-Match weak never matches", {"if-match": f"W/{TAG}"}, FAILED),
    ("13.1.1 If-Match malformed", {"if-match": "abc-12-34"}, FAILED),
    # step 2: If-Unmodified-Since (§13.1.4), only without If-Match
    ("13.1.4 IUS equal", {"if-unmodified-since": LM_TEXT}, PROCEED),
    ("13.1.4 IUS later", {"if-unmodified-since": AFTER}, PROCEED),
    ("13.1.4 IUS earlier", {"if-unmodified-since": BEFORE}, FAILED),
    ("13.1.4 IUS not a date", {"if-unmodified-since": "soon"}, PROCEED),
    ("13.1.4 IUS list", {"if-unmodified-since": f"{BEFORE}, {BEFORE}"}, PROCEED),
    ("13.2.2 IUS ignored with If-Match",
     {"if-match": TAG, "if-unmodified-since": BEFORE}, PROCEED),
    ("13.2.2 If-Match decides before IUS",
     {"if-match": OTHER, "if-unmodified-since": AFTER}, FAILED),
    # step 3: If-None-Match (§13.1.2), weak comparison
    ("13.1.2 INM exact", {"if-none-match": TAG}, NOT_MODIFIED),
    ("13.1.2 INM weak form matches", {"if-none-match": f"W/{TAG}"}, NOT_MODIFIED),
    ("13.1.2 INM in a list", {"if-none-match": f'{OTHER}, W/"x", {TAG}'}, NOT_MODIFIED),
    ("13.1.2 INM *", {"if-none-match": "*"}, NOT_MODIFIED),
    ("13.1.2 INM mismatch", {"if-none-match": OTHER}, PROCEED),
    ("13.1.2 INM malformed", {"if-none-match": "abc-12-34"}, PROCEED),
    ("13.2.2 If-Match then INM", {"if-match": TAG, "if-none-match": TAG}, NOT_MODIFIED),
    ("13.2.2 failed If-Match wins over INM",
     {"if-match": OTHER, "if-none-match": TAG}, FAILED),
    ("13.2.2 failed IUS wins over INM",
     {"if-unmodified-since": BEFORE, "if-none-match": TAG}, FAILED),
    # step 4: If-Modified-Since (§13.1.3), only without If-None-Match
    ("13.1.3 IMS equal", {"if-modified-since": LM_TEXT}, NOT_MODIFIED),
    ("13.1.3 IMS later", {"if-modified-since": AFTER}, NOT_MODIFIED),  # nginx: exact only
    ("13.1.3 IMS earlier", {"if-modified-since": BEFORE}, PROCEED),
    ("13.1.3 IMS not a date", {"if-modified-since": "Tue, 14 Nov 2023"}, PROCEED),
    ("13.1.3 IMS list", {"if-modified-since": f"{LM_TEXT}, {LM_TEXT}"}, PROCEED),
    ("13.1.3 IMS asctime", {"if-modified-since": "Tue Nov 14 22:13:20 2023"}, NOT_MODIFIED),
    # nginx wants both to agree; RFC 9110 §13.1.3: ignore IMS when INM is present.
    ("13.1.3 IMS ignored when INM mismatches",
     {"if-none-match": OTHER, "if-modified-since": LM_TEXT}, PROCEED),
    ("13.1.3 IMS ignored when INM matches",
     {"if-none-match": TAG, "if-modified-since": BEFORE}, NOT_MODIFIED),
    ("13.1.3 IMS ignored even when INM is malformed",
     {"if-none-match": "junk", "if-modified-since": LM_TEXT}, PROCEED),
    ("13.2.2 all four, all true",
     {"if-match": TAG, "if-unmodified-since": AFTER, "if-none-match": OTHER,
      "if-modified-since": BEFORE}, PROCEED),
]


@pytest.mark.parametrize(
    ("fields", "verdict"), [c[1:] for c in PRECONDITIONS], ids=[c[0] for c in PRECONDITIONS]
)
def test_rfc9110_13_2_2_precondition_order(fields: dict[str, str], verdict: Verdict) -> None:
    assert evaluate_preconditions(fields, TAG, LAST_MODIFIED) is verdict


@pytest.mark.parametrize(
    ("fields", "verdict"),
    [
        ({"if-match": "*"}, PROCEED),  # a representation exists
        ({"if-match": TAG}, FAILED),  # but it has no tag to match
        ({"if-none-match": "*"}, NOT_MODIFIED),
        ({"if-none-match": TAG}, PROCEED),
        ({"if-unmodified-since": BEFORE}, PROCEED),  # §13.1.4: no date → ignore
        ({"if-modified-since": AFTER}, PROCEED),  # §13.1.3: no date → ignore
    ],
)
def test_rfc9110_13_1_without_validators(fields: dict[str, str], verdict: Verdict) -> None:
    assert evaluate_preconditions(fields, None, None) is verdict


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_rfc9110_13_1_3_dates_beyond_32_bits(offset: int) -> None:
    """nginx not_modified.t: If-Modified-Since around 2**31 (a 32-bit time_t edge)."""
    last_modified = 2**31
    since = http_date(last_modified + offset)
    verdict = evaluate_preconditions({"if-modified-since": since}, TAG, last_modified)
    assert verdict is (PROCEED if offset < 0 else NOT_MODIFIED)


# -- If-Range (RFC 9110 §13.1.5) --------------------------------------------------------
NOW = LAST_MODIFIED + 3600.0


@pytest.mark.parametrize(
    ("value", "mtime", "now", "holds"),
    [
        (TAG, LAST_MODIFIED, NOW, True),  # strong comparison
        (OTHER, LAST_MODIFIED, NOW, False),
        (f"W/{TAG}", LAST_MODIFIED, NOW, False),  # a weak tag never matches
        (LM_TEXT, LAST_MODIFIED + 0.5, NOW, True),  # the exact date, and a strong one
        ("Tuesday, 14-Nov-23 22:13:20 GMT", LAST_MODIFIED, NOW, True),
        (BEFORE, LAST_MODIFIED, NOW, False),  # exact match only, unlike IUS
        (AFTER, LAST_MODIFIED, NOW, False),
        # Modified less than a second ago: the date is a weak validator (§8.8.2.2).
        (LM_TEXT, LAST_MODIFIED + 0.5, LAST_MODIFIED + 1.2, False),
        (LM_TEXT, LAST_MODIFIED + 0.5, LAST_MODIFIED + 1.5, True),
        (TAG, LAST_MODIFIED + 0.5, LAST_MODIFIED + 0.6, True),  # a tag is always strong
        ("junk", LAST_MODIFIED, NOW, False),
        (f"{TAG}, {OTHER}", LAST_MODIFIED, NOW, False),  # one validator, not a list
    ],
)
def test_rfc9110_13_1_5_if_range(value: str, mtime: float, now: float, holds: bool) -> None:
    assert if_range_holds(value, TAG, int(mtime), mtime, now) is holds
