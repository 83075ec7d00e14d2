"""Validators and conditional requests (RFC 9110 §8.8, §13).

Owns HTTP-date formatting and parsing, the entity-tag format, the two comparison
functions, the precondition sequence of RFC 9110 §13.2.2 and the If-Range rule.
Pure functions of header values, validators and a clock value: must not open files,
touch sockets or build responses (static.py turns the verdicts into plans).

Decisions where the RFC leaves room (pinned by ``tests/unit/test_conditional.py``):

* If-None-Match and If-Match are parsed as lists of entity-tags. A value that is not
  ``*`` and not a valid list matches nothing: a broken If-Match fails (412, the
  precondition cannot be shown to hold), a broken If-None-Match holds (the full
  response is sent). ``*`` mixed into a list is invalid.
* HTTP-dates: all three formats of §5.6.7 are accepted (IMF-fixdate, RFC 850 and
  asctime), with the day name unchecked; anything else, including a list of dates,
  is not a date and the field is ignored (§13.1.3, §13.1.4).
* If-Modified-Since follows §13.1.3 exactly: ignored when If-None-Match is present,
  304 when Last-Modified is *earlier than or equal to* the date (nginx's default
  ``if_modified_since exact`` wants equality, and with both fields present it wants
  both to agree; the RFC says to ignore If-Modified-Since).
* A Last-Modified date is a strong validator for If-Range (§8.8.2.2) only when the
  file's modification time lies at least one whole second before now: a file
  changed twice within the current second could otherwise match a stale date.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from collections.abc import Mapping
from enum import Enum

__all__ = [
    "HttpDates",
    "Verdict",
    "etag",
    "evaluate_preconditions",
    "http_date",
    "if_range_holds",
    "parse_etags",
    "parse_http_date",
]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name: number for number, name in enumerate(_MONTHS, 1)}
# An IMF-fixdate has a four-digit year (RFC 9110 §5.6.7): clamp mtimes to 1970..9999.
_LAST_HTTP_DATE = 253402300799  # 9999-12-31T23:59:59Z


def http_date(seconds: float) -> str:
    """IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT`` (RFC 9110 §5.6.7)."""
    t = time.gmtime(min(max(int(seconds), 0), _LAST_HTTP_DATE))
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


class HttpDates:
    """``http_date`` remembered by second: the same few mtimes recur on every request."""

    __slots__ = ("_dates", "_size")

    def __init__(self, size: int = 4096) -> None:
        self._dates: dict[int, str] = {}
        self._size = size

    def __call__(self, seconds: int) -> str:
        value = self._dates.get(seconds)
        if value is None:
            if len(self._dates) >= self._size:
                self._dates.clear()
            value = self._dates[seconds] = http_date(seconds)
        return value


_DAY_NAME = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY_NAME = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_IMF_FIXDATE = re.compile(rf"{_DAY_NAME}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(rf"{_LONG_DAY_NAME}, ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME_DATE = re.compile(rf"{_DAY_NAME} {_MONTH} ([0-9 ][0-9]) {_TIME} ([0-9]{{4}})")
# RFC 850 two-digit years: one more than 50 years ahead means the past century.
_RFC850_WINDOW = 50


def parse_http_date(value: str, now: float | None = None) -> int | None:
    """Seconds since the epoch for an HTTP-date in any of its three forms, else None.

    ``now`` (default: the clock) only places RFC 850's two-digit years (§5.6.7).
    """
    match = _IMF_FIXDATE.fullmatch(value)
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
    else:
        match = _ASCTIME_DATE.fullmatch(value)
        if match is not None:
            month, day, hour, minute, second, year = match.groups()
        else:
            match = _RFC850_DATE.fullmatch(value)
            if match is None:
                return None
            day, month, short_year, hour, minute, second = match.groups()
            this_year = time.gmtime(time.time() if now is None else now).tm_year
            full = this_year - this_year % 100 + int(short_year)
            if full > this_year + _RFC850_WINDOW:
                full -= 100
            year = str(full)
    fields = (int(year), _MONTH_NUMBER[month], int(day), int(hour), int(minute), int(second))
    y, mo, d, h, mi, s = fields
    # second 60 is a leap second (RFC 5322 §3.3); the timestamp is the next second.
    if not (1 <= d <= calendar.monthrange(y, mo)[1] and h < 24 and mi < 60 and s <= 60):
        return None
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


def etag(st: os.stat_result) -> str:
    """Strong validator ``"<inode>-<size>-<mtime_ns>"`` in hex (RFC 9110 §8.8.3).

    Built only from the file's metadata, so every worker computes the same tag for the
    same file without reading it; any write changes mtime_ns (and usually the size),
    and an atomic replace (rename) changes the inode. Machines behind one balancer
    see different inodes: they must share the tree (or a later digest ETag).
    """
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text
# (RFC 9110 §8.8.3). etagc excludes DQUOTE, so a tag ends at its second quote.
_ENTITY_TAG = r'(?:W/)?+"[\x21\x23-\x7e\x80-\xff]*+"'
# #entity-tag with empty members (§5.6.1.2): OWS and commas around the tags, at least
# one comma between two tags. Every quantifier is possessive, so the pattern never
# backtracks and runs in time linear in the value. Issue 13: with plain quantifiers,
# "[ \t]*," and "[ \t,]*" could split a run of commas in 2**n ways, and
# '"a",,,,…,x' (30 commas) hung a worker for minutes. No choice is lost: a run of
# separators can only ever be followed by a tag or the end, and a tag by OWS and a
# comma or the end, so the first way to consume each run is the only one.
_ETAG_LIST = re.compile(
    rf"[ \t,]*+{_ENTITY_TAG}(?:[ \t]*+,[ \t,]*+(?:{_ENTITY_TAG})?+)*+[ \t,]*+"
)
_ETAG = re.compile(_ENTITY_TAG)

STAR = "*"


def parse_etags(value: str) -> list[str] | None:
    """The entity-tags of an If-Match / If-None-Match value (``W/`` kept), or None.

    ``["*"]`` for ``*``; None when the value is not a valid list (RFC 9110 §13.1.1).
    Empty list members are allowed and skipped (§5.6.1.2).
    """
    if value == STAR:
        return [STAR]
    if not _ETAG_LIST.fullmatch(value):
        return None
    return _ETAG.findall(value)


def _strong_match(tags: list[str] | None, current: str) -> bool:
    """§13.1.1 If-Match: strong comparison; ``*`` matches any current representation."""
    if tags is None:
        return False
    # A weak tag never matches under strong comparison (§8.8.3.2), nor can ours be weak.
    return any(tag in (STAR, current) for tag in tags)


def _weak_match(tags: list[str] | None, current: str) -> bool:
    """§13.1.2 If-None-Match: weak comparison, ``W/`` ignored on both sides."""
    if tags is None:
        return False
    opaque = current[2:] if current.startswith("W/") else current
    return any(tag in (STAR, opaque, "W/" + opaque) for tag in tags)


class Verdict(Enum):
    """What the preconditions decided (RFC 9110 §13.2.2)."""

    PROCEED = 200  # perform the method (a Range may still apply)
    NOT_MODIFIED = 304
    FAILED = 412


def evaluate_preconditions(
    headers: Mapping[str, str], current_etag: str | None, last_modified: int | None
) -> Verdict:
    """RFC 9110 §13.2.2 for GET and HEAD, in its order, on the selected representation.

    ``headers`` are the request's (lower-cased names); ``current_etag`` and
    ``last_modified`` (whole seconds, as sent in Last-Modified) are None when the
    representation has no such validator. The caller has already decided that the
    response would otherwise be 2xx (§13.2.1: preconditions are ignored otherwise).
    """
    # Step 1: If-Match, strong comparison; false → 412.
    if_match = headers.get("if-match")
    if if_match is not None:
        if current_etag is None:
            holds = if_match == STAR  # a representation exists, but has no tag to list
        elif if_match == current_etag:  # the common case, without parsing
            holds = True
        else:
            holds = _strong_match(parse_etags(if_match), current_etag)
        if not holds:
            return Verdict.FAILED
    else:
        # Step 2: If-Unmodified-Since, only without If-Match; false → 412. Ignored
        # when it is not one valid date or there is no modification date (§13.1.4).
        since = headers.get("if-unmodified-since")
        if since is not None and last_modified is not None:
            date = parse_http_date(since)
            if date is not None and last_modified > date:
                return Verdict.FAILED

    # Step 3: If-None-Match, weak comparison; false → 304 for GET and HEAD.
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match == STAR:
            return Verdict.NOT_MODIFIED  # a current representation exists
        if current_etag is not None and (
            if_none_match == current_etag
            or _weak_match(parse_etags(if_none_match), current_etag)
        ):
            return Verdict.NOT_MODIFIED
        return Verdict.PROCEED

    # Step 4: If-Modified-Since, only without If-None-Match (§13.1.3).
    modified_since = headers.get("if-modified-since")
    if modified_since is not None and last_modified is not None:
        date = parse_http_date(modified_since)
        if date is not None and last_modified <= date:
            return Verdict.NOT_MODIFIED
    return Verdict.PROCEED


def if_range_holds(
    value: str, current_etag: str, last_modified: int, mtime: float, now: float
) -> bool:
    """RFC 9110 §13.1.5: whether the Range of a request with ``If-Range: value`` applies.

    An entity-tag must match ours by strong comparison (a weak one never does). A date
    must equal Last-Modified exactly, and Last-Modified must be strong (§8.8.2.2): the
    file's ``mtime`` must lie at least one second before ``now``.
    """
    if value.startswith('"') or value.startswith("W/"):
        return value == current_etag
    date = parse_http_date(value, now)
    return date is not None and date == last_modified and mtime <= now - 1
