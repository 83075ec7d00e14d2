"""The worker's connection state machine, in memory: bytes in, bytes and states out.

A real ``Worker`` (real parser, static site, status page, epoll set) drives one end
of a ``socket.socketpair()``; the test holds the other end as the client. No process
is started and nothing sleeps: the worker's clock is a ``FakeClock`` the test moves,
and ``pump`` runs the loop's own dispatch (``Worker.handlers``, indexed by phase)
until nothing is ready. Every test asserts on the bytes the client received and on
the connection's phase and deadline.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkserver.config import load_config
from forkserver.logs import AccessLog, ErrorLog, LogFile
from forkserver.scoreboard import Scoreboard
from forkserver.worker import Connection, Worker, WorkerSpec
from forkserver.worker.connection import (
    AWAITING_PROXY,
    CLOSED,
    LINGER_SECONDS,
    LINGERING,
    READING,
    WRITING,
)

SMALL = b"hello, world\n"
BIG_BYTES = 512 * 1024  # far more than the smallest socket buffer takes at once
STATUS = "/server-status"


class FakeClock:
    """The worker's monotonic clock; ``advance`` moves it without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    """A Worker with its clock and docroot, and helpers to connect and pump it."""

    def __init__(
        self, docroot: Path, max_requests: int = 0, settings: dict[str, object] | None = None,
    ) -> None:
        self.clock = FakeClock()
        settings = {"docroot": str(docroot), **(settings or {})}
        config = load_config(None, settings, cwd=str(docroot))
        scoreboard = Scoreboard(2)
        spec = WorkerSpec(
            1, 1, scoreboard.claim(1), config, [], scoreboard, os.getppid(),
            ErrorLog(LogFile(os.devnull)), AccessLog(None), max_requests,
        )
        self.worker = Worker(spec, clock=self.clock)
        self.timeouts = config.timeouts
        self.clients: list[socket.socket] = []

    def connect(
        self, address: object = None, client: str = "127.0.0.1", sndbuf: int = 0,
    ) -> tuple[socket.socket, Connection]:
        """A connection as accept_batch makes it (``address`` None: a unix peer)."""
        server, peer = socket.socketpair()
        server.setblocking(False)
        peer.setblocking(False)
        if sndbuf:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.clients.append(peer)
        worker = self.worker
        connection = Connection(server, client, self.clock() + self.timeouts.header)
        if worker.proxy is not None and not worker.proxy.admit(connection, address):
            return peer, connection
        worker.connections[connection.fd] = connection
        worker.epoll.register(connection.fd, 1)  # EPOLLIN
        return peer, connection

    def pump(self) -> None:
        """Run the loop's dispatch until no connection is ready (never blocks)."""
        worker = self.worker
        for _ in range(10_000):
            events = worker.epoll.poll(0)
            if not events:
                return
            for fd, _events in events:
                connection = worker.connections.get(fd)
                if connection is not None:
                    worker.handlers[connection.phase](connection)
        raise AssertionError("the worker never went idle")

    def sweep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.worker.sweep(self.clock())

    def close(self) -> None:
        for connection in list(self.worker.connections.values()):
            self.worker.responder.close(connection)
        for peer in self.clients:
            peer.close()
        self.worker.epoll.close()


def received(peer: socket.socket) -> tuple[bytes, bool]:
    """Everything waiting for the client, and whether the server's side has ended."""
    data = bytearray()
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return bytes(data), False
        except ConnectionResetError:
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk


def responses(data: bytes, methods: list[str] | None = None) -> list[tuple[int, str, bytes]]:
    """Split a stream into (status, head without Date, body) by Content-Length."""
    found: list[tuple[int, str, bytes]] = []
    while data:
        head, separator, data = data.partition(b"\r\n\r\n")
        assert separator, f"incomplete head: {head!r}"
        text = head.decode("latin-1")
        status = int(text.split(" ", 2)[1])
        method = methods[len(found)] if methods else "GET"
        match = re.search(r"\r\nContent-Length: (\d+)", text)
        length = int(match.group(1)) if match and method != "HEAD" else 0
        body, data = data[:length], data[length:]
        assert len(body) == length, "incomplete body"
        found.append((status, re.sub(r"\r\nDate: [^\r]*", "", text), body))
    return found


def get(path: str = "/small.txt", extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: test\r\n{extra}\r\n".encode()


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "small.txt").write_bytes(SMALL)
    (root / "big.bin").write_bytes(os.urandom(BIG_BYTES))
    return root


@pytest.fixture
def rig(docroot: Path) -> Iterator[Rig]:
    made = Rig(docroot)
    yield made
    made.close()


# -- reading: every split, pipelines ------------------------------------------------


def test_a_request_split_at_every_byte_gets_the_one_answer(rig: Rig) -> None:
    request = get(extra="User-Agent: split\r\n")
    whole, connection = rig.connect()
    whole.send(request)
    rig.pump()
    expected = responses(received(whole)[0])
    assert [status for status, _, _ in expected] == [200]
    assert expected[0][2] == SMALL
    for cut in range(1, len(request)):
        peer, connection = rig.connect()
        peer.send(request[:cut])
        rig.pump()
        assert received(peer) == (b"", False)
        assert connection.phase == READING and connection.inbuf == request[:cut]
        # The head's deadline runs from its first byte, not from the last one.
        assert connection.deadline == connection.head_started + rig.timeouts.header
        peer.send(request[cut:])
        rig.pump()
        assert responses(received(peer)[0]) == expected
        assert connection.phase == READING and not connection.inbuf
        assert connection.deadline == rig.clock() + rig.timeouts.keepalive


def test_a_pipeline_fed_one_byte_at_a_time_is_answered_in_order(rig: Rig) -> None:
    pipeline = get() + get("/missing") + get("/small.txt", "X-N: 3\r\n")
    peer, connection = rig.connect()
    for index in range(len(pipeline)):
        peer.send(pipeline[index : index + 1])
        rig.pump()
    answers = responses(received(peer)[0])
    assert [status for status, _, _ in answers] == [200, 404, 200]
    assert answers[0][2] == answers[2][2] == SMALL
    assert connection.served == 3 and connection.phase == READING


def test_a_pipeline_in_one_packet_is_answered_in_order(rig: Rig) -> None:
    peer, connection = rig.connect()
    peer.send(get() + b"HEAD /small.txt HTTP/1.1\r\nHost: test\r\n\r\n" + get("/missing"))
    rig.pump()
    answers = responses(received(peer)[0], ["GET", "HEAD", "GET"])
    assert [status for status, _, _ in answers] == [200, 200, 404]
    assert answers[1][2] == b"" and f"Content-Length: {len(SMALL)}" in answers[1][1]
    assert connection.served == 3 and not connection.inbuf


# -- keep-alive or close ------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "connection_field", "open_after"),
    [
        (get(), None, True),
        (get(extra="Connection: close\r\n"), "close", False),
        (get(version="1.0"), "close", False),
        (get(extra="Connection: keep-alive\r\n", version="1.0"), "keep-alive", True),
        (get("/missing"), None, True),  # a 404 is an answer like any other
    ],
    ids=["1.1", "1.1-close", "1.0", "1.0-keep-alive", "404"],
)
def test_keep_alive_or_close(
    rig: Rig, request_bytes: bytes, connection_field: str | None, open_after: bool
) -> None:
    peer, connection = rig.connect()
    peer.send(request_bytes)
    rig.pump()
    data, ended = received(peer)
    ((_status, head, _body),) = responses(data)
    fields = re.findall(r"\r\nConnection: ([^\r]*)", head)
    assert fields == ([connection_field] if connection_field else [])
    assert ended is not open_after
    if open_after:
        assert connection.phase == READING and connection.fd in rig.worker.connections
    else:
        # Nothing unread: closed at once, no lingering needed.
        assert connection.phase == CLOSED and connection.fd not in rig.worker.connections


def test_a_request_body_closes_the_connection_after_a_lingering_drain(rig: Rig) -> None:
    peer, connection = rig.connect()
    peer.send(get(extra="Content-Length: 5\r\n") + b"hello" + get())
    rig.pump()
    data, ended = received(peer)
    # One answer: the body and what follows it are never parsed as requests.
    ((status, head, _),) = responses(data)
    assert status == 200 and "\r\nConnection: close" in head
    assert ended  # the worker half-closed its side ...
    assert connection.phase == LINGERING  # ... and drains what the client still sends
    peer.send(b"more of the body")
    rig.pump()
    assert connection.phase == LINGERING and not connection.inbuf
    peer.shutdown(socket.SHUT_WR)
    rig.pump()
    assert connection.phase == CLOSED and connection.fd not in rig.worker.connections


def test_the_status_page_closes_after_a_request_body_too(docroot: Path) -> None:
    rig = Rig(docroot, settings={"status.path": STATUS})
    try:
        peer, connection = rig.connect()
        peer.send(get(STATUS, "Content-Length: 2\r\n") + b"{}")
        rig.pump()
        ((status, head, body),) = responses(received(peer)[0])
        assert status == 200 and b'"workers"' in body
        assert "\r\nConnection: close" in head and connection.phase == LINGERING
    finally:
        rig.close()


def test_a_malformed_request_is_answered_400_and_the_rest_is_never_parsed(rig: Rig) -> None:
    peer, connection = rig.connect()
    peer.send(b"GET /small.txt HTTP/1.1\r\nBad Header\r\n\r\n" + get())
    rig.pump()
    data, ended = received(peer)
    ((status, head, _),) = responses(data)
    assert status == 400 and "\r\nConnection: close" in head
    assert ended and connection.phase == LINGERING and not connection.inbuf
    assert rig.worker.responder.not_ok[4] == 1


def test_the_last_request_before_max_requests_says_close_and_the_worker_drains(
    docroot: Path,
) -> None:
    rig = Rig(docroot, max_requests=2)
    try:
        peer, connection = rig.connect()
        peer.send(get() + get())
        rig.pump()
        first, second = responses(received(peer)[0])
        assert "Connection" not in first[1] and "\r\nConnection: close" in second[1]
        assert rig.worker.draining and connection.phase == CLOSED
    finally:
        rig.close()


def test_draining_lingers_idle_connections_and_closes_after_the_next_answer(rig: Rig) -> None:
    idle, idle_connection = rig.connect()
    idle.send(get())
    rig.pump()
    fresh, fresh_connection = rig.connect()  # connected, not asked yet: in flight
    rig.worker.begin_drain(rig.timeouts.graceful, "testing")
    assert idle_connection.phase == LINGERING and received(idle)[1]
    assert fresh_connection.phase == READING
    fresh.send(get())
    rig.pump()
    ((status, head, _),) = responses(received(fresh)[0])
    assert status == 200 and "\r\nConnection: close" in head
    assert fresh_connection.phase == CLOSED


# -- sending: partial sends resumed when writable -------------------------------------


def test_a_file_larger_than_the_socket_buffer_is_resumed_when_writable(
    rig: Rig, docroot: Path
) -> None:
    peer, connection = rig.connect(sndbuf=4096)
    peer.send(get("/big.bin") + get())  # a second request waits behind the first
    rig.pump()
    assert connection.phase == WRITING and connection.file is not None
    assert connection.deadline == rig.clock() + rig.timeouts.send
    data = bytearray()
    for _ in range(10_000):
        chunk, ended = received(peer)
        assert not ended
        data += chunk
        rig.clock.advance(0.001)
        rig.pump()
        if connection.phase == READING and connection.served == 2:
            break
    data += received(peer)[0]
    big, small = responses(bytes(data))
    assert big[0] == 200 and big[2] == (docroot / "big.bin").read_bytes()
    assert small[2] == SMALL
    assert connection.file is None and connection.deadline == rig.clock() + rig.timeouts.keepalive


def test_a_pipeline_of_answers_larger_than_the_socket_buffer_arrives_whole(rig: Rig) -> None:
    count = 200
    peer, connection = rig.connect(sndbuf=4096)
    peer.send(get() * count)
    rig.pump()
    # The in-memory send path stopped part-way through an answer.
    assert connection.phase == WRITING and connection.outbuf
    data = bytearray()
    while connection.served < count:
        data += received(peer)[0]
        rig.pump()
    data += received(peer)[0]
    answers = responses(bytes(data))
    assert len(answers) == count and {body for _, _, body in answers} == {SMALL}
    assert rig.worker.responder.requests == count


# -- deadlines, with the clock moved instead of slept ----------------------------------


def test_an_incomplete_head_gets_408_at_the_header_deadline(rig: Rig) -> None:
    peer, connection = rig.connect()
    peer.send(b"GET /small.txt HT")
    rig.pump()
    rig.sweep(rig.timeouts.header - 0.01)
    assert received(peer) == (b"", False) and connection.phase == READING
    rig.sweep(0.02)
    data, ended = received(peer)
    ((status, head, _),) = responses(data)
    assert status == 408 and "\r\nConnection: close" in head and ended
    assert connection.phase == LINGERING
    rig.sweep(LINGER_SECONDS)
    assert connection.phase == CLOSED


def test_an_idle_keep_alive_connection_is_closed_without_a_byte(rig: Rig) -> None:
    peer, connection = rig.connect()
    peer.send(get())
    rig.pump()
    received(peer)
    rig.sweep(rig.timeouts.keepalive - 0.01)
    assert connection.phase == READING
    rig.sweep(0.02)
    assert received(peer) == (b"", True) and connection.phase == CLOSED


def test_a_silent_new_connection_is_closed_at_the_header_deadline(rig: Rig) -> None:
    peer, connection = rig.connect()
    rig.sweep(rig.timeouts.header)
    assert received(peer) == (b"", True) and connection.phase == CLOSED


def test_a_stalled_send_is_abandoned_at_the_send_deadline(rig: Rig) -> None:
    peer, connection = rig.connect(sndbuf=4096)
    peer.send(get("/big.bin"))
    rig.pump()
    assert connection.phase == WRITING and connection.file is not None
    descriptor = connection.file.descriptor
    holders = descriptor.holders
    rig.sweep(rig.timeouts.send - 0.01)
    assert connection.phase == WRITING
    rig.sweep(0.02)
    assert connection.phase == CLOSED and connection.file is None
    # The response's reference to the file's descriptor is released (once).
    assert descriptor.holders == holders - 1
    data, ended = received(peer)
    assert ended and 0 < len(data) < BIG_BYTES


# -- the PROXY protocol phase ---------------------------------------------------------


@pytest.fixture
def proxied(docroot: Path) -> Iterator[Rig]:
    made = Rig(docroot, settings={"proxy_protocol": True})
    yield made
    made.close()


def test_a_proxy_header_split_at_every_byte_names_the_client(proxied: Rig) -> None:
    stream = b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 80\r\n" + get()
    for cut in range(1, len(stream)):
        peer, connection = proxied.connect()  # a unix socket's peer may send it
        assert connection.phase == AWAITING_PROXY
        peer.send(stream[:cut])
        proxied.pump()
        assert received(peer) == (b"", False)
        peer.send(stream[cut:])
        proxied.pump()
        ((status, _, body),) = responses(received(peer)[0])
        assert status == 200 and body == SMALL
        assert connection.client == "192.0.2.7" and connection.phase == READING


def test_a_bad_proxy_header_is_closed_with_zero_bytes(proxied: Rig) -> None:
    peer, connection = proxied.connect()
    peer.send(get())  # HTTP straight away, no PROXY header
    proxied.pump()
    assert received(peer) == (b"", True) and connection.phase == CLOSED


def test_a_tcp_peer_outside_proxy_protocol_from_is_refused_at_accept(proxied: Rig) -> None:
    peer, connection = proxied.connect(("192.0.2.9", 5555), client="192.0.2.9")
    assert connection.fd not in proxied.worker.connections
    assert received(peer) == (b"", True)
    _trusted, admitted = proxied.connect(("127.0.0.1", 5555))
    assert admitted.phase == AWAITING_PROXY and admitted.fd in proxied.worker.connections


def test_an_incomplete_proxy_header_is_closed_at_the_header_deadline(proxied: Rig) -> None:
    peer, connection = proxied.connect()
    peer.send(b"PROXY TCP4 192.0.2.7")
    proxied.pump()
    proxied.sweep(proxied.timeouts.header)
    assert received(peer) == (b"", True) and connection.phase == CLOSED
