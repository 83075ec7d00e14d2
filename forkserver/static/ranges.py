"""Byte ranges (RFC 9110 §14): the Range header → the parts to send, and their framing.

Owns the grammar of ``Range: bytes=…``, satisfiability, coalescing, the guard against
range amplification, and the part heads of a ``multipart/byteranges`` body. Pure
functions of strings and integers: must not open files or build plans.

Decisions where RFC 9110 §14.2 leaves room (pinned by ``tests/unit/test_ranges.py``):

* A Range that is not valid ``bytes`` syntax (``bytes=abc``, ``bytes=5-2``, no ``=``,
  whitespace inside a spec) is *ignored*: the whole file is sent with 200. An unknown
  unit is ignored as the RFC requires. nginx answers 416 to syntax errors.
* More than ``MAX_RANGES`` range-specs, or satisfiable ranges that add up to more bytes
  than the file holds (``0-,0-``), are ignored too (200, whole file): the guard
  against amplification of RFC 9110 §17.15, as nginx does for the sum.
* Overlapping and adjacent ranges are coalesced; the parts keep the order in which
  their first range-spec was asked for (§15.3.7.2 SHOULD). Unsatisfiable specs in a
  set that has satisfiable ones are dropped; if only one part is left it is sent as
  a single-part 206 (§14.6: a single range MUST NOT be multipart).
* No satisfiable spec at all → 416 with ``Content-Range: bytes */LENGTH``.
* Numbers of any length are read without overflow and without converting a
  thousand-digit string: a position beyond 2**63 cannot be inside any file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_RANGES", "ByteRange", "content_range", "multipart_framing", "parse_range"]

# More range-specs than this and the header is ignored (200). Enough for real clients
# (PDF viewers and download managers ask for a handful at a time) while bounding the
# per-response work: every part of a multipart body holds its own descriptor (an
# os.dup) until it is sent, so a few such requests must not exhaust the worker's
# descriptor table. Apache allows 200, Starlette 100, lighttpd 128 (10 unsorted).
MAX_RANGES = 32
# Offsets are signed 64-bit for every file API: a position with more digits than this
# lies beyond any file, whatever its exact value.
_MAX_DIGITS = 19
_BEYOND_ANY_FILE = 2**64

_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``first`` to ``last`` of the representation, both inclusive (§14.1.1)."""

    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1


def _position(digits: str) -> tuple[int, str]:
    """(value, canonical digits); value saturates for numbers no file can reach."""
    canonical = digits.lstrip("0") or "0"
    if len(canonical) > _MAX_DIGITS:
        return _BEYOND_ANY_FILE, canonical
    return int(canonical), canonical


def _less(a: str, b: str) -> bool:
    """a < b for canonical digit strings of any length."""
    return (len(a), a) < (len(b), b)


def parse_range(value: str, size: int) -> list[ByteRange] | None:
    """The parts to send for ``Range: value`` on a representation of ``size`` bytes.

    None: ignore the header and send the whole representation (200). An empty list:
    nothing is satisfiable (416). Otherwise the coalesced parts, in request order.
    ``size`` must be > 0 (an empty representation ignores Range, §14.2 MAY).
    """
    unit, equals, specs = value.partition("=")
    if not equals or unit.lower() != "bytes":
        return None  # not a byte range: unknown unit (MUST ignore) or no unit at all
    items = specs.split(",")
    if len(items) > MAX_RANGES:
        # Even empty members count: a flood of commas is no legitimate request.
        return None
    wanted: list[tuple[int, int, int]] = []  # (first, last, order asked)
    valid_specs = 0
    for item in items:
        spec = item.strip(" \t")
        if not spec:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1.2)
        match = _SPEC.fullmatch(spec)
        if match is None:
            return None
        first_digits, last_digits = match.groups()
        valid_specs += 1
        if not first_digits:
            if not last_digits:
                return None  # "-" alone
            suffix, _ = _position(last_digits)  # suffix-range: the last N bytes
            if suffix > 0:
                wanted.append((max(size - suffix, 0), size - 1, len(wanted)))
            continue
        first, first_canonical = _position(first_digits)
        if last_digits:
            last, last_canonical = _position(last_digits)
            if _less(last_canonical, first_canonical):
                return None  # last-pos < first-pos: invalid (§14.1.1)
        else:
            last = size - 1
        if first < size:
            wanted.append((first, min(last, size - 1), len(wanted)))
    if not valid_specs:
        return None  # "bytes=" or "bytes=,": no range-spec at all is invalid
    if not wanted:
        return []
    if sum(last - first + 1 for first, last, _ in wanted) > size:
        return None  # asks for more than the whole file: amplification guard
    return _coalesce(wanted)


def _coalesce(wanted: list[tuple[int, int, int]]) -> list[ByteRange]:
    """Merge overlapping and adjacent ranges; order parts by their first request."""
    merged: list[list[int]] = []  # [first, last, earliest order]
    for first, last, order in sorted(wanted):
        if merged and first <= merged[-1][1] + 1:
            current = merged[-1]
            current[1] = max(current[1], last)
            current[2] = min(current[2], order)
        else:
            merged.append([first, last, order])
    merged.sort(key=lambda part: part[2])
    return [ByteRange(first, last) for first, last, _ in merged]


def content_range(part: ByteRange, size: int) -> str:
    """``bytes 0-499/1234`` (RFC 9110 §14.4)."""
    return f"bytes {part.first}-{part.last}/{size}"


def multipart_framing(
    parts: list[ByteRange], size: int, media_type: str, boundary: str
) -> tuple[list[bytes], bytes, int]:
    """The bytes around each part of a ``multipart/byteranges`` body (§14.6).

    Returns (one head per part, the closing delimiter, total body length). The body
    is ``head[0] data[0] head[1] data[1] … closing``; every head after the first
    starts with the CRLF that ends the previous part's data (RFC 2046 §5.1.1).
    """
    heads = []
    total = 0
    for index, part in enumerate(parts):
        head = (
            f"--{boundary}\r\n"
            f"Content-Type: {media_type}\r\n"
            f"Content-Range: {content_range(part, size)}\r\n\r\n"
        ).encode("latin-1")
        if index:
            head = b"\r\n" + head
        heads.append(head)
        total += len(head) + part.length
    closing = f"\r\n--{boundary}--\r\n".encode("latin-1")
    return heads, closing, total + len(closing)
