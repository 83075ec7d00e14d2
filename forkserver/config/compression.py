"""The checks of ``compress:`` and ``etag:`` (SPEC §10), as the schema takes them.

Owns the adapter between the pure checks of ``forkserver.encoding.settings`` (which
raise ``SettingProblem`` and cannot import this package: the model imports them) and
the schema's ``Invalid``, so their messages get the file:line like every other key.
Must not read files or the live system.
"""

from __future__ import annotations

from collections.abc import Callable

from forkserver.config.checks import Check, Invalid
from forkserver.encoding.settings import (
    SettingProblem,
    check_etag_mode,
    check_level,
    check_min_size,
    check_types,
)

__all__ = ["compress_level", "compress_min_size", "compress_types", "etag_mode"]


def _adapted(check: Callable[[object], object]) -> Check:
    def adapted(value: object) -> object:
        try:
            return check(value)
        except SettingProblem as problem:
            raise Invalid(problem.reason) from None

    return adapted


compress_types = _adapted(check_types)
compress_min_size = _adapted(check_min_size)
compress_level = _adapted(check_level)
etag_mode = _adapted(check_etag_mode)
