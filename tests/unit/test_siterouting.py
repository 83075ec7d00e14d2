"""worker/siterouting.py: a file that changed mid-send is forgotten by every site's cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from forkserver.config import load_config
from forkserver.http import Request
from forkserver.http.response import close_body
from forkserver.static import StaticSite
from forkserver.worker.siterouting import SiteRouting


def request(path: str, host: str) -> Request:
    return Request("GET", path, path, "", 1, {"host": host}, True, host, 0,
                   f"GET {path} HTTP/1.1")


def refuse(job: Callable[[], bool], done: Callable[[Any], None]) -> object | None:
    raise AssertionError("nothing here goes off the loop")


def test_forget_drops_the_path_from_every_sites_cache(tmp_path: Path) -> None:
    top, docs = tmp_path / "top", tmp_path / "docs"
    for root in (top, docs):
        root.mkdir()
        (root / "page.html").write_bytes(root.name.encode())
    config_file = tmp_path / "forkserver.yaml"
    config_file.write_text(
        f"docroot: {top}\n"
        "sites:\n"
        "  - names: [example.org]\n"
        "  - names: [docs.example.org]\n"
        f"    docroot: {docs}\n"
    )
    config = load_config(str(config_file))
    first = StaticSite(config)
    routing = SiteRouting(config, first, refuse)
    assert len(routing.statics) == 2  # the top level's and the docs site's
    for host in ("example.org", "docs.example.org"):
        plan = routing.plan(request("/page.html", host), "127.0.0.1")
        assert plan.status == 200
        if plan.file is not None:
            close_body(plan.file)
    assert all("/page.html" in static.files.entries for static in routing.statics)
    routing.forget("/page.html")
    assert not any("/page.html" in static.files.entries for static in routing.statics)
