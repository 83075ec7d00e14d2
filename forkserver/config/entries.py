"""Checks for mapping-valued keys (cache_control, headers, mime_types, error_pages).

Owns the rule for each entry and the reporting of every bad entry on its own line.
Must not read the file: entries arrive as plain values.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from forkserver.config.checks import (
    Check,
    Invalid,
    InvalidItems,
    InvalidKey,
    kind_of,
    show,
    wrong_type,
)

# -- mapping-valued keys: each entry checked on its own line ---------------------------

EntryCheck = Callable[[object, object], tuple[object, object]]


def mapping_of(check_entry: EntryCheck, expected: str) -> Check:
    """A mapping whose entries each pass ``check_entry`` → a tuple of pairs, in order.

    ``null`` (every entry commented out) is the empty mapping. Every bad entry is
    reported, each on its own line (InvalidItems), not just the first.
    """

    def check(value: object) -> object:
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise wrong_type(value, f"a mapping of {expected}")
        pairs: list[tuple[object, object]] = []
        problems: list[tuple[object, object, Invalid]] = []
        for name, item in value.items():
            try:
                pairs.append(check_entry(name, item))
            except Invalid as exc:
                problems.append((name, item, exc))
        if problems:
            raise InvalidItems(problems)
        return tuple(pairs)

    return check


# tchar (RFC 9110 §5.6.2): header names, media type parts, cache directives.
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
QUOTED_STRING = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
HEADER_NAME = re.compile(TOKEN)
# Values the worker writes as latin-1: visible ASCII, inner spaces and tabs only.
HEADER_VALUE = re.compile(r"[!-~](?:[ \t!-~]*[!-~])?")
CACHE_DIRECTIVE = rf"{TOKEN}(?:=(?:{TOKEN}|{QUOTED_STRING}))?"
CACHE_DIRECTIVES = re.compile(rf"{CACHE_DIRECTIVE}(?:[ \t]*,[ \t]*{CACHE_DIRECTIVE})*")
MEDIA_TYPE = re.compile(
    rf"{TOKEN}/{TOKEN}(?:[ \t]*;[ \t]*{TOKEN}=(?:{TOKEN}|{QUOTED_STRING}))*"
)
EXTENSION = re.compile(r"\.?[A-Za-z0-9_+\-]+")
# Fields the server computes itself: a fixed value would contradict or duplicate it.
MANAGED_HEADERS = {
    "accept-ranges": "", "age": "", "allow": "", "connection": "",
    "content-encoding": "", "content-length": "", "content-range": "",
    "content-type": " (use mime_types)", "date": "", "etag": "", "keep-alive": "",
    "last-modified": "", "location": "", "proxy-connection": "", "te": "", "trailer": "",
    "transfer-encoding": "", "upgrade": "", "vary": "",
    "cache-control": " (use cache_control)", "server": " (use server_tokens)",
    "x-content-type-options": " (always nosniff)",
}
# Statuses whose page may come from the docroot (error_pages).
ERROR_PAGE_STATUSES = (403, 404, 500)


def cache_control_rule(pattern: object, value: object) -> tuple[object, object]:
    if not isinstance(pattern, str) or not pattern or any(ord(c) < 32 for c in pattern):
        raise InvalidKey("is not a glob pattern such as '*.css' or '/assets/**'")
    if value is None:
        return pattern, None
    if not isinstance(value, str):
        raise wrong_type(value, "a Cache-Control value or null")
    if not CACHE_DIRECTIVES.fullmatch(value):
        raise Invalid(
            "is not a list of Cache-Control directives such as 'public, max-age=3600'"
        )
    return pattern, value


def extra_header(name: object, value: object) -> tuple[object, object]:
    if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
        raise InvalidKey("is not a header field name (letters, digits and !#$%&'*+-.^_`|~)")
    managed = MANAGED_HEADERS.get(name.lower())
    if managed is not None:
        raise InvalidKey(f"is a header forkserver sets itself{managed}")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise wrong_type(value, "a string")
    if not HEADER_VALUE.fullmatch(value):
        raise Invalid("is not a header value (visible ASCII, no leading or trailing blanks)")
    return name, value


def mime_type_override(extension: object, media_type: object) -> tuple[object, object]:
    if not isinstance(extension, str) or not EXTENSION.fullmatch(extension):
        raise InvalidKey("is not a file extension such as 'woff2' or '.woff2'")
    if not isinstance(media_type, str):
        raise wrong_type(media_type, "a media type")
    if not MEDIA_TYPE.fullmatch(media_type):
        raise Invalid("is not a media type such as 'text/plain' or 'text/plain; charset=utf-8'")
    return extension.lstrip(".").lower(), media_type


def error_page(status: object, path: object) -> tuple[object, object]:
    statuses = ", ".join(str(s) for s in ERROR_PAGE_STATUSES)
    if isinstance(status, bool) or not isinstance(status, int):
        raise InvalidKey(f"is {kind_of(status)}, expected one of the statuses {statuses}")
    if status not in ERROR_PAGE_STATUSES:
        raise InvalidKey(f"is not a status whose page can be set ({statuses})")
    if not isinstance(path, str):
        raise wrong_type(path, "a path in the docroot such as '/errors/404.html'")
    segments = path.split("/")
    if (
        not path.startswith("/")
        or any(not s or s.startswith(".") for s in segments[1:])
        or any(ord(c) < 32 for c in path)
    ):
        raise Invalid(
            "is not a file path in the docroot such as '/errors/404.html' (starting "
            "with /, no empty, '.', '..' or hidden segments)"
        )
    return status, path


def unique_names(check_entry: EntryCheck, fold: Callable[[object], object]) -> EntryCheck:
    """``check_entry``, refusing a name that repeats an earlier one once folded."""
    seen: dict[object, object] = {}

    def check(name: object, value: object) -> tuple[object, object]:
        normalized, checked = check_entry(name, value)
        folded = fold(normalized)
        if folded in seen and seen[folded] != name:
            raise InvalidKey(f"repeats {show(seen[folded])}")
        seen.setdefault(folded, name)
        return normalized, checked

    return check


def mapping_without_repeats(
    check_entry: EntryCheck, fold: Callable[[object], object], expected: str
) -> Check:
    """Like mapping_of, for names that repeat once folded (case, a leading dot)."""

    def check(value: object) -> object:
        return mapping_of(unique_names(check_entry, fold), expected)(value)

    return check


def lower_name(name: object) -> object:
    return name.lower() if isinstance(name, str) else name
