"""The last HTTP gaps on the real program (issue 18): Expect and OPTIONS *, with curl
(which sends Expect: 100-continue by itself for uploads) and raw sockets."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, read_until_closed, request, running, status_of

BODY = b"expected\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.txt").write_bytes(BODY)
    with running(tmp_path, {"docroot": str(root), "workers": 2}) as started:
        yield started


def head_of(response: bytes) -> dict[str, str]:
    lines = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_expect_100_continue_is_answered_with_the_final_status(server: Server) -> None:
    for value in ("100-continue", "100-Continue", "100-CONTINUE"):
        response = request(server.port, (
            f"GET /a.txt HTTP/1.1\r\nHost: x\r\nExpect: {value}\r\nConnection: close\r\n\r\n"
        ).encode())
        assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(BODY)
        assert b"100 Continue" not in response  # no interim response: no body is read


def test_expect_with_a_body_gets_the_final_status_without_waiting(server: Server) -> None:
    """curl sends Expect: 100-continue for a large upload and waits (1 s by default)
    for 100; the final status comes at once instead, and the body is never read."""
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
         "--expect100-timeout", "120", "-H", "Expect: 100-continue",
         "--data-binary", "@-", server.url("/a.txt")],
        # A curl still waiting for 100 (Continue) would outlive this deadline.
        input=b"x" * 2_000_000, capture_output=True, timeout=60, check=False,
    )
    code, _ = result.stdout.decode().split()
    assert code == "405"  # POST is not served; what matters is that it did not wait


@pytest.mark.parametrize("value", ["foo", "100-continue, foo", "foo, 100-continue",
                                   "100-continue;q=1"])
def test_any_other_expectation_is_417(server: Server, value: str) -> None:
    response = request(server.port, (
        f"GET /a.txt HTTP/1.1\r\nHost: x\r\nExpect: {value}\r\nConnection: close\r\n\r\n"
    ).encode())
    assert status_of(response) == 417
    assert BODY not in response


def test_417_keeps_the_connection_and_head_has_no_body(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"HEAD /a.txt HTTP/1.1\r\nHost: x\r\nExpect: nope\r\n\r\n"
                     b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        both = read_until_closed(sock)
    first, _, rest = both.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 417 Expectation Failed")
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(BODY)


def test_options_asterisk_names_the_methods(server: Server) -> None:
    response = request(server.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200
    headers = head_of(response)
    assert headers["allow"] == "GET, HEAD, OPTIONS"
    assert headers["content-length"] == "0"
    assert response.endswith(b"\r\n\r\n")
    # OPTIONS on a resource is still not served.
    other = request(server.port, b"OPTIONS /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(other) == 405
