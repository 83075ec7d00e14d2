"""encoding/settings.py: the checks of ``compress:`` and ``etag:``, and type lists."""

from __future__ import annotations

import re

import pytest

from forkserver.encoding.settings import (
    DEFAULT_TYPES,
    CompressSettings,
    SettingProblem,
    TypeList,
    check_etag_mode,
    check_level,
    check_min_size,
    check_types,
)


def test_defaults_are_spec_10() -> None:
    settings = CompressSettings()
    assert settings == CompressSettings(False, DEFAULT_TYPES, 1024, 6)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["text/*"], ("text/*",)),
        (["Text/CSS", "application/json"], ("text/css", "application/json")),
        (["image/svg+xml"], ("image/svg+xml",)),
    ],
)
def test_types_accepted(value: list[str], expected: tuple[str, ...]) -> None:
    assert check_types(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("text/*", "is a string, expected a list"),
        ([], "is empty"),
        (["text"], "not 'type/subtype'"),
        (["*/*"], "not 'type/subtype' (only 'type/*'"),
        (["text/*css"], "only 'type/*'"),
        (["text/css; charset=utf-8"], "not 'type/subtype'"),
        ([1], "an integer entry"),
        (["text/css", "TEXT/CSS"], "twice"),
        (["a/b"] * 300, "at most"),
    ],
)
def test_types_refused(value: object, reason: str) -> None:
    with pytest.raises(SettingProblem, match=re.escape(reason)):
        check_types(value)


@pytest.mark.parametrize("value", [1, 6, 9])
def test_level_accepted(value: int) -> None:
    assert check_level(value) == value


@pytest.mark.parametrize(("value", "reason"), [
    (0, "out of range 1"), (10, "out of range"), (True, "a boolean"), ("6", "a string"),
    (6.0, "a number"), (None, "null"),
])
def test_level_refused(value: object, reason: str) -> None:
    with pytest.raises(SettingProblem, match=reason):
        check_level(value)


def test_min_size() -> None:
    assert check_min_size(0) == 0 and check_min_size(1024) == 1024
    with pytest.raises(SettingProblem, match="out of range"):
        check_min_size(-1)
    with pytest.raises(SettingProblem, match="a string"):
        check_min_size("1k")


def test_etag_mode() -> None:
    assert check_etag_mode("mtime") == "mtime" and check_etag_mode("content") == "content"
    with pytest.raises(SettingProblem, match="not one of mtime, content"):
        check_etag_mode("hash")
    with pytest.raises(SettingProblem, match="a boolean"):
        check_etag_mode(True)


@pytest.mark.parametrize(
    ("content_type", "listed"),
    [
        ("text/css; charset=utf-8", True),
        ("text/html", True),
        ("TEXT/Plain; charset=utf-8", True),
        ("application/javascript; charset=utf-8", True),
        ("application/json", True),
        ("image/svg+xml", True),
        ("image/png", False),
        ("application/octet-stream", False),
        ("application/jsonx", False),
        ("textual/css", False),
    ],
)
def test_type_list_matches_wildcards_and_ignores_parameters(
    content_type: str, listed: bool
) -> None:
    types = TypeList(DEFAULT_TYPES)
    assert types(content_type) is listed
    assert types(content_type) is listed  # the remembered answer
