"""The settings of SPEC §9 (``limits.*`` protection keys and ``worker_memory_limit``).

Owns the frozen values the worker and the master read; their checks from YAML values
live in ``protect.checks``. Must not read files or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# Averaged over this long, and judged only once a response has been sending this long
# (SPEC §9): shorter windows would reset clients on an ordinary congestion stall.
SEND_RATE_WINDOW_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Protection:
    """What SPEC §9 configures; every limit's 0 (or None) means off."""

    connections_per_client: int = 0  # open connections per client address, all workers
    requests_per_second: float = 0.0  # token bucket refill per client
    burst: int = 0  # extra requests allowed at once: the bucket holds burst + 1
    exempt: tuple[str, ...] = ()  # normalized networks no per-client limit applies to
    min_send_rate: int = 0  # bytes/s, averaged over SEND_RATE_WINDOW_SECONDS
    worker_memory_limit: int | None = None  # resident bytes; None = no cap

    @property
    def per_client(self) -> bool:
        """Whether any limit needs the shared client table."""
        return bool(self.connections_per_client or self.requests_per_second)
