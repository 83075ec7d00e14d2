"""The scoreboard: one fixed slot per worker in anonymous shared memory.

Owns the slot layout and the read/write helpers. The master creates it before any
fork; each worker writes only its own slot; the master reads them all (heartbeats,
readiness, status). No files, no locks, no syscalls per write: a torn read of a
counter is harmless, and each field is written by exactly one process.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass
from enum import IntEnum

# Enough for many TTIN steps plus a whole second generation during a reload.
SLOT_COUNT = 1024


class SlotState(IntEnum):
    FREE = 0
    BOOTING = 1  # forked, not yet accepting
    SERVING = 2  # accepting connections
    DRAINING = 3  # stopped accepting, finishing in-flight responses


# pid, generation, state, heartbeat (CLOCK_MONOTONIC, shared by all processes),
# started (wall clock), requests, bytes sent, open connections.
_LAYOUT = struct.Struct("=iIBxxxddQQI4x")
SLOT_SIZE = _LAYOUT.size
_PID, _GEN, _STATE, _BEAT, _STARTED, _REQUESTS, _BYTES, _CONNS = range(8)
_STATE_OFFSET = struct.calcsize("=iI")
_BEAT_OFFSET = struct.calcsize("=iIBxxx")
_COUNTERS = struct.Struct("=QQI")
_COUNTERS_OFFSET = struct.calcsize("=iIBxxxdd")


@dataclass(frozen=True, slots=True)
class SlotView:
    index: int
    pid: int
    generation: int
    state: SlotState
    heartbeat: float
    started: float
    requests: int
    bytes_sent: int
    connections: int


class Scoreboard:
    def __init__(self, slots: int = SLOT_COUNT) -> None:
        self.slots = slots
        self.memory = mmap.mmap(-1, slots * SLOT_SIZE, flags=mmap.MAP_SHARED)

    # -- master side -------------------------------------------------------------
    def claim(self, generation: int) -> int:
        """Reserve a free slot for a worker about to be forked; -1 when full."""
        for index in range(self.slots):
            if self.memory[index * SLOT_SIZE + _STATE_OFFSET] == SlotState.FREE:
                _LAYOUT.pack_into(
                    self.memory, index * SLOT_SIZE,
                    0, generation, SlotState.BOOTING, time.monotonic(), time.time(), 0, 0, 0,
                )
                return index
        return -1

    def set_pid(self, index: int, pid: int) -> None:
        struct.pack_into("=i", self.memory, index * SLOT_SIZE, pid)

    def release(self, index: int) -> None:
        self.memory[index * SLOT_SIZE : (index + 1) * SLOT_SIZE] = bytes(SLOT_SIZE)

    def read(self, index: int) -> SlotView:
        fields = _LAYOUT.unpack_from(self.memory, index * SLOT_SIZE)
        return SlotView(
            index, fields[_PID], fields[_GEN], SlotState(fields[_STATE]), fields[_BEAT],
            fields[_STARTED], fields[_REQUESTS], fields[_BYTES], fields[_CONNS],
        )

    # -- worker side -------------------------------------------------------------
    def set_state(self, index: int, state: SlotState) -> None:
        self.memory[index * SLOT_SIZE + _STATE_OFFSET] = int(state)

    def beat(self, index: int, requests: int, bytes_sent: int, connections: int) -> None:
        base = index * SLOT_SIZE
        struct.pack_into("=d", self.memory, base + _BEAT_OFFSET, time.monotonic())
        _COUNTERS.pack_into(self.memory, base + _COUNTERS_OFFSET, requests, bytes_sent,
                            connections)
