"""``listen:`` entries, ``tls:`` and their rules together (config/listen.py, SPEC §6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkserver.config import load_config
from forkserver.config.checks import Invalid
from forkserver.config.listen import (
    listen_entries,
    listen_entry,
    listen_list,
    min_version,
    tls_settings,
)
from forkserver.config.model import ListenEntry, TlsSettings
from forkserver.errors import ConfigError


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


def load(tmp_path: Path, text: str, **overrides: object) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    try:
        load_config(str(path), overrides or None)
    except ConfigError as exc:
        return exc.problems
    return []


def test_listen_and_host_or_port_together_are_refused(tmp_path: Path) -> None:
    listen = "listen: ['127.0.0.1:8080']\n"
    assert load(tmp_path, listen) == []
    (problem,) = load(tmp_path, "port: 80\n" + listen)
    assert problem.endswith("site.yaml:1: port: 80 cannot be given with listen (listen "
                            "replaces host and port: add the address to listen instead)")
    (problem,) = load(tmp_path, listen, host="0.0.0.0")
    assert problem.startswith("command line: --host: '0.0.0.0' cannot be given with listen")


def test_a_tls_listener_needs_a_certificate_and_key_together(tmp_path: Path) -> None:
    tls_listen = "listen: [{address: '127.0.0.1:8443', tls: true}]\n"
    (problem,) = load(tmp_path, tls_listen)
    assert "listen: 'tls: true' needs a certificate: set tls.certificate and tls.key" in problem
    (problem,) = load(tmp_path, tls_listen + "tls: {certificate: c.pem}\n")
    assert f"site.yaml:2: tls.certificate: '{tmp_path / 'c.pem'}' needs tls.key as well" in problem
    config_problems = load(tmp_path, tls_listen + "tls: {certificate: c.pem, key: k.pem}\n")
    assert config_problems == []  # the files themselves are tls/'s to read (start, --check)


def test_proxy_protocol_on_a_tls_listener_is_refused(tmp_path: Path) -> None:
    (problem,) = load(
        tmp_path, "listen: [{address: '127.0.0.1:8443', tls: true}]\n"
        "tls: {certificate: c.pem, key: k.pem}\nproxy_protocol: true\n"
    )
    assert "proxy_protocol: true cannot be used with a TLS listener yet" in problem


def test_paths_resolve_against_the_file_and_entries_default_to_host_and_port(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("tls: {certificate: certs/c.pem, key: certs/k.pem, min_version: TLSv1.3}\n")
    config = load_config(str(path))
    assert config.tls == TlsSettings(
        str(tmp_path / "certs/c.pem"), str(tmp_path / "certs/k.pem"), "TLSv1.3"
    )
    assert listen_entries(config) == (ListenEntry(config.host, config.port),)
