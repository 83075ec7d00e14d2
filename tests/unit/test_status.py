"""The scoreboard's counters and the status page, in one process.

The scoreboard is the real shared mapping (written and read here by one process);
requests are real parsed heads; the Prometheus text goes through the strict parser.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forkserver.config import Config, Limits, Status
from forkserver.http import Request, parse_request
from forkserver.http.negotiate import prefers_plain_text
from forkserver.scoreboard import RESTART_REASONS, Scoreboard, SlotState
from forkserver.static import StaticSite
from forkserver.worker.status import StatusPage, render_json, render_prometheus
from tests.exposition import ExpositionError, parse_exposition

STATUS = "/server-status"
NOW = 1000.0  # the worker's monotonic clock, as it passes it to the page


def parsed(head: str) -> Request:
    result = parse_request(head.encode("latin-1"), Limits())
    assert result is not None
    return result[0]


def get(path: str = STATUS, method: str = "GET", extra: str = "") -> Request:
    return parsed(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")


@pytest.fixture
def board() -> Scoreboard:
    scoreboard = Scoreboard(slots=8)
    scoreboard.publish_master(4242, 3, 2, 2, 1_700_000_000.5)
    return scoreboard


@pytest.fixture
def page(tmp_path: Path, board: Scoreboard) -> StatusPage:
    config = Config(docroot=str(tmp_path), status=Status(STATUS, ("127.0.0.1/32", "::1/128")))
    return StatusPage(config, StaticSite(config), board)


# -- the scoreboard ----------------------------------------------------------------------


def test_a_released_slot_keeps_its_counts_and_a_replacement_continues(board: Scoreboard) -> None:
    slot = board.claim(1)
    board.set_pid(slot, 100)
    board.beat(slot, 7, 700, 2, (0, 5, 1, 1, 0))
    board.release(slot, "crash")
    assert board.read(slot).state == SlotState.FREE
    again = board.claim(1, restarts=1)
    assert again == slot  # the lowest free slot: the same position
    board.set_pid(again, 101)
    board.beat(again, 2, 50, 0, (0, 2, 0, 0, 0))
    snapshot = board.snapshot()
    (view,) = snapshot.slots
    assert (view.pid, view.requests, view.restarts) == (101, 2, 1)
    assert view.retired_by_class == (0, 5, 1, 1, 0) and view.retired_bytes_sent == 700
    assert snapshot.master.restarts == {**dict.fromkeys(RESTART_REASONS, 0), "crash": 1}
    assert (snapshot.master.pid, snapshot.master.generation) == (4242, 3)


def test_a_release_without_a_reason_is_not_a_restart(board: Scoreboard) -> None:
    board.release(board.claim(1))
    assert sum(board.snapshot().master.restarts.values()) == 0
    assert board.snapshot().slots == []  # never served anything: nothing to show


def test_a_full_scoreboard_refuses_a_claim() -> None:
    board = Scoreboard(slots=2)
    assert [board.claim(1), board.claim(1), board.claim(1)] == [0, 1, -1]


# -- renderings --------------------------------------------------------------------------


def serving(board: Scoreboard, pid: int, by_class: tuple[int, int, int, int, int]) -> int:
    slot = board.claim(3)
    board.set_pid(slot, pid)
    board.set_state(slot, SlotState.SERVING)
    board.beat(slot, sum(by_class), 1000 * sum(by_class), 1, by_class)
    return slot


def test_json_lists_live_workers_and_totals_include_retired_ones(board: Scoreboard) -> None:
    gone = serving(board, 10, (0, 3, 0, 1, 0))
    board.release(gone, "max_requests")
    serving(board, 11, (0, 2, 0, 0, 1))
    serving(board, 12, (1, 0, 0, 0, 0))
    document = json.loads(render_json(board.snapshot(), monotonic_now=0.0))
    assert [w["pid"] for w in document["workers"]] == [11, 12]
    assert document["workers"][0]["requests_by_class"] == {
        "1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 1,
    }
    assert document["totals"]["requests_by_class"] == {
        "1xx": 1, "2xx": 5, "3xx": 0, "4xx": 1, "5xx": 1,
    }
    assert document["totals"]["requests"] == 8
    assert document["totals"]["bytes_sent"] == 8000
    assert document["restarts"]["max_requests"] == 1
    assert document["master_pid"] == 4242 and document["workers_configured"] == 2


def test_prometheus_text_is_strict_and_sums_every_slot(board: Scoreboard) -> None:
    serving(board, 9, (0, 1, 0, 0, 0))
    gone = serving(board, 10, (0, 3, 0, 1, 0))
    board.release(gone, "crash")
    families = parse_exposition(render_prometheus(board.snapshot()))
    requests = families["forkserver_requests_total"]
    assert requests.kind == "counter"
    assert requests.total(code_class="2xx") == 4
    assert requests.value(worker="1", code_class="4xx") == 1  # the ended worker's slot
    assert families["forkserver_bytes_sent_total"].total() == 5000
    assert families["forkserver_workers"].value(state="serving") == 1
    assert families["forkserver_worker_restarts_total"].value(reason="crash") == 1
    assert families["forkserver_start_time_seconds"].total() == 1_700_000_000.5
    assert families["forkserver_generation"].total() == 3
    # Live-only series: the free slot has counters but no connections or info.
    assert {dict(k)["worker"] for k in families["forkserver_worker_info"].samples} == {"0"}
    assert {dict(k)["worker"] for k in families["forkserver_connections_open"].samples} == {"0"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# TYPE a_total counter\na_total -1\n", "negative"),
        ("# TYPE a counter\na 1\n", "_total"),
        ("a 1\n", "without a TYPE"),
        ('# HELP a x\n# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n', "already"),
        ("# HELP a x\n# TYPE a gauge\n# HELP b y\n# TYPE b gauge\na 1\nb 1\na 2\n",
         "contiguous"),
        ('# HELP a x\n# TYPE a gauge\na{x="\\t"} 1\n', "not a sample"),
        ("# HELP a x\n# TYPE a gauge\na one\n", "not a number"),
        ("# HELP a x\n# TYPE a gauge\na 1", "line feed"),
        ("# TYPE a gauge\na 1\n", "no HELP"),
    ],
)
def test_the_strict_parser_rejects_what_prometheus_would(text: str, problem: str) -> None:
    with pytest.raises(ExpositionError, match=problem):
        parse_exposition(text)


# -- the page ----------------------------------------------------------------------------


def test_allowed_clients_get_json_with_no_store(page: StatusPage) -> None:
    plan = page.plan(get(), "127.0.0.1", NOW)
    assert plan.status == 200
    headers = dict(plan.headers)
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert int(headers["Content-Length"]) == len(plan.body)
    assert json.loads(plan.body)["master_pid"] == 4242
    assert page.plan(get(), "::1", NOW).status == 200


@pytest.mark.parametrize("client", ["10.0.0.1", "127.0.0.2", "::2", "-", "unix:/x", ""])
def test_other_clients_get_the_404_of_a_missing_path(page: StatusPage, client: str) -> None:
    refused = page.plan(get(), client, NOW)
    missing = page.site.plan(get("/no-such-file"))
    assert (refused.status, refused.headers, refused.body) == (
        missing.status, missing.headers, missing.body,
    )
    head = page.plan(get(method="HEAD"), client, NOW)
    assert head.status == 404 and head.body == b""


def test_head_has_the_headers_and_no_body(page: StatusPage) -> None:
    full = page.plan(get(), "127.0.0.1", NOW)
    head = page.plan(get(method="HEAD"), "127.0.0.1", NOW)
    assert head.body == b"" and head.status == 200
    # The uptime moves between the two calls; the length of its digits rarely does.
    assert dict(head.headers).keys() == dict(full.headers).keys()


@pytest.mark.parametrize(("method", "status"), [("POST", 405), ("DELETE", 405), ("BREW", 501)])
def test_other_methods_are_refused_like_anywhere(
    page: StatusPage, method: str, status: int
) -> None:
    for client in ("127.0.0.1", "10.0.0.1"):
        assert page.plan(get(method=method), client, NOW).status == status


@pytest.mark.parametrize(
    ("query", "accept", "prometheus"),
    [
        ("", None, False),
        ("?format=prometheus", None, True),
        ("?format=json", "text/plain", False),
        ("", "text/plain", True),
        ("", "*/*", False),
        ("", "application/json, text/plain;q=0.9", False),
        ("", "application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1", True),
    ],
)
def test_the_format_follows_the_query_then_accept(
    page: StatusPage, query: str, accept: str | None, prometheus: bool
) -> None:
    extra = f"Accept: {accept}\r\n" if accept else ""
    plan = page.plan(get(STATUS + query, extra=extra), "127.0.0.1", NOW)
    content_type = dict(plan.headers)["Content-Type"]
    assert content_type.startswith("text/plain; version=0.0.4") == prometheus


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False), ("", False), ("*/*", False), ("text/*", True), ("TEXT/PLAIN", True),
        ("text/plain;q=0", False), ("application/json;q=0.5, text/plain;q=0.5", False),
        ("text/html, */*;q=0.8", False),
    ],
)
def test_plain_text_must_be_preferred_to_json(accept: str | None, expected: bool) -> None:
    assert prefers_plain_text(accept) is expected


def test_an_unknown_format_is_a_bad_request(page: StatusPage) -> None:
    assert page.plan(get(STATUS + "?format=xml"), "127.0.0.1", NOW).status == 400


def test_a_request_with_a_body_closes_the_connection(page: StatusPage) -> None:
    request = get(extra="Content-Length: 3\r\n")
    assert page.plan(request, "127.0.0.1", NOW).close
    assert page.plan(request, "10.0.0.1", NOW).close
