"""PROXY protocol on a live server: headers built byte by byte, the client they name
in the access log, and every bad, missing or untrusted header closed with zero bytes.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    Server,
    flushed_access_log,
    read_until_closed,
    running,
    status_of,
    wait_for,
)

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
GET = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
BODY = b"hello through a proxy\n"
HEADER_SECONDS = 1.5  # timeouts.header: the PROXY header must arrive within it too


def v1(protocol: str, source: str, destination: str, ports: tuple[int, int]) -> bytes:
    return f"PROXY {protocol} {source} {destination} {ports[0]} {ports[1]}\r\n".encode()


def v2(source: str, destination: str, ports: tuple[int, int], tlvs: bytes = b"",
       command: int = 0x21) -> bytes:
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = 0x11 if src.version == 4 else 0x21
    block = src.packed + dst.packed + struct.pack("!HH", *ports) + tlvs
    return SIGNATURE + bytes([command, family]) + struct.pack("!H", len(block)) + block


def v2_local() -> bytes:
    return SIGNATURE + b"\x20\x00\x00\x00"


def exchange(port: int, pieces: list[bytes], host: str = "127.0.0.1", pause: float = 0.0,
             timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``pieces`` (pausing between them), read until the server closes.

    Returns what came back and how long the server took to close after the last piece.
    A reset counts as a close: either way the client got nothing more.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        for index, piece in enumerate(pieces):
            if index and pause:
                time.sleep(pause)
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        sent = time.monotonic()
        return read_until_closed(sock), time.monotonic() - sent


def logged_clients(server: Server, marker: str) -> list[str]:
    """The client field of every access-log line whose request line holds ``marker``."""
    return [line.split(" ", 1)[0] for line in server.access_log.splitlines() if marker in line]


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(BODY)
    return root


@pytest.fixture
def server(tmp_path: Path, docroot: Path) -> Iterator[Server]:
    settings = {
        "docroot": str(docroot), "workers": 2, "proxy_protocol": True,
        "proxy_protocol_from": ["127.0.0.1/32"], "timeouts": {"header": HEADER_SECONDS},
    }
    with running(tmp_path, settings) as started:
        yield started


def get_marked(marker: str) -> bytes:
    return f"GET /hello.txt?{marker} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


VALID = {
    "v1-tcp4": (v1("TCP4", "192.0.2.10", "198.51.100.1", (56324, 443)), "192.0.2.10"),
    "v1-tcp6": (v1("TCP6", "2001:db8::7", "2001:db8::1", (40000, 80)), "2001:db8::7"),
    "v2-ipv4": (v2("192.0.2.11", "198.51.100.1", (56325, 443)), "192.0.2.11"),
    "v2-ipv6": (v2("2001:db8::8", "2001:db8::1", (40001, 80)), "2001:db8::8"),
    "v2-ipv4-tlvs": (v2("203.0.113.5", "198.51.100.1", (1, 2),
                        tlvs=b"\x01\x00\x02h2\x04\x00\x03\x00\x00\x00"), "203.0.113.5"),
    # Health checks: the proxy's own connection, so the peer's address stands.
    "v1-unknown": (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
    "v2-local": (v2_local(), "127.0.0.1"),
}


@pytest.mark.parametrize("name", list(VALID))
def test_a_valid_header_names_the_logged_client(server: Server, name: str) -> None:
    header, client = VALID[name]
    response, _ = exchange(server.port, [header + get_marked(name)])
    assert status_of(response) == 200 and response.endswith(BODY)
    assert wait_for(lambda: logged_clients(server, name), what="the access line") == [client]


def test_a_header_arriving_in_pieces_is_waited_for(server: Server) -> None:
    header = v2("192.0.2.20", "198.51.100.1", (1000, 80))
    pieces = [header[:5], header[5:14], header[14:20], header[20:], get_marked("split-binary")]
    response, _ = exchange(server.port, pieces, pause=0.1)
    assert status_of(response) == 200
    text_header = v1("TCP4", "192.0.2.21", "198.51.100.1", (1001, 80))
    response, _ = exchange(server.port, [text_header[:7], text_header[7:-1], text_header[-1:],
                                         get_marked("split-text")], pause=0.1)
    assert status_of(response) == 200
    wait_for(lambda: logged_clients(server, "split-binary") == ["192.0.2.20"],
             what="the access line")
    assert logged_clients(server, "split-text") == ["192.0.2.21"]


def test_the_header_comes_once_and_keep_alive_requests_follow(server: Server) -> None:
    header = v1("TCP4", "192.0.2.30", "198.51.100.1", (2000, 80))
    first = b"GET /hello.txt?keep-1 HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(header + first)
        received = b""
        while received.count(BODY) < 1:
            received += sock.recv(65536)
        sock.sendall(get_marked("keep-2"))
        while received.count(BODY) < 2:
            chunk = sock.recv(65536)
            assert chunk, "closed before the second response"
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 2
    wait_for(lambda: logged_clients(server, "keep-2") == ["192.0.2.30"], what="the access line")
    assert logged_clients(server, "keep-1") == ["192.0.2.30"]


MALFORMED = {
    "absent": GET,
    "tls": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 32,
    "lowercase": b"proxy TCP4 192.0.2.10 198.51.100.1 1 2\r\n" + GET,
    "double-space": b"PROXY  TCP4 192.0.2.10 198.51.100.1 1 2\r\n" + GET,
    "bad-protocol": b"PROXY TCP5 192.0.2.10 198.51.100.1 1 2\r\n" + GET,
    "leading-zero-address": b"PROXY TCP4 192.0.2.010 198.51.100.1 1 2\r\n" + GET,
    "leading-zero-port": b"PROXY TCP4 192.0.2.10 198.51.100.1 01 2\r\n" + GET,
    "port-too-large": b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 2\r\n" + GET,
    "ipv6-in-tcp4": b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n" + GET,
    "lf-only": b"PROXY TCP4 192.0.2.10 198.51.100.1 1 2\n" + GET,
    "no-crlf-in-107": b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n" + GET,
    "v2-version-1": SIGNATURE + b"\x11\x11\x00\x0c" + b"\0" * 12 + GET,
    "v2-command-2": SIGNATURE + b"\x22\x11\x00\x0c" + b"\0" * 12 + GET,
    "v2-family-4": SIGNATURE + b"\x21\x41\x00\x0c" + b"\0" * 12 + GET,
    "v2-short-block": SIGNATURE + b"\x21\x11\x00\x0b" + b"\0" * 11 + GET,
    "v2-huge": SIGNATURE + b"\x21\x11\xff\xff" + b"\0" * 64,
    "v2-broken-tlv": v2("192.0.2.10", "198.51.100.1", (1, 2), tlvs=b"\x01\x00\x09h2") + GET,
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_or_absent_header_is_closed_with_zero_bytes(
    server: Server, name: str
) -> None:
    response, waited = exchange(server.port, [MALFORMED[name]])
    assert response == b""
    assert waited < HEADER_SECONDS + 5  # closed by the server, not by our timeout
    response, _ = exchange(server.port, [v1("TCP4", "192.0.2.99", "198.51.100.1", (1, 2))
                                         + get_marked(f"after-{name}")])
    assert status_of(response) == 200  # the worker is fine


def test_an_incomplete_header_is_closed_at_the_header_deadline(server: Server) -> None:
    for partial in (b"PROXY TCP4 192.0.2.10", SIGNATURE[:7], v2_local()[:15]):
        response, waited = exchange(server.port, [partial])
        assert response == b""
        assert HEADER_SECONDS - 0.3 <= waited < HEADER_SECONDS + 5, (partial, waited)


def test_a_silent_connection_is_closed_at_the_header_deadline(server: Server) -> None:
    response, waited = exchange(server.port, [])
    assert response == b""
    assert HEADER_SECONDS - 0.3 <= waited < HEADER_SECONDS + 5


def test_a_peer_outside_proxy_protocol_from_is_closed_with_zero_bytes(
    tmp_path: Path, docroot: Path
) -> None:
    settings = {"docroot": str(docroot), "workers": 1, "proxy_protocol": True,
                "proxy_protocol_from": ["10.0.0.0/8", "::1/128"]}
    with running(tmp_path, settings) as server:
        header = v2("192.0.2.40", "198.51.100.1", (1, 2))
        started = time.monotonic()
        response, _ = exchange(server.port, [header + get_marked("untrusted")])
        assert response == b""
        assert time.monotonic() - started < 5  # closed, not left to a deadline (generous)
        assert "untrusted" not in flushed_access_log(server)
        wait_for(lambda: "127.0.0.1 is not in proxy_protocol_from" in server.error_log,
                 timeout=5, what="the refusal in the error log")


def test_an_ipv6_proxy_is_trusted_by_the_default_networks(tmp_path: Path, docroot: Path) -> None:
    settings = {"docroot": str(docroot), "workers": 1, "host": "::1", "proxy_protocol": True}
    with running(tmp_path, settings) as server:
        header = v1("TCP4", "192.0.2.50", "198.51.100.1", (1, 2))
        response, _ = exchange(server.port, [header + get_marked("over-ipv6")], host="::1")
        assert status_of(response) == 200
        wait_for(lambda: logged_clients(server, "over-ipv6") == ["192.0.2.50"],
                 what="the access line")


def test_without_proxy_protocol_a_header_is_just_a_bad_request(
    tmp_path: Path, docroot: Path
) -> None:
    with running(tmp_path, {"docroot": str(docroot), "workers": 1}) as server:
        header = v1("TCP4", "192.0.2.60", "198.51.100.1", (1, 2))
        response, _ = exchange(server.port, [header + GET])
        assert status_of(response) == 400  # nobody's header is believed unless configured


def test_curl_haproxy_protocol_is_understood(server: Server) -> None:
    """The debugging recipe of docs/scaling.md: curl --haproxy-protocol sends a v1 header."""
    done = subprocess.run(
        ["curl", "-s", "--max-time", "10", "--haproxy-protocol",
         f"http://127.0.0.1:{server.port}/hello.txt?via-curl"],
        capture_output=True, timeout=30,
    )
    assert done.stdout == BODY
    assert wait_for(lambda: logged_clients(server, "via-curl"), what="the line") == ["127.0.0.1"]
    plain = subprocess.run(
        ["curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
         f"http://127.0.0.1:{server.port}/hello.txt"], capture_output=True, text=True, timeout=30,
    )
    assert plain.stdout == "000"  # closed without an answer
