"""Settings of content codings and validators (SPEC §10): ``compress:`` and ``etag:``.

Owns the frozen values the static site reads and the pure checks that turn YAML
values into them. Must not read files, import the config package (which imports
this module) or know about requests: the config package wraps each check, turning
``SettingProblem`` into its own ``Invalid`` with the file:line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TYPES",
    "ETAG_MODES",
    "CompressSettings",
    "SettingProblem",
    "TypeList",
    "check_etag_mode",
    "check_level",
    "check_min_size",
    "check_types",
]

# The types worth compressing by default: text and the text-like application types.
# Images other than SVG, fonts, archives and video are compressed already.
DEFAULT_TYPES: tuple[str, ...] = (
    "text/*", "application/javascript", "application/json", "image/svg+xml",
)
ETAG_MODES: tuple[str, ...] = ("mtime", "content")
MIN_LEVEL, MAX_LEVEL = 1, 9  # zlib's levels (0 stores without compressing: pointless)
# A min_size below this makes no sense: gzip's own framing is 18 bytes, and a body of
# a few dozen bytes is larger once compressed.
MIN_MIN_SIZE = 0
MAX_MIN_SIZE = 1 << 40
MAX_TYPES = 256  # a list longer than this is a mistake, and each entry costs a test
# type/subtype as RFC 9110 §8.3.1 spells it, or type/* (the only wildcard accepted):
# tokens without "*", which no registered media type uses.
_TOKEN = r"[!#$%&'+\-.^_`|~0-9A-Za-z]++"
_TYPE_PATTERN = re.compile(rf"{_TOKEN}/(?:\*|{_TOKEN})")


class SettingProblem(ValueError):
    """A value broke a rule; ``reason`` completes the sentence "KEY: VALUE …"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CompressSettings:
    """``compress:``: on-the-fly gzip of listed types from ``min_size`` bytes up."""

    gzip: bool = False
    types: tuple[str, ...] = DEFAULT_TYPES
    min_size: int = 1024
    level: int = 6


class TypeList:
    """Whether a Content-Type is listed: exact ``type/subtype`` or ``type/*``.

    Parameters (``; charset=utf-8``) and case are ignored (RFC 9110 §8.3.1: type and
    subtype are case-insensitive). Answers are kept per Content-Type value: a site
    has a few dozen types, and the table of types is fixed per site.
    """

    __slots__ = ("_answers", "_exact", "_prefixes")

    def __init__(self, types: tuple[str, ...]) -> None:
        self._exact = frozenset(t.lower() for t in types if not t.endswith("/*"))
        self._prefixes = tuple(t[:-1].lower() for t in types if t.endswith("/*"))
        self._answers: dict[str, bool] = {}

    def __call__(self, content_type: str) -> bool:
        answer = self._answers.get(content_type)
        if answer is None:
            bare = content_type.partition(";")[0].strip().lower()
            answer = bare in self._exact or bare.startswith(self._prefixes)
            if len(self._answers) < MAX_TYPES * 4:
                self._answers[content_type] = answer
        return answer


def check_types(value: object) -> tuple[str, ...]:
    """``compress.types``: a non-empty list of ``type/subtype`` or ``type/*``."""
    if not isinstance(value, list):
        raise SettingProblem(f"is {_kind(value)}, expected a list of media types")
    if not value:
        raise SettingProblem("is empty (set compress.gzip: false to compress nothing)")
    if len(value) > MAX_TYPES:
        raise SettingProblem(f"has {len(value)} entries (at most {MAX_TYPES})")
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str):
            raise SettingProblem(f"has {_kind(item)} entry, expected 'type/subtype'")
        if not _TYPE_PATTERN.fullmatch(item):
            hint = " (only 'type/*' may use a wildcard)" if "*" in item else ""
            raise SettingProblem(f"has {item!r}, which is not 'type/subtype'{hint}")
        if item.lower() in seen:
            raise SettingProblem(f"lists {item!r} twice")
        seen.add(item.lower())
    return tuple(item.lower() for item in value)


def check_level(value: object) -> int:
    """``compress.level``: zlib's 1 (fastest) to 9 (smallest)."""
    return _integer(value, MIN_LEVEL, MAX_LEVEL)


def check_min_size(value: object) -> int:
    """``compress.min_size``: bytes; smaller files are sent as they are."""
    return _integer(value, MIN_MIN_SIZE, MAX_MIN_SIZE)


def check_etag_mode(value: object) -> str:
    """``etag``: ``mtime`` (inode, size, mtime) or ``content`` (a hash of the bytes)."""
    if not isinstance(value, str):
        raise SettingProblem(f"is {_kind(value)}, expected one of " + ", ".join(ETAG_MODES))
    if value not in ETAG_MODES:
        raise SettingProblem("is not one of " + ", ".join(ETAG_MODES))
    return value


def _integer(value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingProblem(f"is {_kind(value)}, expected an integer")
    if not minimum <= value <= maximum:
        raise SettingProblem(f"is out of range {minimum}\N{EN DASH}{maximum}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, words in ((str, "a string"), (int, "an integer"), (float, "a number"),
                        (list, "a list"), (dict, "a mapping")):
        if isinstance(value, kind):
            return words
    return f"a {type(value).__name__}"
