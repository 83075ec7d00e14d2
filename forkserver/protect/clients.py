"""The per-client table: connection counts and rate state of each client address,
shared by every worker of the server.

Owns the layout of an anonymous shared ``mmap`` made by the master before the first
fork (like the scoreboard), its lookups and its writes; must not decide what a count
means (``admission`` does) and must not make system calls: a lookup is a few slice
compares in memory that is already mapped.

Layout: a 64-byte header, then ``ROWS`` fixed rows, 8-byte aligned. A row is

    key      16 bytes  the client address, IPv4 mapped into IPv6 (``client_key``);
                       all zero = an empty row
    tat       8 bytes  the rate limit's theoretical arrival time (GCRA), monotonic
                       seconds (CLOCK_MONOTONIC is one clock for all processes)
    counts  2 * COLUMNS bytes: open connections of this client, one u16 per column

Concurrency without locks (a killed worker cannot leave one held):

- **Counts have one writer each.** The master gives every worker a column before it
  forks it (``assign``) and zeroes the column when it reaps the worker (``release``):
  a worker killed while holding counts releases them at its reap, never later than
  the master's next turn. A client's connections are the sum of its row's columns.
  More live workers than columns (a reload of a very large pool): the extra workers
  keep their counts privately (``admission``), so only their own share is not seen
  by the others.
- **Rate state is last-writer-wins.** Two workers updating one client's ``tat`` at
  the same instant can lose one update, which only ever *admits* more: at most the
  requests the other workers admitted for that client while one worker was between
  its read and its write (microseconds; a scheduler time slice at worst). A torn
  8-byte read is clamped (``RateLimit.take``), so it can never refuse wrongly.
- **Rows are claimed optimistically.** A worker writes the key into an empty or idle
  row and reads it back; two workers claiming one row for different clients at the
  same instant leave it to one of them, and the other sees a foreign key when it
  checks (``claim`` re-reads after counting) and takes another row.

Bounded: ``ROWS`` rows, never more. A new client finds its row within ``PROBES``
rows of its hash, or takes an idle row there (no connection open, its bucket full
again: a row with nothing to remember), or — when all of them are busy — is
*untracked*: served without per-client limits and counted, so a flood of distinct
addresses costs a fixed amount of memory and never refuses anyone who is not over
a limit. The hash is Python's, randomized per master start and shared by its forked
workers, so addresses cannot be chosen to collide.
"""

from __future__ import annotations

import ipaddress
import mmap
import socket
import struct
from array import array

from forkserver.config.protection import MAX_CONNECTIONS_PER_CLIENT as COUNT_MAX

ROWS = 16_384  # distinct clients tracked at once: 2.4 MiB of address space, touched lazily
COLUMNS = 64  # live workers whose counts are shared (a pool of 32 during a reload)
PROBES = 8  # rows searched from a client's hash: neighbours, in the same few cache lines
HEADER_SIZE = 64
KEY_SIZE = 16
_TAT_OFFSET = KEY_SIZE
_COUNTS_OFFSET = KEY_SIZE + 8
EMPTY_KEY = bytes(KEY_SIZE)
NO_ROW = -1  # untracked: the table had no room, or the client has no address
_TAT = struct.Struct("=d")
# Header: a magic word, the column count and the span (columns ever given out: the
# master gives the lowest free one, so readers sum only that many, a pool's worth),
# then (past HEADER_SIZE) one i32 per column: the scoreboard slot + 1 of the worker it
# was given to, 0 while free. The master is the only writer of the header.
_MAGIC = 0x46534C4D  # "FSLM"
_SPAN_OFFSET = 8
_IPV4_MAPPED = bytes(10) + b"\xff\xff"


def client_key(address: str) -> bytes:
    """The 16-byte key of a client address: IPv6 as is, IPv4 mapped (RFC 4291 §2.5.5.2).

    ``b""`` for what is not an IP address (a unix socket's peer): no row, no limit.
    """
    try:
        if ":" in address:
            return socket.inet_pton(socket.AF_INET6, address.split("%", 1)[0])
        return _IPV4_MAPPED + socket.inet_aton(address) if address.count(".") == 3 else b""
    except OSError:
        return b""


class Exempt:
    """``limits.exempt``: networks no per-client limit applies to, matched on keys."""

    def __init__(self, networks: tuple[str, ...] | list[str]) -> None:
        # Each network as (mask, value) over the 128-bit key: one AND and one compare.
        self.masks: list[tuple[int, int]] = []
        for text in networks:
            net = ipaddress.ip_network(text)
            if isinstance(net, ipaddress.IPv4Network):
                net = ipaddress.IPv6Network(
                    (int.from_bytes(_IPV4_MAPPED + net.network_address.packed, "big"),
                     96 + net.prefixlen)
                )
            mask = int(net.netmask)
            self.masks.append((mask, int(net.network_address) & mask))

    def __contains__(self, key: bytes) -> bool:
        if not self.masks or len(key) != KEY_SIZE:
            return False
        value = int.from_bytes(key, "big")
        return any(value & mask == network for mask, network in self.masks)


class ClientTable:
    """The shared table. Made once by the master, before any fork; never resized."""

    def __init__(self, rows: int = ROWS, columns: int = COLUMNS) -> None:
        self.rows = rows
        self.columns = columns
        self.row_size = (_COUNTS_OFFSET + 2 * columns + 7) // 8 * 8
        self.rows_offset = (HEADER_SIZE + 4 * columns + 7) // 8 * 8
        self.size = self.rows_offset + rows * self.row_size
        self.memory = mmap.mmap(-1, self.size, flags=mmap.MAP_SHARED)
        struct.pack_into("=II", self.memory, 0, _MAGIC, columns)
        # The whole mapping as u16 words: a count is one index, a row's counts a slice.
        self._words = memoryview(self.memory).cast("H")
        self._row_words = self.row_size // 2
        self._first_count = (self.rows_offset + _COUNTS_OFFSET) // 2
        self._span = _SPAN_OFFSET // 2  # the span is a u32 below 65536: its low word

    def close(self) -> None:
        self._words.release()
        self.memory.close()

    def base(self, row: int) -> int:
        return self.rows_offset + row * self.row_size

    # -- master side: columns -------------------------------------------------------
    def assign(self, slot: int) -> int:
        """Give the worker about to be forked into scoreboard ``slot`` a free column.

        -1 when every column is taken (its counts then stay private to it).
        """
        for column in range(self.columns):
            offset = HEADER_SIZE + 4 * column
            if struct.unpack_from("=i", self.memory, offset)[0] == 0:
                struct.pack_into("=i", self.memory, offset, slot + 1)
                if column >= self._words[self._span]:
                    self._words[self._span] = column + 1
                return column
        return -1

    def release(self, slot: int) -> None:
        """The worker in ``slot`` has been reaped: its connections are gone with it."""
        for column in range(self.columns):
            offset = HEADER_SIZE + 4 * column
            if struct.unpack_from("=i", self.memory, offset)[0] == slot + 1:
                self.clear_column(column)
                struct.pack_into("=i", self.memory, offset, 0)

    def clear_column(self, column: int) -> None:
        start = self._first_count + column
        self._words[start :: self._row_words] = array("H", bytes(2 * self.rows))

    # -- worker side ----------------------------------------------------------------
    def column_of(self, slot: int) -> int:
        """The column the master gave the worker in ``slot``; -1 if none."""
        for column in range(self.columns):
            if struct.unpack_from("=i", self.memory, HEADER_SIZE + 4 * column)[0] == slot + 1:
                return column
        return -1

    def holds(self, row: int, key: bytes) -> bool:
        base = self.rows_offset + row * self.row_size
        return self.memory[base : base + KEY_SIZE] == key

    def find(self, key: bytes, now: float) -> int:
        """The row of ``key``, claiming an empty or idle one; NO_ROW when all are busy."""
        if len(key) != KEY_SIZE or key == EMPTY_KEY:
            return NO_ROW
        memory = self.memory
        rows = self.rows
        start = hash(key) % rows
        for probe in range(PROBES):
            row = (start + probe) % rows
            base = self.rows_offset + row * self.row_size
            found = memory[base : base + KEY_SIZE]
            if found == key:
                return row
            if found == EMPTY_KEY:
                break  # rows are never emptied, only reused: the key is not further on
        for probe in range(PROBES):
            row = (start + probe) % rows
            if self.idle(row, now) and self.claim(row, key):
                return row
        return NO_ROW

    def idle(self, row: int, now: float) -> bool:
        """Nothing to remember: no connection counted, and its bucket is full again."""
        base = self.rows_offset + row * self.row_size
        if self.memory[base : base + KEY_SIZE] == EMPTY_KEY:
            return True
        tat = _TAT.unpack_from(self.memory, base + _TAT_OFFSET)[0]
        return tat <= now and not self.connections(row)

    def claim(self, row: int, key: bytes) -> bool:
        base = self.rows_offset + row * self.row_size
        self.memory[base : base + KEY_SIZE] = key
        _TAT.pack_into(self.memory, base + _TAT_OFFSET, 0.0)
        return self.memory[base : base + KEY_SIZE] == key  # another worker's claim won

    def connections(self, row: int) -> int:
        """Open connections of the row's client, summed over every column."""
        first = self._first_count + row * self._row_words
        return sum(self._words[first : first + self._words[self._span]])

    def count(self, row: int, column: int) -> int:
        return int(self._words[self._first_count + row * self._row_words + column])

    def add(self, row: int, column: int, delta: int) -> None:
        """Move this worker's own count of the row's client by ``delta`` (its column only)."""
        index = self._first_count + row * self._row_words + column
        self._words[index] = min(max(self._words[index] + delta, 0), COUNT_MAX)

    def tat(self, row: int) -> float:
        return float(_TAT.unpack_from(self.memory, self.base(row) + _TAT_OFFSET)[0])

    def set_tat(self, row: int, tat: float) -> None:
        _TAT.pack_into(self.memory, self.base(row) + _TAT_OFFSET, tat)

    def used_rows(self) -> int:
        """Rows that hold a key (for tests and the status page): at most ``rows``."""
        return sum(
            1 for row in range(self.rows)
            if self.memory[self.base(row) : self.base(row) + KEY_SIZE] != EMPTY_KEY
        )
