"""Garbage and fuzzing over real sockets: the server answers or closes, and never breaks.

hypothesis sends random bytes and mutations of valid requests; boofuzz walks its
mutations of an HTTP request grammar, with a health check (a valid GET answered 200)
after each case. For every case, every response must be one h11 (an independent
HTTP/1.1 implementation) can parse, none may be a server fault, and the workers must
be the ones that were there at the start.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import pytest
from boofuzz import Delim, Group, Request, Session, Static, String, Target
from boofuzz.connections import ITargetConnection
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support import Server, alive, get, read_until_closed, running, status_of

INDEX = b"<!DOCTYPE html><title>home</title>hello\n"
# 5xx answers that describe the request, not a fault of the server: an unknown method
# (RFC 9110 §15.6.2), a transfer coding it does not implement, an HTTP major version
# it does not speak (§15.6.6). Any other 5xx (500, 503, …) fails the test.
CLIENT_CAUSED_5XX = frozenset({501, 505})
EXCHANGE_SECONDS = 5.0


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("fuzz")
    root = directory / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "style.css").write_text("body { color: red }\n")
    (root / "sub" / "data.bin").write_bytes(bytes(range(256)) * 400)  # > the file cache
    (root / ".hidden").write_text("secret\n")
    settings = {"docroot": str(root), "workers": 2, "log_level": "info",
                "timeouts": {"header": 2}, "access_log": "off"}
    with running(directory, settings) as server:
        yield server


# -- reading what came back -----------------------------------------------------------
def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, end our side, return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_SECONDS) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered (and closed) before reading everything: read the answer
        try:
            return read_until_closed(sock)
        except TimeoutError:
            raise AssertionError(
                f"no close {EXCHANGE_SECONDS}s after our end of input for {data[:200]!r}"
            ) from None


def _one_response(data: bytes, method: str) -> tuple[int, bytes, bool] | None:
    """h11's reading of the first response in ``data`` to a ``method`` request:
    (status, the bytes after it, whether the server said it closes), or None."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "fuzz")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    client.receive_data(b"")  # the server closed: everything it sent is in ``data``
    status = 0
    try:
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.Data):
                continue
            else:  # NEED_DATA (cut short), ConnectionClosed, an unasked-for 1xx
                return None
    except h11.RemoteProtocolError:
        return None
    rest, _closed = client.trailing_data
    return status, rest, client.their_state is h11.MUST_CLOSE


def response_statuses(data: bytes, sent: bytes) -> list[int]:
    """The status of each response in ``data``; fails unless h11 can parse them all.

    A response to HEAD has no body, but its Content-Length may equal the length of
    what follows it, so where ``sent`` holds a HEAD each response is read as one to
    GET or to HEAD, whichever lets the whole stream parse (memoised by offset, so
    the search stays linear).
    """
    methods = ("GET", "HEAD") if b"HEAD" in sent else ("GET",)
    parsed_from: dict[int, list[int] | None] = {len(data): []}

    def from_offset(offset: int) -> list[int] | None:
        if offset not in parsed_from:
            parsed_from[offset] = None
            for method in methods:
                one = _one_response(data[offset:], method)
                if one is None:
                    continue
                status, after, closes = one
                if closes and after:
                    continue  # nothing may follow a response that says Connection: close
                tail = from_offset(len(data) - len(after))
                if tail is not None:
                    parsed_from[offset] = [status, *tail]
                    break
        return parsed_from[offset]

    statuses = from_offset(0)
    if statuses is None:
        furthest = max(offset for offset, found in parsed_from.items() if found is None)
        raise AssertionError(
            f"h11 cannot parse the responses from byte {furthest}: {data[furthest:][:300]!r}"
            f"\nrequest: {sent[:300]!r}"
        )
    return statuses


def check_case(server: Server, workers: list[int], data: bytes) -> None:
    statuses = response_statuses(exchange(server.port, data), data)
    faults = [s for s in statuses if s >= 500 and s not in CLIENT_CAUSED_5XX]
    assert not faults, f"server error {faults} for {data[:300]!r}"
    dead = [pid for pid in workers if not alive(pid)]
    assert not dead, f"worker {dead} died on {data[:300]!r}"


def assert_unharmed(server: Server, workers: list[int]) -> None:
    assert server.workers() == workers, "a worker was replaced during the fuzzing"
    assert status_of(get(server.port, "/index.html")) == 200
    log = server.error_log
    assert "Traceback" not in log and "crashed" not in log, log[-3000:]


# -- hypothesis -----------------------------------------------------------------------
FUZZ_SETTINGS = settings(
    deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: fuzz\r\nRange: bytes=0-5\r\n"
    b"If-None-Match: \"x\"\r\nAccept-Encoding: gzip, br\r\n\r\n",
    b"GET /sub/ HTTP/1.0\r\n\r\n",
    b"HEAD /sub/data.bin HTTP/1.1\r\nHost: fuzz\r\n\r\n"
    b"GET /index.html HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET http://fuzz/style.css?q=1 HTTP/1.1\r\nHost: fuzz\r\nConnection: keep-alive\r\n\r\n"
    b"GET /sub/data.bin HTTP/1.1\r\nHost: fuzz\r\nRange: bytes=0-0,5-9,-3\r\n\r\n",
    b"POST /index.html HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 5\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET /.hidden HTTP/1.1\r\nHost: fuzz\r\n"
    b"If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
]
# Bytes and fragments that parsers trip on: line ends, separators, framing fields.
TOKENS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b",", b";", b"\x00", b"\xff", b"%", b"%00",
    b"/..", b"*", b"HTTP/1.1", b"HTTP/9.9", b"HTTP/0.9", b"Host: a\r\n",
    b"Content-Length: 3\r\n", b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Range: bytes=", b"\r\n\r\n", b"GET / HTTP/1.1\r\n", b"99999999999999999999",
]


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["insert", "delete", "replace", "token", "repeat"]))
        if operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif operation == "replace":
            data[at : at + 1] = bytes([draw(st.integers(0, 255))])
        elif operation == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        else:  # a run long enough to reach the line and head limits (414, 431)
            data[at:at] = bytes(data[at : at + draw(st.integers(1, 32))]) * draw(
                st.integers(2, 600))
    return bytes(data)


def test_random_bytes_are_answered_or_closed(fuzz_server: Server) -> None:
    workers = fuzz_server.workers()

    @settings(FUZZ_SETTINGS, max_examples=300)
    @given(st.binary(min_size=1, max_size=4096))
    def case(data: bytes) -> None:
        check_case(fuzz_server, workers, data)

    case()
    assert_unharmed(fuzz_server, workers)


def test_mutated_requests_are_answered_or_closed(fuzz_server: Server) -> None:
    workers = fuzz_server.workers()

    @settings(FUZZ_SETTINGS, max_examples=1000)
    @given(mutated_requests())
    def case(data: bytes) -> None:
        assume(data)
        check_case(fuzz_server, workers, data)

    case()
    assert_unharmed(fuzz_server, workers)


# -- boofuzz --------------------------------------------------------------------------
# boofuzz walks one field's mutations in a fixed order (its injection and format-string
# library first, then ever longer strings), so each field gets its own bounded run
# instead of the first fields taking the whole budget.
BOOFUZZ_CASES_PER_FIELD = 250
BOOFUZZ_FIELDS = ("method", "space-1", "target", "space-2", "version", "host-name",
                  "host-colon", "host", "range", "length")


class WholeExchange(ITargetConnection):  # type: ignore[misc]
    """boofuzz's link to the server: each case sends, ends its side, reads to the close.

    boofuzz's own TCP connection returns after a single recv(); reading the whole
    answer is what lets every response be checked, not just its first packet.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.received = b""

    def open(self) -> None:
        self.received = b""

    def close(self) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.received = exchange(self.port, data)
        return len(data)

    def recv(self, max_bytes: int) -> bytes:
        received, self.received = self.received, b""
        return received

    @property
    def info(self) -> str:
        return f"127.0.0.1:{self.port}"


def http_grammar(fuzzed: str) -> Request:
    """One request head in which only the field named ``fuzzed`` is mutated."""

    def only(name: str) -> dict[str, Any]:
        return {"name": name, "fuzzable": name == fuzzed}

    long = {"max_len": 20000}  # past limits.header_bytes (16 KiB): 414 and 431 too
    return Request("http", children=(
        Group(values=["GET", "POST", "OPTIONS", "DELETE", "get", "BREW"], **only("method")),
        Delim(default_value=" ", **only("space-1")),
        String(default_value="/sub/data.bin", **long, **only("target")),
        Delim(default_value=" ", **only("space-2")),
        String(default_value="HTTP/1.1", **long, **only("version")),
        Static(name="line-end", default_value="\r\n"),
        String(default_value="Host", **long, **only("host-name")),
        Delim(default_value=":", **only("host-colon")),
        String(default_value=" fuzz", **long, **only("host")),
        Static(name="host-end", default_value="\r\n"),
        String(default_value="Range: bytes=0-3,10-", **long, **only("range")),
        Static(name="range-end", default_value="\r\n"),
        String(default_value="If-None-Match: \"x\"", **long, **only("length")),
        Static(name="head-end", default_value="\r\n\r\n"),
    ))


def test_boofuzz_cases_never_break_the_server(fuzz_server: Server, tmp_path: Path) -> None:
    workers = fuzz_server.workers()
    failures: list[str] = []
    cases = 0

    def after_each_case(target: Any, fuzz_data_logger: Any, session: Session,
                        *args: Any, **kwargs: Any) -> None:
        nonlocal cases
        cases += 1
        sent = session.last_send or b""
        try:
            check_case(fuzz_server, workers, sent)
            # The health check: a valid request on a new connection is served.
            health = get(fuzz_server.port, "/index.html")
            assert status_of(health) == 200 and health.endswith(INDEX), health[:200]
        except AssertionError as exc:  # boofuzz would swallow it; keep it for the test
            failures.append(f"case {cases} ({session.last_send[:100]!r}): {exc}")

    expected = 0
    for field in BOOFUZZ_FIELDS:
        session = Session(
            target=Target(connection=WholeExchange(fuzz_server.port)),
            index_end=BOOFUZZ_CASES_PER_FIELD,
            web_port=None,  # no web UI
            keep_web_open=False,
            fuzz_loggers=[],  # quiet: nothing on stdout
            db_filename=str(tmp_path / f"boofuzz-{field}.db"),
            receive_data_after_fuzz=True,
            post_test_case_callbacks=[after_each_case],
            restart_sleep_time=0,
        )
        session.connect(http_grammar(field))
        session.fuzz(max_depth=1)
        expected += min(BOOFUZZ_CASES_PER_FIELD, session.total_num_mutations)

    assert cases == expected, f"boofuzz ran {cases} cases, not {expected}"
    assert not failures, f"{len(failures)} failing cases; first: {failures[:3]}"
    assert_unharmed(fuzz_server, workers)
