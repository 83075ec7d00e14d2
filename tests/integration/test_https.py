"""HTTPS against the real program: listeners, certificates, HTTP over TLS, reload.

Certificates come from a test authority made with the real ``openssl`` command line
(tests/tlscerts.py); clients are curl, ``openssl s_client`` and Python's ``ssl``.
Every wait is a poll with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forkserver.tls.ktls import ktls_unavailable
from tests.support import (
    Server,
    alive,
    flushed_access_log,
    listening_inode,
    socket_inodes,
    wait_for,
)
from tests.tlscerts import Authority, Issued

HTTPS_LISTENING = re.compile(r"listening on https://127\.0\.0\.1:(\d+)")
HTTP_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def issued(authority: Authority) -> Issued:
    return authority.issue("localhost", "www.example.test")


def docroot(directory: Path) -> Path:
    root = directory / "www"
    root.mkdir()
    (root / "index.html").write_text("hello over tls\n")
    (root / "big.bin").write_bytes(bytes(range(256)) * 4096 * 10)  # 10 MiB
    return root


class TlsServer(Server):
    """A Server whose listeners come from ``listen`` (host/port removed)."""

    def __init__(self, directory: Path, settings: dict[str, Any]) -> None:
        super().__init__(directory, settings, [])
        del self.settings["host"], self.settings["port"]
        self.write_config()

    def https_port(self) -> int:
        match = HTTPS_LISTENING.search(self.error_log)
        assert match, self.error_log
        return int(match.group(1))

    def http_port(self) -> int:
        match = HTTP_LISTENING.search(self.error_log)
        assert match, self.error_log
        return int(match.group(1))


@contextlib.contextmanager
def tls_server(
    directory: Path, issued: Issued, **settings: Any
) -> Iterator[TlsServer]:
    server = TlsServer(directory, {
        "listen": ["127.0.0.1:0", {"address": "127.0.0.1:0", "tls": True}],
        "tls": {"certificate": str(issued.certificate), "key": str(issued.key)},
        "docroot": str(docroot(directory)),
        **settings,
    })
    try:
        server.start()
        yield server
    finally:
        server.stop()


def client_context(authority: Authority) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(authority.certificate))


def tls_connect(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None,
                server_name: str = "localhost") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=server_name, session=session)


def read_response(sock: ssl.SSLSocket) -> bytes:
    """One response with Content-Length off a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head + b"\r\n\r\n" + body


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def test_listeners_are_logged_in_order_and_https_serves_like_http(
    tmp_path: Path, authority: Authority, issued: Issued
) -> None:
    with tls_server(tmp_path, issued, access_log_format="json") as server:
        lines = [line for line in server.error_log.splitlines() if "listening on" in line]
        assert "http://127.0.0.1:" in lines[0] and "https://127.0.0.1:" in lines[1]
        # The kTLS verdict, once, as the master's detection found it (here: no tls module).
        why = ktls_unavailable()
        verdict = f"TLS in userspace: {why}" if why is not None else "kTLS: asked of OpenSSL"
        assert server.error_log.count(verdict) == 1
        port = server.https_port()
        resolve = f"localhost:{port}:127.0.0.1"
        base = f"https://localhost:{port}"
        # Keep-alive: two requests over one connection, certificate verified by curl.
        result = curl("-v", "--cacert", str(authority.certificate), "--resolve", resolve,
                      f"{base}/", f"{base}/index.html")
        assert result.stdout == "hello over tls\n" * 2
        assert "ALPN: server accepted http/1.1" in result.stderr
        assert "Re-using existing connection" in result.stderr
        # Ranges and conditionals as over plain HTTP.
        ranged = curl("--cacert", str(authority.certificate), "--resolve", resolve,
                      "-r", "6-9", f"{base}/index.html")
        assert ranged.stdout == "over"
        etag = curl("-I", "--cacert", str(authority.certificate), "--resolve", resolve,
                    f"{base}/index.html")
        tag = re.search(r"(?i)etag: (\S+)", etag.stdout)
        assert tag
        again = curl("-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                     str(authority.certificate), "--resolve", resolve,
                     "-H", f"If-None-Match: {tag.group(1)}", f"{base}/index.html")
        assert again.stdout == "304"
        # The plain listener serves the same files.
        plain = curl(f"http://127.0.0.1:{server.http_port()}/")
        assert plain.stdout == "hello over tls\n"
        # The JSON access log says which (SPEC §6).
        logged = [json.loads(line) for line in flushed_access_log(server).splitlines()]
        schemes = {(entry["scheme"], entry["host"]) for entry in logged}
        assert ("https", "localhost") in schemes and ("http", "127.0.0.1") in schemes


def test_pipelined_requests_over_tls_are_answered_in_order(
    tmp_path: Path, authority: Authority, issued: Issued
) -> None:
    with tls_server(tmp_path, issued) as server, tls_connect(
        server.https_port(), client_context(authority)
    ) as sock:
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     b"HEAD /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     b"GET /missing HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        statuses = re.findall(rb"HTTP/1\.1 (\d{3})", data)
        assert statuses == [b"200", b"200", b"404"]
        assert data.count(b"hello over tls\n") == 1


def test_a_large_body_over_tls_does_not_starve_other_clients(
    tmp_path: Path, authority: Authority, issued: Issued
) -> None:
    context = client_context(authority)
    with tls_server(tmp_path, issued, workers=1) as server:
        port = server.https_port()
        with tls_connect(port, context) as slow, tls_connect(port, context) as quick:
            slow.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            first = slow.recv(65536)  # the download is under way, and read slowly
            assert first.startswith(b"HTTP/1.1 200")
            quick.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(quick).endswith(b"hello over tls\n")
            received = len(first.partition(b"\r\n\r\n")[2])
            expected = (tmp_path / "www" / "big.bin").read_bytes()
            body = bytearray(first.partition(b"\r\n\r\n")[2])
            while received < len(expected):
                chunk = slow.recv(1 << 20)
                assert chunk
                body += chunk
                received += len(chunk)
            assert bytes(body) == expected


def s_client(port: int, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         *args], input=data, capture_output=True, timeout=30, check=False,
    )


def test_openssl_s_client_sees_alpn_tls13_and_no_old_versions(
    tmp_path: Path, authority: Authority, issued: Issued
) -> None:
    with tls_server(tmp_path, issued) as server:
        port = server.https_port()
        modern = s_client(port, "-alpn", "http/1.1", "-CAfile", str(authority.certificate),
                          "-brief")
        assert modern.returncode == 0, modern.stderr
        text = modern.stderr.decode()
        assert "Protocol version: TLSv1.3" in text
        assert "Verification: OK" in text
        full = s_client(port, "-alpn", "http/1.1")  # without -brief, it names the ALPN
        assert b"ALPN protocol: http/1.1" in full.stdout
        tls12 = s_client(port, "-tls1_2", "-brief")
        assert "Protocol version: TLSv1.2" in tls12.stderr.decode()
        for old in ("-tls1", "-tls1_1"):
            refused = s_client(port, old, "-cipher", "DEFAULT:@SECLEVEL=0")
            assert refused.returncode != 0
            assert b"Protocol version: TLSv1" not in refused.stderr.replace(b"TLSv1.2", b"")


def worker_of(server: Server, client_port: int, server_port: int) -> int | None:
    """The worker holding the server side of the connection from ``client_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local = int(parts[1].rsplit(":", 1)[1], 16)
        remote = int(parts[2].rsplit(":", 1)[1], 16)
        if local == server_port and remote == client_port:
            inode = f"socket:[{parts[9]}]"
    if inode is None:
        return None
    return next((pid for pid in server.workers() if inode in socket_inodes(pid)), None)


def test_a_session_resumes_on_another_worker(
    tmp_path: Path, authority: Authority, issued: Issued
) -> None:
    context = client_context(authority)
    with tls_server(tmp_path, issued, workers=2) as server:
        port = server.https_port()
        with tls_connect(port, context) as first:
            first.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            read_response(first)  # the tickets arrive with the first answer
            session = first.session
            first_worker = wait_for(
                lambda: worker_of(server, first.getsockname()[1], port), what="first worker"
            )
        assert session is not None
        elsewhere = []
        for _ in range(40):  # EPOLLEXCLUSIVE spreads new connections; bounded tries
            with tls_connect(port, context, session) as again:
                again.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                read_response(again)
                worker = wait_for(lambda: worker_of(server, again.getsockname()[1], port),
                                  what="the worker")
                if worker != first_worker:
                    elsewhere.append(again.session_reused)
                    if len(elsewhere) >= 2:
                        break
        assert elsewhere, "no connection landed on the other worker"
        assert all(elsewhere)


def test_hostile_input_on_the_tls_port_closes_that_connection_only(
    tmp_path: Path, authority: Authority, issued: Issued
) -> None:
    context = client_context(authority)
    with tls_server(tmp_path, issued, timeouts={"header": 1.0},
                    status={"path": "/metrics"}) as server:
        port = server.https_port()
        workers = server.workers()
        # Garbage, and plain HTTP, on the TLS port: closed.
        for junk in (b"\x00" * 64 + bytes(range(256)), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(junk)
                with contextlib.suppress(ConnectionResetError):
                    while sock.recv(4096):
                        pass
        # Hundreds of half-open handshakes: a partial ClientHello, then silence; and a
        # ClientHello that never comes. All close at the handshake deadline.
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
        for index, sock in enumerate(stalled):
            if index % 2:
                sock.sendall(hello)
        # Meanwhile another client is served.
        with tls_connect(port, context) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(sock).endswith(b"hello over tls\n")
        for sock in stalled:
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(4096) == b""  # closed by the server, not by us
            sock.close()
        # Renegotiation (TLS 1.2; 1.3 has none) is refused: the connection goes.
        # s_client's "R" command asks; stdin stays open so that the answer decides.
        with subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        ) as renegotiate:
            assert renegotiate.stdin is not None and renegotiate.stdout is not None
            renegotiate.stdin.write(b"R\n")
            renegotiate.stdin.flush()
            output = renegotiate.stdout.read()  # until s_client exits on the refusal
            renegotiate.wait(timeout=30)
        assert b"RENEGOTIATING" in output
        assert b"no renegotiation" in output
        assert server.workers() == workers
        with tls_connect(port, context) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(sock).endswith(b"hello over tls\n")
        errors = [line for line in server.error_log.splitlines() if "[error]" in line]
        assert not errors  # failures are counted, never an error line per connection

        def handshakes() -> dict[str, int]:
            metrics = curl("-H", "Accept: text/plain",
                           f"http://127.0.0.1:{server.http_port()}/metrics").stdout
            return {m[0]: int(m[1]) for m in re.findall(
                r'forkserver_tls_handshakes_total\{result="(\w+)"\} (\d+)', metrics)}

        # 2 junk + 300 stalled + the renegotiation's (failed after it); >= 2 ok.
        counted = wait_for(lambda: (h := handshakes()) and h["failed"] >= 302 and h,
                           what="the handshake counters")
        assert counted["ok"] >= 2


def replace_certificate(target: Issued, source: Issued) -> None:
    target.certificate.write_bytes(source.certificate.read_bytes())
    target.key.write_bytes(source.key.read_bytes())


def served_names(port: int, authority: Authority) -> set[str]:
    context = client_context(authority)
    with tls_connect(port, context) as sock:
        certificate = sock.getpeercert()
    assert certificate is not None
    return {str(entry[1]) for entry in certificate["subjectAltName"]}


def test_hup_serves_a_renewed_certificate_and_refuses_a_broken_one(
    tmp_path: Path, authority: Authority
) -> None:
    live = authority.issue("localhost", "old.example.test")
    renewed = authority.issue("localhost", "new.example.test")
    with tls_server(tmp_path, live) as server:
        port = server.https_port()
        assert "old.example.test" in served_names(port, authority)
        replace_certificate(live, renewed)
        server.signal(signal.SIGHUP)
        wait_for(lambda: "new.example.test" in served_names(port, authority),
                 what="the renewed certificate")
        # A key that does not match: the reload is refused, the old generation serves.
        live.key.write_bytes(authority.issue("localhost").key.read_bytes())
        server.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in server.error_log, what="the refused reload")
        assert f"{live.key}: does not match the certificate {live.certificate}" in \
            server.error_log
        assert "new.example.test" in served_names(port, authority)


def test_check_prints_names_and_expiry_and_warns_within_14_days(
    tmp_path: Path, authority: Authority
) -> None:
    end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() + 3 * 86400))
    soon = authority.issue("localhost", end=end)
    server = TlsServer(tmp_path, {
        "listen": [{"address": "127.0.0.1:0", "tls": True}],
        "tls": {"certificate": str(soon.certificate), "key": str(soon.key)},
        "docroot": str(tmp_path),
    })
    result = subprocess.run(
        [sys.executable, "-m", "forkserver", "-c", str(server.config_path), "--check"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"certificate {soon.certificate}: localhost; expires " in result.stdout
    assert "less than 14" in result.stderr
    expired = authority.issue("localhost", start="20200101000000Z", end="20200102000000Z")
    server.write_config(tls={"certificate": str(expired.certificate), "key": str(expired.key)})
    refused = subprocess.run(
        [sys.executable, "-m", "forkserver", "-c", str(server.config_path), "--check"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert refused.returncode == 2
    assert f"tls: {expired.certificate}: expired on 2020-01-02" in refused.stderr


# testssl.sh's verdicts that are about the test's certificate authority, not about
# the server: none expected (the leaf names 127.0.0.1, is trusted via --add-ca, has an
# OCSP address), listed here so that a new one shows up as a failure with its id.
TESTSSL_BUDGET_SECONDS = 110


def test_testssl_finds_nothing_high_or_critical(
    tmp_path: Path, authority: Authority
) -> None:
    leaf = authority.issue(
        "localhost", ips=("127.0.0.1",), end=time.strftime(
            "%Y%m%d%H%M%SZ", time.gmtime(time.time() + 90 * 86400)),
        extensions=("authorityInfoAccess=OCSP;URI:http://ocsp.example.test/",),
    )
    report = tmp_path / "testssl.json"
    with tls_server(tmp_path, leaf) as server:
        # Protocols (-p), cipher categories (-s), the server's preferences (-P) and
        # defaults (-S: certificate, tickets, resumption), headers (-h) and every
        # vulnerability check (-U: Heartbleed, CCS, ticketbleed, ROBOT, renegotiation,
        # CRIME, BREACH, POODLE, SWEET32, FREAK, DROWN, LOGJAM, BEAST, LUCKY13, RC4...);
        # not the client simulation or the per-cipher listing, the slow parts.
        result = subprocess.run(
            ["testssl", "--quiet", "--color", "0", "--warnings", "off", "--fast",
             "-p", "-s", "-P", "-S", "-h", "-U",
             "--ip", "one", "--add-ca", str(authority.certificate),
             "--jsonfile", str(report), f"127.0.0.1:{server.https_port()}"],
            capture_output=True, text=True, timeout=TESTSSL_BUDGET_SECONDS, check=False,
        )
        assert report.exists(), result.stdout[-2000:] + result.stderr[-2000:]
    findings = json.loads(report.read_text())
    serious = [(f["id"], f["severity"], f["finding"]) for f in findings
               if f["severity"] in ("HIGH", "CRITICAL")]
    assert not serious
    ids = {f["id"]: f for f in findings}
    assert ids["TLS1"]["finding"] == "not offered"
    assert ids["TLS1_1"]["finding"] == "not offered"
    assert ids["SSLv3"]["finding"] == "not offered"
    assert ids["TLS1_3"]["finding"].startswith("offered")


def test_redirect_to_https_keeps_acme_challenges_on_http(
    tmp_path: Path, issued: Issued
) -> None:
    with tls_server(tmp_path, issued, redirect_to_https=True) as server:
        challenge = tmp_path / "www" / ".well-known" / "acme-challenge"
        challenge.mkdir(parents=True)
        (challenge / "token123").write_text("token123.thumbprint")
        plain = f"http://127.0.0.1:{server.http_port()}"
        moved = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                     "-H", "Host: www.example.test", f"{plain}/index.html?x=1")
        assert moved.stdout == (
            f"308 https://www.example.test:{server.https_port()}/index.html?x=1"
        )
        served = curl("-H", "Host: www.example.test",
                      f"{plain}/.well-known/acme-challenge/token123")
        assert served.stdout == "token123.thumbprint"


def test_usr2_hands_the_tls_listener_to_the_new_master(
    tmp_path: Path, authority: Authority, issued: Issued
) -> None:
    pidfile = tmp_path / "forkserver.pid"
    context = client_context(authority)
    with tls_server(tmp_path, issued, pidfile=str(pidfile)) as server:
        port = server.https_port()
        old_master = server.pid
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(old_master),
                 what="the pidfile")
        server.signal(signal.SIGUSR2)
        wait_for(lambda: pidfile.read_text().strip() not in ("", str(old_master)),
                 timeout=15, what="the pidfile naming the new master")
        new_master = int(pidfile.read_text())
        try:
            assert server.process is not None
            assert server.process.wait(timeout=40) == 0
            # The same port, still TLS, served by the new master's workers.
            with tls_connect(port, context) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                assert read_response(sock).endswith(b"hello over tls\n")
            assert server.error_log.count(f"listening on https://127.0.0.1:{port}") == 2
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(new_master, signal.SIGQUIT)
            wait_for(lambda: not alive(new_master), timeout=15, what="the new master gone")


def test_sni_picks_each_sites_certificate_and_host_must_agree(
    tmp_path: Path, authority: Authority, issued: Issued
) -> None:
    docs = authority.issue("docs.example.test")
    shop = authority.issue("shop.example.test", "*.shop.example.test", kind="rsa")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.html").write_text("docs\n")
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "index.html").write_text("shop\n")
    with tls_server(tmp_path, issued, sites=[
        {"names": ["docs.example.test"], "docroot": str(tmp_path / "docs"),
         "tls": {"certificate": str(docs.certificate), "key": str(docs.key)}},
        {"names": ["shop.example.test", "*.shop.example.test"],
         "docroot": str(tmp_path / "shop"),
         "tls": {"certificate": str(shop.certificate), "key": str(shop.key)}},
    ]) as server:
        port = server.https_port()
        context = client_context(authority)
        for name, expected in [("docs.example.test", "docs.example.test"),
                               ("a.shop.example.test", "shop.example.test"),
                               ("localhost", "localhost")]:  # no site claims it: top level
            with tls_connect(port, context, server_name=name) as sock:
                certificate = sock.getpeercert()
                assert certificate is not None
                assert expected in {str(e[1]) for e in certificate["subjectAltName"]}
        with tls_connect(port, context, server_name="docs.example.test") as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: docs.example.test\r\n\r\n")
            assert read_response(sock).endswith(b"docs\n")
            # The same connection asks for the other site: misdirected (RFC 9110 §15.5.20).
            sock.sendall(b"GET / HTTP/1.1\r\nHost: shop.example.test\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 421 ")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_socket_activation_passes_plain_and_tls_listeners_in_order(
    tmp_path: Path, authority: Authority, issued: Issued
) -> None:
    plain, secure = free_port(), free_port()
    server = TlsServer(tmp_path, {
        "listen": [f"127.0.0.1:{plain}", {"address": f"127.0.0.1:{secure}", "tls": True}],
        "tls": {"certificate": str(issued.certificate), "key": str(issued.key)},
        "docroot": str(docroot(tmp_path)),
    })
    command = ["systemd-socket-activate", "-l", f"127.0.0.1:{plain}",
               "-l", f"127.0.0.1:{secure}",
               sys.executable, "-m", "forkserver", "-c", str(server.config_path)]
    with open(server.stderr_path, "wb") as stderr:
        server.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stderr,
                                          stderr=stderr)
    try:
        wait_for(lambda: listening_inode(secure), what="systemd-socket-activate listening")
        # systemd-socket-activate starts the program at the first connection, which
        # waits in the backlog until a worker accepts it.
        with tls_connect(secure, client_context(authority)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(sock).endswith(b"hello over tls\n")
        assert curl(f"http://127.0.0.1:{plain}/").stdout == "hello over tls\n"
        log = server.error_log
        assert log.index(f"listening on http://127.0.0.1:{plain}") < log.index(
            f"listening on https://127.0.0.1:{secure}")
    finally:
        server.stop()
