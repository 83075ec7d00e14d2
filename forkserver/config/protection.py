"""The protection keys of SPEC §9: their value checks, sizes, and the one cross-key rule.

Owns turning YAML values of ``limits.connections_per_client``,
``limits.requests_per_second``, ``limits.burst``, ``limits.exempt``,
``limits.min_send_rate`` and ``worker_memory_limit`` into the values of the model
(``Limits``, ``Config.worker_memory_limit``), the size syntax ("512MiB") and "burst
needs a rate". Each check returns the normalized value or raises ``Invalid``, whose
reason completes the sentence "KEY: VALUE …". Must not read files or the system;
what the values do is forkserver/protect/'s business.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from forkserver.config.checks import Check, Invalid, network_list, wrong_type

if TYPE_CHECKING:
    from forkserver.config.schema import Origin, Problem

# The shared client table counts each worker's connections of a client in 16 bits.
MAX_CONNECTIONS_PER_CLIENT = 0xFFFF
# The smallest memory limit accepted: a Python worker needs several MiB to start at
# all (a limit a fresh worker exceeds is still reported at run time).
MIN_MEMORY_LIMIT = 1024 * 1024
_UNITS = {
    "": 1, "B": 1,
    "K": 1024, "KiB": 1024, "kB": 1000, "KB": 1000,
    "M": 1024**2, "MiB": 1024**2, "MB": 1000**2,
    "G": 1024**3, "GiB": 1024**3, "GB": 1000**3,
    "T": 1024**4, "TiB": 1024**4, "TB": 1000**4,
}
# Bounded repetitions: linear in the value, as every parser of outside text here.
_SIZE = re.compile(r"([0-9]{1,15})(?:\.([0-9]{1,6}))? ?([A-Za-z]{0,3})")


def parse_size(text: str) -> int:
    """``"512MiB"`` → bytes. Binary (KiB, MiB, GiB, TiB, and K, M, G, T as nginx
    reads them) and decimal (kB, MB, GB, TB) units; ValueError says what is wrong."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or match.group(3) not in _UNITS:
        raise ValueError(
            "is not a size such as '512MiB', '2GiB' or '300MB' "
            f"(units: {', '.join(u for u in _UNITS if u)})"
        )
    whole, fraction, unit = match.groups()
    scale = int(10 ** len(fraction or ""))  # "1.5GiB": 15 tenths of a GiB
    return (int(whole) * scale + int(fraction or "0")) * _UNITS[unit] // scale


MAX_RATE = 1_000_000.0  # requests per second per client: beyond it, no limit at all
MAX_BURST = 1_000_000
MAX_SEND_RATE = 2**40  # bytes/s: a terabyte a second is no minimum anyone means



def connections_per_client(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(value, "an integer (0 = off)")
    if not 0 <= value <= MAX_CONNECTIONS_PER_CLIENT:
        raise Invalid(f"is out of range 0\u2013{MAX_CONNECTIONS_PER_CLIENT} (0 = off)")
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
    if limit < MIN_MEMORY_LIMIT:
        raise Invalid(f"is too small (must be ≥ {MIN_MEMORY_LIMIT // 1024 // 1024}MiB, or null)")
    return limit


def burst_problem(
    values: Mapping[str, object], origins: Mapping[str, Origin]
) -> Problem | None:
    """SPEC §9: ``burst`` without a rate is a configuration error, not a silent no-op."""
    burst_size, rate = values["limits.burst"], values["limits.requests_per_second"]
    if not burst_size or rate:
        return None
    return origins["limits.burst"].problem(
        burst_size, "needs limits.requests_per_second (a burst is the extra requests a "
        "rate allows at once)"
    )
