"""forkserver.config.sites: rules and site names from YAML, every problem at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkserver.config import load_config
from forkserver.config.model import AuthSetting, RuleSetting
from forkserver.config.sites import NameProblem, check_rules, config_name, site_names
from forkserver.errors import ConfigError


def line_of(path: tuple[object, ...]) -> int:
    """Rule i at line 10*(i+1); each key one line further in."""
    if not path:
        return 1
    return 10 * (int(str(path[0])) + 1) + (1 if len(path) > 1 else 0)


def test_every_rule_kind() -> None:
    rules, problems = check_rules([
        {"match": "/old/**", "redirect": "/new/{rest}{query}", "status": 308},
        {"match": "/app/**", "fallback": "/app/index.html"},
        {"match": "/private/**", "allow": ["10.0.0.0/8", "::1"]},
        {"match": "/staff/**", "auth": {"realm": "Staff", "htpasswd": "staff.htpasswd"}},
        {"match": "*.woff2", "headers": {"Access-Control-Allow-Origin": "*"}},
    ], "rules", line_of, "/etc/forkserver")
    assert problems == []
    assert rules == (
        RuleSetting("/old/**", redirect="/new/{rest}{query}", status=308, line=10),
        RuleSetting("/app/**", fallback="/app/index.html", line=20),
        RuleSetting("/private/**", allow=("10.0.0.0/8", "::1/128"), line=30),
        RuleSetting("/staff/**", auth=AuthSetting("Staff", "/etc/forkserver/staff.htpasswd"),
                    line=40),
        RuleSetting("*.woff2", headers=(("Access-Control-Allow-Origin", "*"),), line=50),
    )


@pytest.mark.parametrize(("rule", "expected"), [
    ({"match": "/a"}, "10: rules[0]: does nothing"),
    ({"redirect": "/x"}, "10: rules[0]: has no match"),
    ({"match": 3, "redirect": "/x"}, "11: rules[0].match: 3 is not a glob"),
    ({"match": "/a", "redirect": "/x y"}, "11: rules[0].redirect: '/x y' has characters"),
    ({"match": "/a", "redirect": "//evil.example"}, "11: rules[0].redirect: "),
    ({"match": "*.html", "redirect": "/x/{rest}"}, "uses {rest}, which needs"),
    ({"match": "/a", "redirect": "/x", "status": 200}, "rules[0].status: 200 is not one of"),
    ({"match": "/a", "headers": {"X": "1"}, "status": 301}, "is only for a redirect"),
    ({"match": "/a", "fallback": "/../etc/passwd"}, "must name a file plainly"),
    ({"match": "/a", "fallback": "index.html"}, "is not a path in the docroot"),
    ({"match": "/a", "allow": ["10.0.0.1/8"]}, "11: rules[0].allow[0]: '10.0.0.1/8' has host"),
    ({"match": "/a", "allow": []}, "is not a non-empty list"),
    ({"match": "/a", "auth": {"realm": 'a"b', "htpasswd": "x"}}, "rules[0].auth.realm"),
    ({"match": "/a", "auth": {"realm": "a"}}, "exactly realm and htpasswd"),
    ({"match": "/a", "headers": {"Content-Length": "1"}}, "sets itself"),
    ({"match": "/a", "headers": {"X-A": "a\x01"}}, "is not a header value"),
    ({"match": "/a", "redirekt": "/x"}, "unknown key 'redirekt'"),
    ("just a string", "10: rules[0]: 'just a string' is a string"),
])
def test_problems_name_the_rule_and_line(rule: object, expected: str) -> None:
    rules, problems = check_rules([rule], "rules", line_of, "/")
    assert rules == ()
    assert any(expected in f"{line}: {text}" for line, text in problems), problems


def test_every_problem_is_reported() -> None:
    _, problems = check_rules([
        {"match": "/a", "redirect": "/x y"},
        {"match": "/b", "allow": ["nope"]},
        {"match": "/c", "fallback": "x"},
    ], "sites[1].rules", line_of, "/")
    assert [line for line, _ in problems] == [11, 21, 31]
    assert all(text.startswith("sites[1].rules[") for _, text in problems)


def test_not_a_list() -> None:
    _, problems = check_rules({"match": "/a"}, "rules", line_of, "/")
    assert problems and "expected a list of rules" in problems[0][1]


def test_site_names() -> None:
    problems: list[tuple[int, str]] = []
    assert site_names(["Example.org", "*.Example.net"], "sites[0]", line_of, problems) == (
        "example.org", "*.example.net")
    assert site_names(["ok.org", "bad name", 3], "sites[0]", line_of, problems) == ("ok.org",)
    assert [text.split(":")[0] for _, text in problems] == [
        "sites[0].names[1]", "sites[0].names[2]"]


@pytest.mark.parametrize(("value", "name"), [
    ("Example.ORG", "example.org"),
    ("www.example.org.", "www.example.org"),
    ("*.Example.net", "*.example.net"),
    ("_acme.example.org", "_acme.example.org"),
    ("10.0.0.1", "10.0.0.1"),
    ("[0::1]", "[::1]"),
    ("localhost", "localhost"),
])
def test_config_name_accepts(value: str, name: str) -> None:
    assert config_name(value) == name


@pytest.mark.parametrize("value", [
    "", " example.org", "*", "*.", "w*.example.org", "a.*.example.org", "example.org:80",
    "exa mple.org", "-a.example.org", "a-.example.org", "a..b", "x" * 64 + ".org",
    "[::1", "[v1.x]", "ex\u00e4mple.org", "a/b",
])
def test_config_name_refuses(value: str) -> None:
    with pytest.raises(NameProblem):
        config_name(value)


def site_pages_config(tmp_path: Path) -> tuple[Path, Path]:
    """A top-level docroot with /404.html and a site docroot without it."""
    top, docs = tmp_path / "top", tmp_path / "docs"
    for root in (top, docs):
        root.mkdir()
    (top / "404.html").write_text("top")
    (docs / "500.html").write_text("docs")
    return top, docs


def test_a_sites_error_pages_are_checked_against_its_docroot(tmp_path: Path) -> None:
    top, docs = site_pages_config(tmp_path)
    path = tmp_path / "forkserver.yaml"
    path.write_text(
        f"docroot: {top}\n"  # 1
        "error_pages:\n"  # 2
        "  404: /404.html\n"  # 3
        "sites:\n"  # 4
        "  - names: [example.org]\n"  # 5
        "    error_pages:\n"  # 6
        "      500: /500.html\n"  # 7: not in the top docroot, which this site serves
        "  - names: [docs.example.org]\n"  # 8
        f"    docroot: {docs}\n"  # 9: inherits 404 → /404.html, not in docs/
        "  - names: [ok.example.org]\n"  # 10
        f"    docroot: {docs}\n"  # 11
        "    error_pages: {500: /500.html}\n"  # 12: there: fine
    )
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    problems = caught.value.problems
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{path}:7: sites[0].error_pages[500]: '/500.html' is not "
                                  f"a file in the docroot (looked for {top}/500.html)")
    assert problems[1].startswith(
        f"{path}:9: sites[1].error_pages[404] (inherited from the top level): '/404.html' "
        f"is not a file in the docroot (looked for {docs}/404.html)")


def test_sites_error_pages_in_their_docroots_load(tmp_path: Path) -> None:
    top, docs = site_pages_config(tmp_path)
    path = tmp_path / "forkserver.yaml"
    path.write_text(
        f"docroot: {top}\nerror_pages: {{404: /404.html}}\nsites:\n"
        "  - names: [example.org]\n"
        f"  - names: [docs.example.org]\n    docroot: {docs}\n    error_pages: {{}}\n"
    )
    config = load_config(str(path))
    assert config.sites[1].overrides == (("docroot", str(docs)), ("error_pages", ()))
