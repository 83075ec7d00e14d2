"""How a worker parses request heads: remembered heads, and heads that arrive in pieces.

Owns ``HeadParser`` (``parse_request`` for one worker's limits, with a memory of the
heads that parsed) and ``HeadScan`` (how far one connection's unfinished head has
been looked at, so a head sent a byte per packet costs linear time). Must not touch
sockets or the clock; the grammar and its verdicts are ``request.py``'s.
"""

from __future__ import annotations

from collections import OrderedDict

from forkserver.config import Limits
from forkserver.http.request import LEADING_EMPTY_LINES, Request, parse_request

__all__ = ["HEAD_CACHE_ENTRIES", "HEAD_CACHE_MAX_BYTES", "HeadParser", "HeadScan"]

# The heads a worker parses repeat: a client asks for the same URL with the same
# fields (polling, health checks, a CDN refilling, every load generator). Parsing
# depends on nothing but the head's bytes and the limits, so a head seen before gets
# its earlier Request back for one dict lookup (~0.4 us instead of ~5.5 us for a
# browser's head).
# Bounded in entries and in head length (so in bytes: at most 256 x 2 KiB of keys);
# when full the least recently used head is dropped, not all of them, so the heads
# that repeat stay while distinct ones (cookies, user agents) stream past: each of
# those costs one lookup, insert and eviction (~0.3 us), never memory.
HEAD_CACHE_ENTRIES = 256
HEAD_CACHE_MAX_BYTES = 2048  # a browser's head without large cookies


class HeadScan:
    """How far one connection's unfinished head has been looked at (``HeadParser``).

    ``searched``: bytes already searched for the end of the head (CRLFCRLF).
    ``checked``: the buffer's size when it was last checked for errors.
    ``leading``: the end of the empty lines before the request line, as far as seen.
    All start at 0 and go back to 0 when a head is parsed (the worker then drops its
    bytes).
    """

    __slots__ = ("checked", "leading", "searched")

    def __init__(self) -> None:
        self.searched = 0
        self.checked = 0
        self.leading = 0


class HeadParser:
    """parse_request for one worker's limits, remembering the heads that parsed
    (least recently used first)."""

    __slots__ = ("heads", "last", "limits")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        # Least recently used first; an OrderedDict because evicting the oldest of a
        # dict walks past the dummies its deletions left (static/filecache.py).
        self.heads: OrderedDict[bytes, tuple[Request, int]] = OrderedDict()
        self.last: tuple[Request, int] | None = None  # the most recently used parse

    def parse(
        self, buf: bytes | bytearray, scan: HeadScan | None = None
    ) -> tuple[Request, int] | None:
        """Same contract as ``parse_request(buf, self.limits)``.

        With ``scan`` (one per connection, for the head at the start of ``buf``) a head
        that arrives in many reads costs time linear in its size, not quadratic: each
        read searches only the new bytes for the end of the head, and the unfinished
        head is checked for errors again only once the buffer has doubled since the
        last check, or reached ``limits.header_bytes``. An invalid head still gets the
        status of its first bad byte (parse_request decides it), at the latest once
        the client has sent as many bytes again as it had before.
        """
        end = buf.find(b"\r\n\r\n", 0, HEAD_CACHE_MAX_BYTES)
        if end <= 0:  # no whole head within reach, or empty lines first: no caching
            if scan is None:
                return parse_request(buf, self.limits)
            return self._parse_unfinished(buf, scan)
        if scan is not None and scan.searched:
            scan.searched = scan.checked = scan.leading = 0  # it came whole after all
        head = bytes(buf[: end + 4])
        heads = self.heads
        parsed = heads.get(head)
        if parsed is not None:
            if parsed is not self.last:  # a head repeated in a row reorders nothing
                heads.move_to_end(head)  # most recently used now
                self.last = parsed
            return parsed
        parsed = parse_request(buf, self.limits)
        if parsed is not None and parsed[1] == len(head):
            if len(heads) >= HEAD_CACHE_ENTRIES:
                heads.popitem(last=False)  # the least recently used head
            heads[head] = parsed
            self.last = parsed
        return parsed

    def _parse_unfinished(
        self, buf: bytes | bytearray, scan: HeadScan
    ) -> tuple[Request, int] | None:
        """parse_request, skipped while it could only say "need more" or repeat itself."""
        size = len(buf)
        if buf.startswith(b"\r\n"):  # empty lines first: continue where they were left
            leading = LEADING_EMPTY_LINES.match(buf, scan.leading)
            scan.leading = leading.end() if leading else scan.leading
        # The 3 bytes before the new ones may start a CRLFCRLF that ends in them; the
        # head's own cannot start before its request line.
        if size < self.limits.header_bytes and buf.find(
            b"\r\n\r\n", max(scan.searched - 3, scan.leading)
        ) < 0:
            scan.searched = size
            if size < 2 * scan.checked:
                return None  # checked at half this size or more: the cost stays linear
            scan.checked = size
        parsed = parse_request(buf, self.limits)
        if parsed is None:
            scan.searched = scan.checked = size
        else:
            scan.searched = scan.checked = scan.leading = 0
        return parsed
