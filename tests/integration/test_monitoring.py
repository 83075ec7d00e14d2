"""Monitoring on the real server: the status endpoint and the access log formats.

The status numbers are cross-checked against exactly what the test sent (by status
class) and exactly how many bytes it received; Prometheus text goes through the
strict parser in tests/exposition.py; restarts are provoked with real signals; every
access log line is parsed, hostile request bytes included.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.exposition import CONTENT_TYPE, Family, parse_exposition
from tests.support import Server, alive, request, running, status_of, wait_for

STATUS = "/server-status"
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# What Prometheus 3 sends when it scrapes (its default scrape_protocols, in order).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "dir").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "a.txt").write_bytes(b"alpha\n" * 50)
    (root / "dir" / "index.html").write_text("dir\n")
    return root


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status_of(response), headers, body


class Client:
    """Sends requests one connection each and remembers every byte it received."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.received = 0
        self.sent = dict.fromkeys(CLASSES, 0)

    def send(self, method: str, path: str, headers: str = "") -> bytes:
        response = request(
            self.port,
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode(),
            host=self.host,
        )
        assert response, f"no response to {method} {path}"
        self.received += len(response)
        self.sent[f"{status_of(response) // 100}xx"] += 1
        return response

    def status_json(self) -> dict[str, Any]:
        status, headers, body = split(self.send("GET", STATUS))
        assert status == 200 and headers["content-type"] == "application/json"
        return json.loads(body)  # type: ignore[no-any-return]


def settled_json(client: Client) -> dict[str, Any]:
    """The status once every worker's heartbeat has caught up with what was sent.

    A status response counts everything sent before it (its own request counts only
    once answered), and every byte received before it.
    """

    def caught_up() -> dict[str, Any] | None:
        expected_classes, expected_bytes = dict(client.sent), client.received
        document = client.status_json()
        totals = document["totals"]
        if totals["requests_by_class"] == expected_classes and (
            totals["bytes_sent"] == expected_bytes
        ):
            return document
        return None

    return wait_for(caught_up, timeout=15, interval=0.1, what="status totals to settle")  # type: ignore[no-any-return]


def prometheus(client: Client, **how: str) -> dict[str, Family]:
    if how.get("accept"):
        response = client.send("GET", STATUS, f"Accept: {how['accept']}\r\n")
    else:
        response = client.send("GET", STATUS + "?format=prometheus")
    status, headers, body = split(response)
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE
    assert headers["cache-control"] == "no-store"
    return parse_exposition(body.decode("utf-8"))


def test_status_counts_exactly_what_was_sent(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 2, "status": {"path": STATUS}}
    with running(tmp_path, settings) as server:
        client = Client(server.port)
        for _ in range(7):
            assert status_of(client.send("GET", "/a.txt")) == 200
        for _ in range(3):
            assert status_of(client.send("GET", "/missing")) == 404
        assert status_of(client.send("GET", "/dir")) == 301
        assert status_of(client.send("HEAD", "/")) == 200
        assert status_of(client.send("DELETE", "/a.txt")) == 405

        document = settled_json(client)
        assert document["master_pid"] == server.pid
        assert document["generation"] == 1
        assert document["workers_configured"] == 2
        assert abs(document["start_time"] - time.time()) < 120
        workers = document["workers"]
        assert sorted(w["pid"] for w in workers) == server.workers()
        for worker in workers:
            assert worker["state"] == "serving" and worker["generation"] == 1
            assert worker["restarts"] == 0
            assert 0 <= worker["seconds_since_heartbeat"] < 5
            assert worker["requests"] == sum(worker["requests_by_class"].values())
        # Nobody has ended yet: the live workers' counts are the totals.
        for code_class in CLASSES:
            assert sum(w["requests_by_class"][code_class] for w in workers) == (
                document["totals"]["requests_by_class"][code_class]
            )
        assert sum(w["bytes_sent"] for w in workers) == document["totals"]["bytes_sent"]
        assert document["restarts"] == dict.fromkeys(
            ("crash", "heartbeat_timeout", "max_requests", "reload", "exit", "memory"), 0
        )

        # Prometheus text, by ?format= and by Accept, agrees with what was sent.
        for how in ({}, {"accept": "text/plain"}, {"accept": PROMETHEUS_ACCEPT}):

            def agrees(how: dict[str, str] = how) -> dict[str, Family] | None:
                expected, expected_bytes = dict(client.sent), client.received
                families = prometheus(client, **how)
                counts = {c: families["forkserver_requests_total"].total(code_class=c)
                          for c in CLASSES}
                if counts == expected and families["forkserver_bytes_sent_total"].total() == (
                    expected_bytes
                ):
                    return families
                return None

            families = wait_for(agrees, timeout=15, interval=0.1, what="Prometheus totals")
        assert families["forkserver_requests_total"].kind == "counter"
        assert families["forkserver_workers"].value(state="serving") == 2
        assert families["forkserver_workers"].value(state="booting") == 0
        assert families["forkserver_workers"].value(state="draining") == 0
        assert families["forkserver_generation"].total() == 1
        assert families["forkserver_worker_restarts_total"].total() == 0
        assert families["forkserver_start_time_seconds"].total() == document["start_time"]
        slots = {str(w["slot"]) for w in workers}
        assert {dict(k)["worker"] for k in families["forkserver_connections_open"].samples} == (
            slots
        )
        pids = {dict(k)["pid"] for k in families["forkserver_worker_info"].samples}
        assert pids == {str(pid) for pid in server.workers()}
        for name in families:
            assert name.startswith("forkserver_")


def test_status_answers_head_and_refuses_other_methods(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 1, "status": {"path": STATUS},
                "headers": {"X-Frame-Options": "DENY"}}
    with running(tmp_path, settings) as server:
        client = Client(server.port)
        get_status, get_headers, get_body = split(client.send("GET", STATUS))
        head_status, head_headers, head_body = split(client.send("HEAD", STATUS))
        assert get_status == head_status == 200 and head_body == b""
        assert get_headers["cache-control"] == head_headers["cache-control"] == "no-store"
        assert get_headers["x-frame-options"] == "DENY"
        assert int(get_headers["content-length"]) == len(get_body)
        assert head_headers["content-type"] == "application/json"
        status, headers, _ = split(client.send("POST", STATUS))
        assert status == 405 and headers["allow"] == "GET, HEAD"
        assert status_of(client.send("GET", STATUS + "?format=xml")) == 400
        assert json.loads(split(client.send("GET", STATUS + "?format=json"))[2])
        # The query is not part of the path; another spelling is just another path.
        assert status_of(client.send("GET", STATUS + "/")) == 404
        assert status_of(client.send("GET", "/server%2Dstatus")) == 404


def without_date(response: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"", response)


def test_clients_outside_allow_get_the_plain_404(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 1, "host": "::",
                "status": {"path": STATUS, "allow": ["10.0.0.0/8", "::1/128"]}}
    with running(tmp_path, settings) as server:
        ipv4, ipv6 = Client(server.port), Client(server.port, host="::1")
        for method in ("GET", "HEAD"):
            refused = ipv4.send(method, STATUS)
            missing = ipv4.send(method, "/no-such-path")
            assert status_of(refused) == 404
            assert without_date(refused) == without_date(missing)
        assert status_of(ipv4.send("GET", STATUS + "?format=prometheus")) == 404
        assert status_of(ipv6.send("GET", STATUS)) == 200
    settings["status"] = {"path": STATUS, "allow": ["127.0.0.0/8"]}
    (tmp_path / "again").mkdir()
    with running(tmp_path / "again", settings) as server:
        assert status_of(Client(server.port, host="::1").send("GET", STATUS)) == 404
        assert status_of(Client(server.port).send("GET", STATUS)) == 200


def test_the_endpoint_is_off_by_default(tmp_path: Path, docroot: Path) -> None:
    with running(tmp_path, {"docroot": str(docroot), "workers": 1}) as server:
        assert status_of(Client(server.port).send("GET", STATUS)) == 404


def counters(families: dict[str, Family]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (name, labels): value
        for name, family in families.items() if family.kind == "counter"
        for labels, value in family.samples.items()
    }


def test_a_killed_worker_is_counted_and_its_requests_kept(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 2, "status": {"path": STATUS}}
    with running(tmp_path, settings) as server:
        client = Client(server.port)
        for _ in range(10):
            client.send("GET", "/a.txt")
        client.send("GET", "/missing")
        before = settled_json(client)
        before_counters = counters(prometheus(client))
        victim = max(before["workers"], key=lambda w: w["requests"])
        assert victim["requests"] > 0
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: not alive(victim["pid"]), what="the killed worker to go")
        server.wait_serving()

        def replaced() -> dict[str, Any] | None:
            document = client.status_json()
            pids = {w["pid"] for w in document["workers"]}
            serving = [w for w in document["workers"] if w["state"] == "serving"]
            if victim["pid"] not in pids and len(serving) == 2:
                return document
            return None

        after = wait_for(replaced, timeout=15, interval=0.1, what="a replacement worker")
        assert after["restarts"]["crash"] == 1
        assert sum(after["restarts"].values()) == 1
        assert sorted(w["restarts"] for w in after["workers"]) == [0, 1]
        # What the killed worker served stays in the totals (folded into its slot).
        for code_class in CLASSES:
            assert after["totals"]["requests_by_class"][code_class] >= (
                before["totals"]["requests_by_class"][code_class]
            )
        assert after["totals"]["bytes_sent"] >= before["totals"]["bytes_sent"]
        families = prometheus(client)
        assert families["forkserver_worker_restarts_total"].value(reason="crash") == 1
        # Every counter series is still there and none went backwards.
        after_counters = counters(families)
        for key, value in before_counters.items():
            assert after_counters[key] >= value, key


def test_workers_recycled_by_max_requests_are_counted(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 2, "max_requests": 4,
                "status": {"path": STATUS}}
    with running(tmp_path, settings) as server:
        client = Client(server.port)
        for _ in range(12):
            client.send("GET", "/missing.txt")  # 404s: the status requests are all 2xx

        def recycled() -> dict[str, Any] | None:
            document = client.status_json()
            # Nothing served is lost when a worker recycles: it drains and beats last.
            # (A live worker's counts lag by up to one heartbeat, hence the wait.)
            not_found = document["totals"]["requests_by_class"]["4xx"]
            assert not_found <= 12
            return document if document["restarts"]["max_requests"] >= 2 and not_found == 12 \
                else None

        document = wait_for(recycled, timeout=15, interval=0.1, what="recycled workers")
        assert document["restarts"]["crash"] == document["restarts"]["reload"] == 0


def test_a_reload_counts_each_replaced_worker(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 2, "status": {"path": STATUS}}
    with running(tmp_path, settings) as server:
        client = Client(server.port)
        server.signal(signal.SIGHUP)

        def reloaded() -> dict[str, Any] | None:
            document = client.status_json()
            live = [w for w in document["workers"] if w["generation"] == 2]
            if document["generation"] == 2 and len(document["workers"]) == len(live) == 2:
                return document
            return None

        document = wait_for(reloaded, timeout=20, interval=0.1, what="generation 2 alone")
        assert document["restarts"]["reload"] == 2
        assert sum(document["restarts"].values()) == 2
        assert [w["restarts"] for w in document["workers"]] == [0, 0]


def test_a_stopped_worker_counts_as_a_heartbeat_timeout(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 2, "status": {"path": STATUS},
                "timeouts": {"worker": 2}}
    with running(tmp_path, settings) as server:
        client = Client(server.port)
        victim = server.workers()[0]
        os.kill(victim, signal.SIGSTOP)
        try:
            wait_for(lambda: not alive(victim), timeout=15, what="the stopped worker to be killed")
        finally:
            if alive(victim):
                os.kill(victim, signal.SIGKILL)
        server.wait_serving()

        def counted() -> dict[str, Any] | None:
            document = client.status_json()
            return document if document["restarts"]["heartbeat_timeout"] >= 1 else None

        document = wait_for(counted, timeout=15, interval=0.1, what="the heartbeat restart")
        assert document["restarts"]["crash"] == 0


# -- access log formats ------------------------------------------------------------------

# Bytes a client may put in a valid request (obs-text, quotes, backslashes in fields)
# and in one that fails to parse (anything up to the CRLF).
HOSTILE_AGENT = b'evil" \\ \xff\xfe\t"\\x22 done'
HOSTILE_REFERER = b"http://x/\x80\xc3\xa9\"'"
HOSTILE_LINE = b'GET /a"b\\c\x1b[31m\xff\x00 HTTP/1.1'

COMBINED = re.compile(
    r'(?P<client>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
    r'"(?P<line>(?:[ -!#-\[\]-~]|\\x[0-9A-F]{2})*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>(?:[ -!#-\[\]-~]|\\x[0-9A-F]{2})*)" '
    r'"(?P<agent>(?:[ -!#-\[\]-~]|\\x[0-9A-F]{2})*)" (?P<duration>\d+)'
)
COMMON = re.compile(
    r'(?P<client>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
    r'"(?P<line>(?:[ -!#-\[\]-~]|\\x[0-9A-F]{2})*)" (?P<status>\d{3}) (?P<bytes>\d+|-)'
)
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")


def unescape(field: str) -> bytes:
    """Undo the nginx-style escaping of the text formats."""
    return re.sub(
        rb"\\x([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), field.encode("ascii")
    )


def body_length(response: bytes) -> int:
    """How many bytes followed the response head (what the access log counts)."""
    _, separator, body = response.partition(b"\r\n\r\n")
    assert separator, response
    return len(body)


def send_mix(port: int) -> list[tuple[bytes, int, bytes, bytes, int]]:
    """Requests with hostile bytes; (request line, status, referer, user agent, body
    length) each."""
    normal = b"GET /a.txt?q=1 HTTP/1.1"
    with_fields = (normal + b"\r\nHost: x\r\nConnection: close\r\nUser-Agent: " + HOSTILE_AGENT
                   + b"\r\nReferer: " + HOSTILE_REFERER + b"\r\n\r\n")
    sent = [
        (normal, request(port, normal + b"\r\nHost: x\r\nConnection: close\r\n\r\n")),
        (normal, request(port, with_fields)),
        (b"GET /missing HTTP/1.1",
         request(port, b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")),
        (HOSTILE_LINE, request(port, HOSTILE_LINE + b"\r\nHost: x\r\n\r\n")),
    ]
    referers = [b"", HOSTILE_REFERER, b"", b""]
    agents = [b"", HOSTILE_AGENT, b"", b""]
    return [
        (line, status_of(response), referer, agent, body_length(response))
        for (line, response), referer, agent in zip(sent, referers, agents, strict=True)
    ]


def logged_lines(server: Server, count: int) -> list[str]:
    def complete() -> list[str] | None:
        lines = server.access_log.splitlines()
        return lines if len(lines) >= count else None

    return wait_for(complete, timeout=15, what=f"{count} access log lines")  # type: ignore[no-any-return]


def read_log_bytes(server: Server) -> bytes:
    return Path(server.settings["access_log"]).read_bytes()


@pytest.mark.parametrize("log_format", ["combined", "common", "json"])
def test_each_access_log_format_parses_line_by_line(
    tmp_path: Path, docroot: Path, log_format: str
) -> None:
    settings = {"docroot": str(docroot), "workers": 1, "access_log_format": log_format}
    with running(tmp_path, settings) as server:
        started = time.monotonic()
        sent = send_mix(server.port)
        # Each request's duration lies within the wall time of the whole mix.
        wall_us = (time.monotonic() - started) * 1_000_000
        assert [status for _, status, _, _, _ in sent] == [200, 200, 404, 400]
        logged_lines(server, len(sent))
        raw = read_log_bytes(server)
        worker = server.workers()[0]
    # Whatever the client sent, the file is ASCII and one line per response.
    assert raw.isascii() and raw.endswith(b"\n")
    lines = raw.decode("ascii").splitlines()
    assert len(lines) == len(sent)
    for text, (line, status, referer, agent, size) in zip(lines, sent, strict=True):
        if log_format == "json":
            record = json.loads(text)
            assert set(record) == {
                "time", "client", "method", "path", "protocol", "status", "bytes",
                "duration_us", "referer", "user_agent", "pid", "scheme", "host",
            }
            assert record["scheme"] == "http"  # SPEC §6; "https" in test_https.py
            assert ISO_TIME.fullmatch(record["time"])
            assert record["client"] == "127.0.0.1" and record["pid"] == worker
            assert record["status"] == status
            assert isinstance(record["bytes"], int) and record["bytes"] == size
            assert isinstance(record["duration_us"], int)
            assert 0 < record["duration_us"] <= wall_us, (record["duration_us"], wall_us)
            method, target, protocol = line.split(b" ", 2)
            assert record["method"].encode("latin-1") == method
            assert record["path"].encode("latin-1") == target
            assert record["protocol"].encode("latin-1") == protocol
            assert (record["referer"] or "").encode("latin-1") == referer
            assert (record["user_agent"] or "").encode("latin-1") == agent
            if status == 200:
                assert record["bytes"] == 300 and record["path"] == "/a.txt?q=1"
        else:
            match = (COMBINED if log_format == "combined" else COMMON).fullmatch(text)
            assert match, text
            assert match["client"] == "127.0.0.1"
            assert int(match["status"]) == status
            assert unescape(match["line"]) == line
            if status == 200:
                assert match["bytes"] == "300"
            assert match["bytes"] == (str(size) if size else "-")
            if log_format == "combined":
                assert 0 < int(match["duration"]) <= wall_us, (match["duration"], wall_us)
                assert unescape(match["referer"]) == (referer or b"-")
                assert unescape(match["agent"]) == (agent or b"-")


def test_json_log_lines_stay_valid_for_every_byte(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 1, "access_log_format": "json"}
    with running(tmp_path, settings) as server:
        every_byte = bytes(range(256))
        sent: list[tuple[str, bytes]] = []
        # Each byte a field may hold in a User-Agent; every other one in a request line
        # (which then fails to parse and is logged as received, up to its CRLF).
        for byte in every_byte:
            value = bytes([byte])
            if byte == 0x09 or 0x20 <= byte <= 0x7E or byte >= 0x80:
                agent = b"a" + value + b"z"
                head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nUser-Agent: "
                head += agent + b"\r\n\r\n"
                sent.append(("agent", agent))
            else:
                line = b"GET /" + value + b"x HTTP/1.1"
                head = line + b"\r\nHost: x\r\n\r\n"
                sent.append(("line", line))
            assert request(server.port, head)
        lines = logged_lines(server, len(sent))
        raw = read_log_bytes(server)
    assert raw.isascii()
    assert len(lines) == len(sent)
    for text, (kind, expected) in zip(lines, sent, strict=True):
        record = json.loads(text)
        if kind == "agent":
            assert record["status"] == 200
            assert record["user_agent"].encode("latin-1") == expected
        else:
            assert record["status"] == 400
            method, target, protocol = expected.split(b" ", 2)
            assert record["method"].encode("latin-1") == method
            assert record["path"].encode("latin-1") == target
            assert record["protocol"].encode("latin-1") == protocol


def test_ipv6_clients_are_logged_by_address(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 1, "host": "::1",
                "access_log_format": "json"}
    with running(tmp_path, settings) as server:
        with socket.create_connection(("::1", server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while sock.recv(65536):
                pass
        (line,) = logged_lines(server, 1)
    assert json.loads(line)["client"] == "::1"
