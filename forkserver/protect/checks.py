"""Value checks of the SPEC §9 keys, in the config package's style.

Owns turning YAML values of ``limits.connections_per_client``,
``limits.requests_per_second``, ``limits.burst``, ``limits.exempt``,
``limits.min_send_rate`` and ``worker_memory_limit`` into the values of
``Protection``, and the one rule that spans two keys. Each check returns the
normalized value or raises the config package's ``Invalid``, whose reason completes
the sentence "KEY: VALUE …". Must not read files or the system.
"""

from __future__ import annotations

import math

from forkserver.config.checks import Check, Invalid, network_list, wrong_type
from forkserver.protect.clients import COUNT_MAX
from forkserver.protect.memory import MIN_LIMIT, parse_size

MAX_RATE = 1_000_000.0  # requests per second per client: beyond it, no limit at all
MAX_BURST = 1_000_000
MAX_SEND_RATE = 2**40  # bytes/s: a terabyte a second is no minimum anyone means



def connections_per_client(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(value, "an integer (0 = off)")
    if not 0 <= value <= COUNT_MAX:
        raise Invalid(f"is out of range 0\u2013{COUNT_MAX} (0 = off)")
    return value


def requests_per_second(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(value, "a number of requests per second (0 = off)")
    if not math.isfinite(value) or not 0 <= value <= MAX_RATE:
        raise Invalid(f"is out of range (must be ≥ 0 and ≤ {MAX_RATE:g}; 0 = off)")
    return float(value)


def burst(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(value, "an integer number of requests")
    if not 0 <= value <= MAX_BURST:
        raise Invalid(f"is out of range 0\u2013{MAX_BURST}")
    return value


exempt: Check = network_list(None)


def _size(value: object, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise wrong_type(value, expected)
    if isinstance(value, int):
        return value
    try:
        return parse_size(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def min_send_rate(value: object) -> object:
    """Bytes per second: an integer, or a size such as '1KiB' (per second)."""
    rate = _size(value, "bytes per second, such as 1024 or '1KiB' (0 = off)")
    if not 0 <= rate <= MAX_SEND_RATE:
        raise Invalid(f"is out of range (must be ≥ 0 and ≤ {MAX_SEND_RATE} bytes/s; 0 = off)")
    return rate


def worker_memory_limit(value: object) -> object:
    """null (no cap), or a size: '512MiB', '1GiB', or an integer number of bytes."""
    if value is None:
        return None
    limit = _size(value, "a size such as '512MiB' or null")
    if limit < MIN_LIMIT:
        raise Invalid(f"is too small (must be ≥ {MIN_LIMIT // 1024 // 1024}MiB, or null)")
    return limit


def cross_key_problems(rate: float, burst_size: int) -> list[str]:
    """SPEC §9: ``burst`` without a rate is a configuration error, not a silent no-op."""
    if burst_size and not rate:
        return [
            f"limits.burst: {burst_size} needs limits.requests_per_second "
            "(a burst is the extra requests a rate allows at once)"
        ]
    return []
