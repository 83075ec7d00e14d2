"""Where redirect_to_https sends a request (worker/tlsrouting.py, SPEC §6)."""

from __future__ import annotations

import pytest

from forkserver.worker.tlsrouting import https_location


@pytest.mark.parametrize(
    ("host", "port", "target", "expected"),
    [
        ("example.org", 443, "/a?b=1", "https://example.org/a?b=1"),
        ("Example.ORG.:80", 8443, "/", "https://example.org:8443/"),
        ("[::1]:8080", 8443, "/x", "https://[::1]:8443/x"),
        ("example.org", None, "/x", "https://example.org/x"),  # no TLS listener here: 443
        ("example.org", 443, "http://example.org/p?q", "https://example.org/p?q"),
        ("", 443, "/", None),  # HTTP/1.0 without Host: nowhere to send the client
    ],
)
def test_https_location(host: str, port: int | None, target: str, expected: str | None) -> None:
    assert https_location(host, port, target) == expected
