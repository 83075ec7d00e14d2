"""A worker's per-client decisions: may this connection be served, may this request.

Owns ``limits.connections_per_client``, ``limits.requests_per_second``/``burst``
(GCRA, the token bucket's exact equivalent with one number per client) and
``limits.exempt``, over the shared ``ClientTable``, and the refusal counts the worker
publishes. Must not touch sockets or the clock: the worker passes ``now``
(``time.monotonic()``, one clock for every process on Linux, so a worker's arrival
times are comparable with another's) and sends the answers.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from forkserver.config.model import Limits
from forkserver.protect.clients import KEY_SIZE, NO_ROW, ClientTable, Exempt

# The row's arrival time sits right after its key (clients.py's layout).
_TAT = struct.Struct("=d")
unpack_tat, pack_tat = _TAT.unpack_from, _TAT.pack_into


@dataclass(slots=True)
class Admission:
    """One connection's standing, decided when its client became known."""

    key: bytes
    row: int  # the client's row for the rate limit; NO_ROW: no limit applies
    counted_row: int = NO_ROW  # the row whose count this connection holds
    refused: bool = False  # over connections_per_client: its first request gets 503


# Shared by every connection a limit does not apply to: nothing to allocate or release.
UNLIMITED = Admission(b"", NO_ROW)


class ClientLimits:
    """The per-client limits as one worker applies them."""

    def __init__(self, settings: Limits, table: ClientTable, column: int) -> None:
        self.table = table
        self.column = column  # -1: no column left; counts stay in ``private``
        self.private: dict[int, int] = {}
        self.max_connections = settings.connections_per_client
        rate = settings.requests_per_second
        # GCRA (ITU-T I.371): a request is due every ``interval``; one may come up to
        # ``tolerance`` early, which is exactly a bucket of burst + 1 tokens.
        self.interval = 1.0 / rate if rate else 0.0
        self.tolerance = settings.burst * self.interval
        self.exempt = Exempt(settings.exempt)
        self.refused_connections = 0
        self.refused_requests = 0
        self.untracked = 0  # connections whose client found no room in the table

    # -- connections ---------------------------------------------------------------
    def open(self, key: bytes, now: float) -> Admission:
        """A connection's client is known (at accept, or from its PROXY header)."""
        if not key or key in self.exempt:
            return UNLIMITED
        table = self.table
        row = table.find(key, now)
        if row == NO_ROW:
            self.untracked += 1
            return UNLIMITED
        if not self.max_connections:
            return Admission(key, row)
        # Count first, then look: of two connections arriving at two workers at the
        # same instant, each sees the other's count, so the limit is never exceeded
        # (at worst both are refused when only one was over: the client was at its
        # limit and trying to pass it).
        self.count(row, 1)
        if not table.holds(row, key):
            # Another worker reused the row between our lookup and our count: take
            # the count back rather than charge a stranger (clients.py, "Rows").
            self.count(row, -1)
            self.untracked += 1
            return UNLIMITED
        if self.connections(row) > self.max_connections:
            self.count(row, -1)
            self.refused_connections += 1
            return Admission(key, row, refused=True)
        return Admission(key, row, counted_row=row)

    def close(self, admission: Admission) -> None:
        if admission.counted_row != NO_ROW:
            self.count(admission.counted_row, -1)
            admission.counted_row = NO_ROW

    def connections(self, row: int) -> int:
        return self.table.connections(row) + self.private.get(row, 0)

    def count(self, row: int, delta: int) -> None:
        if self.column >= 0:
            self.table.add(row, self.column, delta)
            return
        value = self.private.get(row, 0) + delta
        if value > 0:
            self.private[row] = value
        else:
            self.private.pop(row, None)

    # -- requests ------------------------------------------------------------------
    def request(self, admission: Admission, now: float) -> float:
        """0.0 to serve a request now, else the seconds until one would be served.

        Runs for every request of a limited client, so the table is read here
        directly (one key compare, one unpack, one pack) rather than through
        ClientTable's one-field helpers: a refusal must cost less than serving.
        """
        interval = self.interval
        row = admission.row
        if not interval or row == NO_ROW:
            return 0.0
        table = self.table
        memory = table.memory
        base = table.rows_offset + row * table.row_size
        if memory[base : base + KEY_SIZE] != admission.key:
            # Reused while the client was idle (no count held, bucket full again):
            # the client starts afresh, as it would have in the old row.
            row = admission.row = table.find(admission.key, now)
            if row == NO_ROW:
                return 0.0
            base = table.rows_offset + row * table.row_size
        tat: float = unpack_tat(memory, base + KEY_SIZE)[0]
        tolerance = self.tolerance
        # The latest arrival time any admission can leave is now + tolerance +
        # interval; anything beyond (a torn read of a concurrent write, NaN) is
        # treated as a fresh client: an unreadable value must not refuse anyone.
        if not tat <= now + tolerance + interval or tat < now:
            tat = now
        early = tat - now - tolerance
        if early > 0:
            self.refused_requests += 1
            return early
        pack_tat(memory, base + KEY_SIZE, tat + interval)
        return 0.0


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` delay-seconds value (RFC 9110 §10.2.3): whole, at least 1."""
    return max(1, math.ceil(seconds))
