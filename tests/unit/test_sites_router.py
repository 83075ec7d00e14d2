"""forkserver.sites.router: site choice, the order of SPEC §8, fallback containment."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from forkserver.config import Config
from forkserver.config.htpasswd import parse_htpasswd
from forkserver.config.model import AuthSetting, RuleSetting
from forkserver.http import Request
from forkserver.http.response import Plan, close_body
from forkserver.offload import Finished
from forkserver.sites.hosts import SiteTable
from forkserver.sites.router import Router, Site
from forkserver.sites.rules import Rules
from forkserver.static import StaticSite

HTPASSWD = "/conf/staff.htpasswd"
USERS = parse_htpasswd(HTPASSWD, "alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode())


def request(path: str, host: str = "example.org", method: str = "GET",
            headers: dict[str, str] | None = None) -> Request:
    target = path
    path, _, query = target.partition("?")
    fields = {"host": host, **(headers or {})}
    return Request(method, target, path, query, 1, fields, True, host, 0,
                   f"{method} {target} HTTP/1.1")


def body(plan: Plan) -> bytes:
    if plan.file is None:
        return plan.body
    data = os.pread(plan.file.fd, plan.file.length, plan.file.offset)
    close_body(plan.file)
    return data


@pytest.fixture()
def docroots(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    main, docs = tmp_path / "main", tmp_path / "docs"
    for root, label in ((main, b"main"), (docs, b"docs")):
        (root / "app" / "sub").mkdir(parents=True)
        (root / "index.html").write_bytes(label + b" index")
        (root / "app" / "index.html").write_bytes(label + b" app")
        (root / "app" / "real.js").write_bytes(b"js")
        (root / "app" / ".secret").write_bytes(b"hidden")
    (tmp_path / "outside.html").write_bytes(b"outside")
    os.symlink(tmp_path / "outside.html", main / "app" / "out.html")
    os.mkfifo(main / "app" / "fifo")
    yield main, docs


def make_router(main: Path, docs: Path, rules: list[RuleSetting], default: bool = True
                ) -> Router:
    compiled = Rules(rules)
    one = Site("example.org", StaticSite(Config(docroot=str(main))), compiled)
    two = Site("docs.example.org", StaticSite(Config(docroot=str(docs))), None)
    table = SiteTable([(["example.org", "*.example.org"], one), (["docs.example.org"], two)],
                      default=one if default else None)
    return Router(table, one)


def answer(router: Router, req: Request, client: str = "127.0.0.1") -> Plan:
    return router.plan(req, client)[1]


def test_site_choice_and_421(docroots: tuple[Path, Path]) -> None:
    main, docs = docroots
    router = make_router(main, docs, [])
    for host, label in (("example.org", b"main"), ("DOCS.example.org.:8080", b"docs"),
                        ("a.b.example.org", b"main"), ("other.net", b"main")):
        site, plan = router.plan(request("/", host), "127.0.0.1")
        assert site is not None and body(plan) == label + b" index"
    strict = make_router(main, docs, [], default=False)
    plan = answer(strict, request("/", "other.net"))
    assert isinstance(plan, Plan) and plan.status == 421


def test_fallback_only_for_what_is_absent(docroots: tuple[Path, Path]) -> None:
    main, docs = docroots
    router = make_router(main, docs, [RuleSetting("/app/**", fallback="/app/index.html")])
    cases = {
        "/app/some/route": (200, b"main app"),
        "/app/sub/deeper/x": (200, b"main app"),
        "/app/real.js": (200, b"js"),
        "/app/.secret": (404, None),  # hidden: refused, never turned into a fallback
        "/app/.nothing": (404, None),  # hidden names are refused alike: no existence oracle
        "/app/out.html": (404, None),  # a symlink out of the docroot exists: 404 stands
        "/app/fifo": (404, None),
        "/app/real.js/x": (404, None),  # under a file
        "/app/%2e%2e/%2e%2e/outside.html": (400, None),  # a climb stays a 400
        "/app/%zz": (400, None),
    }
    for path, (status, content) in cases.items():
        plan = answer(router, request(path))
        assert isinstance(plan, Plan) and plan.status == status, path
        data = body(plan)
        if content is not None:
            assert data == content, path
        assert b"outside" not in data
    post = answer(router, request("/app/route", method="POST"))
    assert isinstance(post, Plan) and post.status == 405


def test_order_allow_auth_redirect(docroots: tuple[Path, Path]) -> None:
    main, docs = docroots
    router = make_router(main, docs, [
        RuleSetting("/staff/**", allow=("10.0.0.0/8",), headers=(("X-Staff", "1"),)),
        RuleSetting("/staff/**", auth=AuthSetting("Staff", HTPASSWD, USERS)),
        RuleSetting("/staff/**", redirect="/app/{rest}"),
    ])
    refused = answer(router, request("/staff/x"), "192.0.2.1")
    assert isinstance(refused, Plan) and refused.status == 403
    assert ("X-Staff", "1") in refused.headers
    challenged = answer(router, request("/staff/x"), "10.0.0.1")
    assert isinstance(challenged, Plan) and challenged.status == 401
    assert ("WWW-Authenticate", 'Basic realm="Staff", charset="UTF-8"') in challenged.headers
    good = {"authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    plan = answer(router, request("/staff/x?q=1", headers=good), "10.0.0.1")
    assert plan.status == 301 and ("Location", "/app/x") in plan.headers  # no {query}
    bad = {"authorization": "Basic " + base64.b64encode(b"alice:nope").decode()}
    assert answer(router, request("/staff/x", headers=bad), "10.0.0.1").status == 401


def test_checks_wait_off_the_loop_once_per_credentials(docroots: tuple[Path, Path]) -> None:
    main, docs = docroots
    router = make_router(main, docs, [
        RuleSetting("/staff/**", auth=AuthSetting("Staff", HTPASSWD, USERS))])
    jobs: list[tuple[Callable[[], bool], Callable[[Any], None]]] = []

    def submit(work: Callable[[], bool], done: Callable[[Any], None]) -> object | None:
        if len(jobs) >= 2:
            return None  # the pool's queue is full
        jobs.append((work, done))
        return object()

    router.submit = submit
    good = {"authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    first = answer(router, request("/staff/x", headers=good))
    second = answer(router, request("/staff/y", headers=good))
    assert first.waiting is not None and second.waiting is first.waiting  # one check
    resumed: list[str] = []
    first.waiting.park(lambda: resumed.append("first"))
    second.waiting.park(lambda: resumed.append("second")).cancel()  # that one hung up
    wrong = {"authorization": "Basic " + base64.b64encode(b"alice:no").decode()}
    assert answer(router, request("/staff/x", headers=wrong)).waiting is not None
    third = {"authorization": "Basic " + base64.b64encode(b"bob:x").decode()}
    assert answer(router, request("/staff/x", headers=third)).status == 503  # full
    work, done = jobs[0]
    done(Finished(work()))
    assert resumed == ["first"]
    assert answer(router, request("/staff/x", headers=good)).status == 404  # remembered


def test_headers_on_cached_files(docroots: tuple[Path, Path]) -> None:
    main, docs = docroots
    router = make_router(main, docs, [RuleSetting("*.js", headers=(("X-A", "b"),))])
    for _ in range(3):  # the second and third come from the open-file cache
        plan = answer(router, request("/app/real.js"))
        assert ("X-A", "b") in plan.headers
        assert not plan.encoded or plan.encoded.endswith(b"X-A: b\r\n")
        body(plan)


def test_the_short_way_answers_as_the_whole_order(docroots: tuple[Path, Path]) -> None:
    """``answer`` (the worker's entry, with its short way for header and auth rules on a
    cache hit) gives what ``plan`` gives, and a hit's encoded fields carry each rule
    field exactly once however often the file is asked for."""
    main, docs = docroots
    router = make_router(main, docs, [
        RuleSetting("*.js", headers=(("X-A", "b"),)),
        RuleSetting("/app/**", auth=AuthSetting("Staff", HTPASSWD, USERS),
                    headers=(("X-Staff", "1"),)),
        RuleSetting("/old/**", redirect="/app/{rest}"),
    ])
    good = {"authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    bad = {"authorization": "Basic " + base64.b64encode(b"alice:nope").decode()}
    cases = [
        (request("/app/real.js", headers=good), 200),
        (request("/app/real.js", headers=bad), 401),
        (request("/app/real.js"), 401),
        (request("/app/real.js", method="HEAD", headers=good), 200),
        (request("/index.html"), 200),
        (request("/old/x"), 301),
        (request("/", "docs.example.org"), 200),
    ]
    for _ in range(3):  # the first fills the open-file cache, the others hit it
        for req, status in cases:
            short = router.answer(req, "127.0.0.1")
            whole = router.plan(req, "127.0.0.1")[1]
            assert short.status == whole.status == status, req.target
            assert short.headers == whole.headers, req.target
            assert short.close == whole.close
            if short.encoded:
                app = req.path == "/app/real.js"
                assert short.encoded.count(b"X-A: b\r\n") == app
                assert short.encoded.count(b"X-Staff: 1\r\n") == app
            assert body(short) == body(whole)
    strict = make_router(main, docs, [], default=False)
    assert strict.answer(request("/", "other.net"), "127.0.0.1").status == 421
