"""forkserver.sites.rules and .redirects: the order of SPEC §8, and safe Locations."""

from __future__ import annotations

import pytest

from forkserver.config.htpasswd import Htpasswd
from forkserver.config.model import AuthSetting, RuleSetting
from forkserver.config.redirects import TemplateProblem, compile_template, rest_offset
from forkserver.sites.rules import NOTHING, Rules

STAFF = AuthSetting("Staff", "/etc/staff", Htpasswd("/etc/staff", {}))


def rules(*settings: RuleSetting) -> Rules:
    return Rules(list(settings))


def test_no_match_is_nothing() -> None:
    some = rules(RuleSetting("/old/**", redirect="/new/{rest}"))
    assert some.decide("/other", "", "127.0.0.1") is NOTHING
    assert some.decide("*", "", "127.0.0.1") is NOTHING  # OPTIONS *
    assert some.decide("", "", "127.0.0.1") is NOTHING  # CONNECT


@pytest.mark.parametrize(("template", "path", "query", "location"), [
    ("/new/{rest}{query}", "/old/a/b.html", "", "/new/a/b.html"),
    ("/new/{rest}{query}", "/old/a%20b", "x=1&y=%0d", "/new/a%20b?x=1&y=%0d"),
    ("/n{path}", "/old/x", "", "/n/old/x"),
    ("https://example.org{path}{query}", "/old/x", "q", "https://example.org/old/x?q"),
    # Characters a request-target may carry but a URI may not are escaped, never decoded.
    ("/new/{rest}", '/old/"<script>', "", "/new/%22%3Cscript%3E"),
    ("/new/{rest}{query}", "/old/a", '"><x>', "/new/a?%22%3E%3Cx%3E"),
    ("/new/{rest}", "/old/a\\b", "", "/new/a%5Cb"),
    ("/new/{rest}", "/old/%0d%0aSet-Cookie:x", "", "/new/%0d%0aSet-Cookie:x"),
    # Never another host: "//evil.example" keeps one slash.
    ("/{rest}", "/old//evil.example", "", "/evil.example"),
    ("/{rest}", "/old///evil.example", "", "/evil.example"),
    ("/{path}", "/old/x", "", "/old/x"),
])
def test_redirect_locations(template: str, path: str, query: str, location: str) -> None:
    decision = rules(RuleSetting("/old/**", redirect=template, status=308)).decide(
        path, query, "127.0.0.1")
    assert decision.redirect == (308, location)
    assert not any(c in location for c in ' \r\n<>"\\')


@pytest.mark.parametrize("template", [
    "", "new/{rest}", "//evil.example/{rest}", "/x/{host}", "/x/{rest", "/x/}",
    "/a b", "/a\r\nb", "/a<b", "https://{rest}", "https://example.org{rest}",
    "https://example.org{query}{rest}", "https://user@example.org/", "ftp://x/",
    "https:///x",
])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateProblem):
        compile_template(template)


@pytest.mark.parametrize(("pattern", "offset"), [
    ("/old/**", 5), ("/old/*", 5), ("old/**", 5), ("/a?c/*", 5), ("/[ab]/**", 3),
    ("*.html", None), ("/a/*/b/**", None), ("/old/x", None), ("/**", 1),
])
def test_rest_offset(pattern: str, offset: int | None) -> None:
    assert rest_offset(pattern) == offset


def test_rest_needs_a_trailing_only_star() -> None:
    with pytest.raises(ValueError):
        rules(RuleSetting("*.html", redirect="/x/{rest}"))


def test_first_rule_of_each_kind_applies_and_all_headers_add() -> None:
    some = rules(
        RuleSetting("/a/**", headers=(("X-One", "1"),)),
        RuleSetting("/a/**", redirect="/first{path}", status=302),
        RuleSetting("/a/b/**", redirect="/second{path}"),
        RuleSetting("*.woff2", headers=(("Access-Control-Allow-Origin", "*"),)),
        RuleSetting("/a/**", fallback="/a/index.html"),
        RuleSetting("/a/**", fallback="/other.html"),
    )
    decision = some.decide("/a/b/font.woff2", "", "127.0.0.1")
    assert decision.redirect == (302, "/first/a/b/font.woff2")
    assert decision.fallback == "/a/index.html"
    assert decision.headers == (("X-One", "1"), ("Access-Control-Allow-Origin", "*"))
    assert some.decide("/c/font.woff2", "", "::1").headers == (
        ("Access-Control-Allow-Origin", "*"),)


def test_allow_before_everything() -> None:
    some = rules(
        RuleSetting("/private/**", allow=("10.0.0.0/8", "::1/128")),
        RuleSetting("/private/**", auth=STAFF),
        RuleSetting("/private/**", redirect="/x", headers=(("X-H", "v"),)),
    )
    refused = some.decide("/private/a", "", "192.0.2.1")
    assert refused.refused and refused.redirect is None and refused.guard is None
    assert refused.headers == (("X-H", "v"),)
    for client in ("10.1.2.3", "::1", "::ffff:10.0.0.1"):
        allowed = some.decide("/private/a", "", client)
        assert not allowed.refused
        assert allowed.guard is not None and allowed.guard.realm == "Staff"
        assert allowed.redirect == (301, "/x")  # applied only once the guard passes
    assert some.decide("/private/a", "", "-").refused  # a unix socket peer: no address


def test_memory_is_bounded_and_right() -> None:
    some = rules(RuleSetting("/a/*", redirect="/b/{rest}"))
    for i in range(10_000):
        assert some.decide(f"/a/{i}", "", "127.0.0.1").redirect == (301, f"/b/{i}")
    assert len(some._memory) <= 4096
    long = "/a/" + "x" * 5000
    assert some.decide(long, "", "127.0.0.1").redirect == (301, "/b/" + "x" * 5000)


def test_hostile_globs_stay_linear() -> None:
    # The cache_control matcher's guarantee carries over: "*a*a*a*b" on "/aaaa…".
    some = rules(RuleSetting("*a*a*a*a*b", headers=(("X", "y"),)),
                 RuleSetting("/**a**a**a**b", redirect="/z"))
    assert some.decide("/" + "a" * 20_000, "", "127.0.0.1") is NOTHING


def test_a_constant_decision_is_remembered_whole() -> None:
    """A path whose decision depends on neither client nor query is remembered as the
    Decision itself, its headers encoded once; allow and redirect stay per request."""
    some = rules(RuleSetting("*.css", headers=(("X-A", "1"),)),
                 RuleSetting("/a/**", headers=(("X-B", "2"),)),
                 RuleSetting("/old/**", redirect="/new/{rest}{query}"))
    first = some.decide("/a/x.css", "", "127.0.0.1")
    assert first.direct and first.headers == (("X-A", "1"), ("X-B", "2"))
    assert first.encoded == b"X-A: 1\r\nX-B: 2\r\n"
    assert some.decide("/a/x.css", "q", "192.0.2.1") is first
    moved = some.decide("/old/x.css", "q=1", "127.0.0.1")
    assert not moved.direct and moved.redirect == (301, "/new/x.css?q=1")
    assert moved.headers == (("X-A", "1"),)
