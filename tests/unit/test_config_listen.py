"""``listen:`` entries, ``tls:`` and their rules together (config/listen.py, SPEC §6)."""

from __future__ import annotations

import pytest

from forkserver.config.checks import Invalid
from forkserver.config.listen import (
    listen_entry,
    listen_list,
    min_version,
    tls_settings,
)
from forkserver.config.model import ListenEntry, TlsSettings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ListenEntry("127.0.0.1", 8080)),
        ("[::]:80", ListenEntry("::", 80)),
        ("[0:0::1]:443", ListenEntry("::1", 443)),
        ("localhost:0", ListenEntry("localhost", 0)),
        ("unix:/run/forkserver/http.sock", ListenEntry("unix:/run/forkserver/http.sock", 0)),
        ({"address": "127.0.0.1:8443", "tls": True}, ListenEntry("127.0.0.1", 8443, tls=True)),
        ({"address": "[::1]:8443"}, ListenEntry("::1", 8443)),
        ({"address": "unix:/run/x.sock", "tls": True}, ListenEntry("unix:/run/x.sock", 0, True)),
    ],
)
def test_listen_entries(value: object, expected: ListenEntry) -> None:
    assert listen_entry(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:", "has no port"),
        ("127.0.0.1:http", "has no port"),
        ("127.0.0.1:65536", "out of range"),
        ("::1:80", "without brackets: write '[::1]:80'"),
        ("[::1]", "is not '[IPv6]:PORT'"),
        ("[example.org]:80", "which is not an IPv6 address"),
        ("http://example.org:80", "is a URL"),
        ("unix:run/x.sock", "absolute path"),
        (8080, "is an integer"),
        ({"address": "127.0.0.1:1", "tls": "yes"}, "expected true or false"),
        ({"address": "127.0.0.1:1", "ssl": True}, "unknown key 'ssl'"),
        ({"tls": True}, "needs an address"),
    ],
)
def test_bad_listen_entries(value: object, reason: str) -> None:
    with pytest.raises(Invalid) as caught:
        listen_entry(value)
    assert reason in caught.value.reason


def test_a_listen_list_keeps_its_order_and_refuses_repeats() -> None:
    entries = listen_list(["127.0.0.1:8080", {"address": "127.0.0.1:8443", "tls": True}])
    assert [e.url() for e in entries] == ["http://127.0.0.1:8080", "https://127.0.0.1:8443"]
    assert entries[1].url(port=9443) == "https://127.0.0.1:9443"
    assert ListenEntry("::1", 443, True).url() == "https://[::1]:443"
    with pytest.raises(Invalid, match="entry 2 repeats entry 1"):
        listen_list(["127.0.0.1:8080", {"address": "127.0.0.1:8080", "tls": True}])
    with pytest.raises(Invalid, match="entry 2 has no port"):
        listen_list(["127.0.0.1:8080", "127.0.0.1"])
    assert listen_list([]) == listen_list(None) == ()  # host and port's one listener
    # Two ":0" listeners are two different free ports.
    assert len(listen_list(["127.0.0.1:0", "127.0.0.1:0"])) == 2


def test_tls_mappings() -> None:
    assert tls_settings({"certificate": "a.pem", "key": "a.key"}) == TlsSettings("a.pem", "a.key")
    assert tls_settings(
        {"certificate": "a.pem", "key": "a.key", "min_version": "TLSv1.3"}
    ).min_version == "TLSv1.3"
    assert tls_settings(
        {"certificate": "a.pem", "key": "a.key"}, inherited_min_version="TLSv1.3"
    ).min_version == "TLSv1.3"
    for value, reason in [
        ({"certificate": "a.pem"}, "needs key"),
        ({"certificate": "a.pem", "key": ""}, "expected the path of a PEM file"),
        ({"certificate": "a.pem", "key": "k", "min_version": "TLSv1.1"}, "expected one of"),
        ({"certificate": "a.pem", "key": "k", "ciphers": "ALL"}, "unknown key 'ciphers'"),
        ("a.pem", "expected a mapping"),
    ]:
        with pytest.raises(Invalid) as caught:
            tls_settings(value)
        assert reason in caught.value.reason, (value, caught.value.reason)
    with pytest.raises(Invalid):
        min_version("SSLv3")
