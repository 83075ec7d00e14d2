"""The scoreboard: a master header and one fixed slot per worker in shared memory.

Owns the layout and the read/write helpers. The master creates it before any fork;
each worker writes only its own slot's live fields; the master writes the header,
claims and releases slots and folds a finished worker's counters into its slot's
retired totals; anyone may read (the master for heartbeats and readiness, a worker
answering the status endpoint). No files, no locks, no syscalls per write: a torn
read of a counter that only grows is harmless, and each field has exactly one
writer at a time.

Counters never go backwards. A slot keeps the counts of every worker that ended in
it (``retired_*``), so "slot 3's requests" = retired + live counts: when a worker
ends, its counts move from live to retired in one step that readers cannot see
half-done (the header's ``fold_sequence`` is odd during the move, a seqlock), and a
replacement that reuses the slot continues from there instead of from zero.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass
from enum import IntEnum

from forkserver.capacity import SCOREBOARD_SLOTS

# Twice MAX_WORKERS (capacity.py): a full second generation fits during a reload.
SLOT_COUNT = SCOREBOARD_SLOTS
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Why a worker ended and another took its place (the master decides, at reaping).
RESTART_REASONS = ("crash", "heartbeat_timeout", "max_requests", "reload", "exit", "memory")
# Per-client protection (forkserver/protect/): refusals by the limit that refused, and
# connections whose client found no room in the client table (served unlimited).
LIMITED = ("connections", "requests", "min_send_rate", "untracked")
# TLS handshakes by outcome (forkserver/worker/tlsphase.py): forkserver_tls_handshakes_total.
TLS_RESULTS = ("ok", "failed")
# A reader that keeps meeting a fold in progress gives up and takes what it read;
# folds are a few microseconds apart at most, so this is never reached in practice.
SNAPSHOT_ATTEMPTS = 100


class SlotState(IntEnum):
    FREE = 0
    BOOTING = 1  # forked, not yet accepting
    SERVING = 2  # accepting connections
    DRAINING = 3  # stopped accepting, finishing in-flight responses


# Header: master pid, current generation, workers configured, workers wanted (TTIN/
# TTOU), start time (wall clock), fold sequence (odd while a fold is under way),
# worker restarts by reason. Padded to HEADER_SIZE so slots stay 8-byte aligned.
_HEADER = struct.Struct("=iIIIdQ" + "Q" * len(RESTART_REASONS))
_SEQUENCE_OFFSET = struct.calcsize("=iIIId")
_RESTARTS_OFFSET = _SEQUENCE_OFFSET + 8
HEADER_SIZE = 128

# A slot, in three parts by writer:
#   claimed (master): pid, generation, heartbeat (CLOCK_MONOTONIC, shared by all
#     processes; the worker rewrites it), started (wall clock), state (the worker
#     moves it on), restarts of this worker's position in its generation;
#   live (worker, at each heartbeat): requests, bytes sent, responses by status
#     class 1xx..5xx, open connections, refusals by LIMITED, handshakes by TLS_RESULTS;
#   retired (master, when a worker in this slot ends): bytes sent, responses by class,
#     refusals by LIMITED, handshakes by TLS_RESULTS.
_CLAIMED = struct.Struct("=iIddBxxxI")
_LIVE = struct.Struct(
    "=QQ" + "Q" * len(CODE_CLASSES) + "I4x" + "Q" * len(LIMITED) + "Q" * len(TLS_RESULTS)
)
_RETIRED = struct.Struct(
    "=Q" + "Q" * len(CODE_CLASSES) + "Q" * len(LIMITED) + "Q" * len(TLS_RESULTS)
)
_CLASSES_END = 1 + len(CODE_CLASSES)  # in _RETIRED: bytes, classes, then LIMITED
_LIVE_OFFSET = _CLAIMED.size
_RETIRED_OFFSET = _LIVE_OFFSET + _LIVE.size
SLOT_SIZE = _RETIRED_OFFSET + _RETIRED.size
_BEAT_OFFSET = struct.calcsize("=iI")
_STATE_OFFSET = struct.calcsize("=iIdd")
_LIVE_BYTES = bytes(_LIVE.size)
_RETIRED_ZERO = bytes(_RETIRED.size)


@dataclass(frozen=True, slots=True)
class SlotView:
    index: int
    pid: int
    generation: int
    state: SlotState
    heartbeat: float
    started: float
    restarts: int
    requests: int
    bytes_sent: int
    by_class: tuple[int, ...]  # this worker's responses by status class, 1xx..5xx
    connections: int
    retired_bytes_sent: int  # workers that ended in this slot
    retired_by_class: tuple[int, ...]
    limited: tuple[int, ...] = (0,) * len(LIMITED)  # this worker's, by LIMITED
    retired_limited: tuple[int, ...] = (0,) * len(LIMITED)
    tls: tuple[int, ...] = (0,) * len(TLS_RESULTS)  # this worker's handshakes, by TLS_RESULTS
    retired_tls: tuple[int, ...] = (0,) * len(TLS_RESULTS)


@dataclass(frozen=True, slots=True)
class MasterView:
    pid: int
    generation: int
    workers_configured: int
    workers_wanted: int
    start_time: float
    restarts: dict[str, int]  # by RESTART_REASONS


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole scoreboard, consistent with respect to folds."""

    master: MasterView
    slots: list[SlotView]  # every slot ever used: live ones and those with retired counts


def _slot_from(data: bytes | mmap.mmap, index: int) -> SlotView:
    base = HEADER_SIZE + index * SLOT_SIZE
    pid, generation, heartbeat, started, state, restarts = _CLAIMED.unpack_from(data, base)
    live = _LIVE.unpack_from(data, base + _LIVE_OFFSET)
    retired = _RETIRED.unpack_from(data, base + _RETIRED_OFFSET)
    live_classes_end = 2 + len(CODE_CLASSES)
    live_limited_end = live_classes_end + 1 + len(LIMITED)
    retired_limited_end = _CLASSES_END + len(LIMITED)
    return SlotView(
        index, pid, generation, SlotState(state), heartbeat, started, restarts,
        live[0], live[1], live[2:live_classes_end], live[live_classes_end],
        retired[0], retired[1:_CLASSES_END], live[live_classes_end + 1 : live_limited_end],
        retired[_CLASSES_END:retired_limited_end], live[live_limited_end:],
        retired[retired_limited_end:],
    )


class Scoreboard:
    def __init__(self, slots: int = SLOT_COUNT) -> None:
        self.slots = slots
        self.memory = mmap.mmap(-1, HEADER_SIZE + slots * SLOT_SIZE, flags=mmap.MAP_SHARED)

    def _base(self, index: int) -> int:
        return HEADER_SIZE + index * SLOT_SIZE

    # -- master side -------------------------------------------------------------
    def publish_master(
        self, pid: int, generation: int, configured: int, wanted: int, start_time: float
    ) -> None:
        struct.pack_into("=iIIId", self.memory, 0, pid, generation, configured, wanted,
                         start_time)

    def claim(self, generation: int, restarts: int = 0) -> int:
        """Reserve a free slot for a worker about to be forked; -1 when full."""
        for index in range(self.slots):
            base = self._base(index)
            if self.memory[base + _STATE_OFFSET] == SlotState.FREE:
                _CLAIMED.pack_into(
                    self.memory, base, 0, generation, time.monotonic(), time.time(),
                    SlotState.BOOTING, restarts,
                )
                return index
        return -1

    def set_pid(self, index: int, pid: int) -> None:
        struct.pack_into("=i", self.memory, self._base(index), pid)

    def release(self, index: int, restart_reason: str | None = None) -> None:
        """Free a slot whose worker has ended, keeping its counts as retired.

        ``restart_reason`` (one of RESTART_REASONS) counts the end as a restart.
        """
        view = _slot_from(self.memory, index)
        base = self._base(index)
        sequence = struct.unpack_from("=Q", self.memory, _SEQUENCE_OFFSET)[0]
        struct.pack_into("=Q", self.memory, _SEQUENCE_OFFSET, sequence + 1)  # odd: folding
        _RETIRED.pack_into(
            self.memory, base + _RETIRED_OFFSET,
            view.retired_bytes_sent + view.bytes_sent,
            *(r + c for r, c in zip(view.retired_by_class, view.by_class, strict=True)),
            *(r + c for r, c in zip(view.retired_limited, view.limited, strict=True)),
            *(r + c for r, c in zip(view.retired_tls, view.tls, strict=True)),
        )
        self.memory[base + _LIVE_OFFSET : base + _RETIRED_OFFSET] = _LIVE_BYTES
        self.memory[base : base + _CLAIMED.size] = bytes(_CLAIMED.size)
        if restart_reason is not None:
            offset = _RESTARTS_OFFSET + 8 * RESTART_REASONS.index(restart_reason)
            count = struct.unpack_from("=Q", self.memory, offset)[0]
            struct.pack_into("=Q", self.memory, offset, count + 1)
        struct.pack_into("=Q", self.memory, _SEQUENCE_OFFSET, sequence + 2)

    def read(self, index: int) -> SlotView:
        return _slot_from(self.memory, index)

    # -- worker side -------------------------------------------------------------
    def set_state(self, index: int, state: SlotState) -> None:
        self.memory[self._base(index) + _STATE_OFFSET] = int(state)

    def beat(
        self, index: int, requests: int, bytes_sent: int, connections: int,
        by_class: tuple[int, int, int, int, int],
        limited: tuple[int, ...] = (0,) * len(LIMITED),
        tls: tuple[int, ...] = (0,) * len(TLS_RESULTS),
    ) -> None:
        base = self._base(index)
        struct.pack_into("=d", self.memory, base + _BEAT_OFFSET, time.monotonic())
        _LIVE.pack_into(self.memory, base + _LIVE_OFFSET, requests, bytes_sent, *by_class,
                        connections, *limited, *tls)

    # -- readers -------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Header and every used slot, never caught in the middle of a fold."""
        data = b""
        for _ in range(SNAPSHOT_ATTEMPTS):
            before = struct.unpack_from("=Q", self.memory, _SEQUENCE_OFFSET)[0]
            data = self.memory[:]
            after = struct.unpack_from("=Q", self.memory, _SEQUENCE_OFFSET)[0]
            if before == after and not before & 1:
                break
        fields = _HEADER.unpack_from(data, 0)
        master = MasterView(
            fields[0], fields[1], fields[2], fields[3], fields[4],
            dict(zip(RESTART_REASONS, fields[6:], strict=True)),
        )
        slots = []
        for index in range(self.slots):
            base = HEADER_SIZE + index * SLOT_SIZE
            # Cheap test first: most of the 1024 slots were never used.
            if data[base + _STATE_OFFSET] == SlotState.FREE and (
                data[base + _RETIRED_OFFSET : base + SLOT_SIZE] == _RETIRED_ZERO
            ):
                continue
            slots.append(_slot_from(data, index))
        return Snapshot(master, slots)
