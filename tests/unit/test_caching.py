"""caching.py: Cache-Control rules by glob, first match wins, "no-cache" last."""

from __future__ import annotations

import pytest

from forkserver.static.caching import CacheRules

IMMUTABLE = "public, max-age=31536000, immutable"

GLOBS: list[tuple[str, str, bool]] = [
    ("*.css", "/site.css", True),
    ("*.css", "/css/deep/site.css", True),  # no "/": the file name, anywhere
    ("*.css", "/site.css.map", False),
    ("*.css", "/site.CSS", False),  # case-sensitive, like the filesystem
    ("site.css", "/a/site.css", True),
    ("/site.css", "/a/site.css", False),  # a "/" anchors at the docroot
    ("/assets/*", "/assets/app.js", True),
    ("/assets/*", "/assets/img/logo.png", False),  # "*" stops at "/"
    ("/assets/**", "/assets/img/logo.png", True),
    ("assets/**", "/assets/img/logo.png", True),  # the leading "/" is optional
    ("/assets/**", "/other/assets/x", False),
    ("**/*.min.js", "/a/b/c.min.js", True),
    ("?.txt", "/a.txt", True),
    ("?.txt", "/ab.txt", False),
    ("[ab].txt", "/b.txt", True),
    ("[!ab].txt", "/b.txt", False),
    ("[!ab].txt", "/c.txt", True),
    ("[a-c]*.js", "/beta.js", True),
    ("[.txt", "/[.txt", True),  # an unclosed class is literal
    ("a+b(c).txt", "/a+b(c).txt", True),  # regex characters are literal
    ("*", "/anything/at/all", True),
    ("*", "/dir/", True),  # a listing's path
    ("*.html", "/dir/", False),
]


@pytest.mark.parametrize(("pattern", "path", "matches"), GLOBS)
def test_glob_syntax(pattern: str, path: str, matches: bool) -> None:
    rules = CacheRules([(pattern, "matched"), ("*", None)])
    assert (rules(path) == "matched") is matches


def test_first_match_wins_in_the_order_written() -> None:
    rules = CacheRules([("/assets/**", IMMUTABLE), ("*.css", "max-age=60")])
    assert rules("/assets/site.css") == IMMUTABLE
    assert rules("/site.css") == "max-age=60"


def test_unmatched_files_get_no_cache() -> None:
    rules = CacheRules([("*.css", IMMUTABLE)])
    assert rules("/index.html") == "no-cache"
    assert CacheRules([])("/index.html") == "no-cache"


def test_null_sends_nothing_and_a_catch_all_replaces_the_default() -> None:
    rules = CacheRules([("*.css", None), ("*", "max-age=5")])
    assert rules("/site.css") is None
    assert rules("/index.html") == "max-age=5"
    assert CacheRules([("*", None)])("/index.html") is None
