"""TLS handshakes between a client ``SSLObject`` and the worker's ``TlsStream``.

The server side is the real transport over one end of a socketpair, non-blocking as
in the worker; the client is an ``SSLObject`` over memory BIOs on the other end, so
both run in this process, step by step, with no thread and no sleep. Resumption is
tested across forked processes: that is what "any worker of a generation" means.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import select
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from forkserver.sites.hosts import SiteTable
from forkserver.tls.certificates import Certificate, load_certificate
from forkserver.tls.contexts import SiteNames, TlsContexts, build_contexts, normalize_name
from forkserver.tls.transport import (
    DONE,
    FILE_CHUNK,
    WANT_READ,
    HandshakeFailed,
    TlsStream,
)
from tests.tlscerts import Authority, Issued

STEPS = 200  # a handshake takes a handful of round trips; this bounds a broken one


@dataclass
class Certificates:
    authority: Authority
    default: Certificate  # "default.test"
    example: Certificate  # example.org and *.example.net, ECDSA
    docs: Certificate  # docs.example.org, RSA
    default_issued: Issued


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    authority = Authority(tmp_path_factory.mktemp("ca"))
    default = authority.issue("default.test")
    return Certificates(
        authority,
        load_certificate(default.settings()),
        load_certificate(authority.issue("example.org", "*.example.net").settings()),
        load_certificate(authority.issue("docs.example.org", kind="rsa").settings()),
        default,
    )


def table(names: dict[str, str], default: str | None) -> SiteNames:
    """The sites engineer's table (forkserver/sites), keyed by site name as the master
    builds it for TLS."""
    sites: dict[str, list[str]] = {}
    for name, site in names.items():
        sites.setdefault(site, []).append(name)
    return SiteTable([(tuple(n), site) for site, n in sites.items()], default)


class Client:
    """A TLS client over memory BIOs on its end of a socketpair."""

    def __init__(
        self, sock: socket.socket, context: ssl.SSLContext, server_name: str | None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(
            self.incoming, self.outgoing, server_hostname=server_name, session=session,
        )

    def flush(self) -> None:
        if self.outgoing.pending:
            self.sock.sendall(self.outgoing.read())

    def fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def step(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return False
        self.flush()
        return True


def client_context(cafile: Path, **options: object) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    for name, value in options.items():
        setattr(context, name, value)
    return context


def connect(
    server_context: ssl.SSLContext, client: ssl.SSLContext, server_name: str | None,
    session: ssl.SSLSession | None = None,
) -> tuple[Client, TlsStream]:
    """Handshake both ends to completion (raises what either end raises)."""
    near, far = socket.socketpair()
    near.setblocking(False)
    raw = _socket.socket(far.family, far.type, 0, far.detach())
    raw.setblocking(False)
    stream = TlsStream(raw, server_context, bytearray(FILE_CHUNK))
    peer = Client(near, client, server_name, session)
    client_done = server_done = False
    for _ in range(STEPS):
        if not client_done:
            client_done = peer.step()
        if not server_done:
            server_done = stream.handshake() == DONE
        peer.fill()
        if client_done and server_done:
            return peer, stream
    raise AssertionError("handshake did not finish")


def exchange(peer: Client, stream: TlsStream, request: bytes, response: bytes) -> bytes:
    """The client sends a request, the server answers; the client's bytes back."""
    peer.tls.write(request)
    peer.flush()
    received = b""
    for _ in range(STEPS):
        with contextlib.suppress(BlockingIOError):
            received += stream.recv(65536)
        if received == request:
            break
    assert received == request
    sent = 0
    while sent < len(response):
        sent += stream.send(memoryview(response)[sent:])
    answer = b""
    for _ in range(STEPS):
        peer.fill()
        try:
            answer += peer.tls.read(65536)
        except ssl.SSLWantReadError:
            continue
        if len(answer) >= len(response):
            break
    return answer


def names_of_peer_certificate(peer: Client) -> set[str]:
    certificate = peer.tls.getpeercert()
    assert certificate is not None
    return {str(entry[1]) for entry in certificate["subjectAltName"]}


def test_a_request_and_response_over_tls_with_alpn(certs: Certificates) -> None:
    contexts = build_contexts(certs.default)
    client = client_context(certs.authority.certificate)
    client.set_alpn_protocols(["h2", "http/1.1"])
    peer, stream = connect(contexts.base, client, "default.test")
    assert stream.alpn == "http/1.1" and peer.tls.selected_alpn_protocol() == "http/1.1"
    assert stream.version == "TLSv1.3"
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    assert exchange(peer, stream, b"GET / HTTP/1.1\r\nHost: default.test\r\n\r\n", body) == body


def test_a_client_without_http11_gets_no_alpn_and_still_talks(certs: Certificates) -> None:
    client = client_context(certs.authority.certificate)
    client.set_alpn_protocols(["h2"])
    peer, stream = connect(build_contexts(certs.default).base, client, "default.test")
    assert stream.alpn is None and peer.tls.selected_alpn_protocol() is None


def test_tls12_is_served_with_an_ecdhe_aead_suite(certs: Certificates) -> None:
    client = client_context(
        certs.authority.certificate, maximum_version=ssl.TLSVersion.TLSv1_2
    )
    peer, stream = connect(build_contexts(certs.default).base, client, "default.test")
    assert stream.version == "TLSv1.2"
    cipher = peer.tls.cipher()
    assert cipher is not None and cipher[0].startswith("ECDHE-") and "GCM" in cipher[0]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls10_and_tls11_are_refused(certs: Certificates, version: ssl.TLSVersion) -> None:
    client = client_context(certs.authority.certificate)
    client.minimum_version = version
    client.maximum_version = version
    client.set_ciphers("ALL:@SECLEVEL=0")  # so that the refusal is the server's
    with pytest.raises(HandshakeFailed, match="UNSUPPORTED_PROTOCOL"):
        connect(build_contexts(certs.default).base, client, "default.test")


def test_min_version_tls13_refuses_tls12(certs: Certificates, tmp_path: Path) -> None:
    issued = certs.default_issued
    strict = load_certificate(issued.settings(min_version="TLSv1.3"))
    client = client_context(certs.authority.certificate, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(HandshakeFailed, match="UNSUPPORTED_PROTOCOL"):
        connect(build_contexts(strict).base, client, "default.test")


def test_no_compression_and_no_renegotiation_in_the_context(certs: Certificates) -> None:
    context = build_contexts(certs.default).base
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert not context.options & ssl.OP_NO_TICKET
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain HTTP on the TLS port
        b"\x16\x03\x01\x00\x05hello",  # a handshake record that is not a ClientHello
        bytes(range(256)) * 4,
    ],
)
def test_garbage_fails_the_handshake(certs: Certificates, garbage: bytes) -> None:
    near, far = socket.socketpair()
    raw = _socket.socket(far.family, far.type, 0, far.detach())
    raw.setblocking(False)
    stream = TlsStream(raw, build_contexts(certs.default).base, bytearray(16))
    assert stream.handshake() == WANT_READ  # nothing yet: wait for the ClientHello
    near.sendall(garbage)
    with pytest.raises(HandshakeFailed):
        for _ in range(STEPS):
            stream.handshake()
    stream.close()
    near.close()


def test_eof_before_the_client_hello_fails_the_handshake(certs: Certificates) -> None:
    near, far = socket.socketpair()
    raw = _socket.socket(far.family, far.type, 0, far.detach())
    raw.setblocking(False)
    stream = TlsStream(raw, build_contexts(certs.default).base, bytearray(16))
    near.close()
    with pytest.raises(HandshakeFailed):
        stream.handshake()
    stream.close()


def site_contexts(certs: Certificates) -> TlsContexts:
    names = table({"example.org": "example", "*.example.net": "example",
                   "docs.example.org": "docs", "plain.example": "plain"}, default=None)
    return build_contexts(certs.default, {"example": certs.example, "docs": certs.docs}, names)


@pytest.mark.parametrize(
    ("server_name", "site", "certificate"),
    [
        ("example.org", "example", "example.org"),
        ("EXAMPLE.ORG.", "example", "example.org"),  # case and a final dot do not matter
        ("a.b.example.net", "example", "example.org"),  # the longest *. suffix
        ("docs.example.org", "docs", "docs.example.org"),
        ("plain.example", "plain", "default.test"),  # a site without its own tls: the top level's
        ("unknown.test", None, "default.test"),  # no site claims it: the top level's
        (None, None, "default.test"),  # no SNI at all
    ],
)
def test_sni_picks_the_certificate_and_records_the_site(
    certs: Certificates, server_name: str | None, site: str | None, certificate: str
) -> None:
    client = client_context(certs.authority.certificate)
    client.check_hostname = False
    peer, stream = connect(site_contexts(certs).base, client, server_name)
    assert stream.sni_site == site
    assert certificate in names_of_peer_certificate(peer)


def test_sni_falls_back_to_the_default_sites_certificate(certs: Certificates) -> None:
    # Without a top-level tls, and a default site with its own: names no site
    # claims, and clients without SNI, get the default site's certificate.
    names = table({"example.org": "example", "docs.example.org": "docs"}, default="docs")
    contexts = build_contexts(None, {"example": certs.example, "docs": certs.docs}, names)
    client = client_context(certs.authority.certificate)
    client.check_hostname = False
    for server_name, site, expected in [
        ("unknown.test", None, "docs.example.org"),
        (None, None, "docs.example.org"),
        ("example.org", "example", "example.org"),
    ]:
        peer, stream = connect(contexts.base, client, server_name)
        assert stream.sni_site == site
        assert expected in names_of_peer_certificate(peer)
    assert normalize_name("Example.ORG.") == "example.org"


def serve_one_in_a_child(context: ssl.SSLContext, sock: socket.socket) -> int:
    """Fork a process that answers one request on ``sock`` with ``context``."""
    pid = os.fork()
    if pid:
        sock.close()
        return pid
    status = 1
    try:
        raw = _socket.socket(sock.family, sock.type, 0, sock.detach())
        raw.setblocking(False)
        stream = TlsStream(raw, context, bytearray(16))
        for _ in range(STEPS):
            state = stream.handshake()
            if state == DONE:
                break
            select.select([stream.fd] if state == WANT_READ else [], [stream.fd], [], 5.0)
        for _ in range(STEPS):
            select.select([stream.fd], [], [], 5.0)
            try:
                if stream.recv(65536):
                    break
            except BlockingIOError:
                continue
        reused = b"resumed" if stream.resumed else b"fresh"
        stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reused), reused))
        stream.shutdown(socket.SHUT_WR)
        status = 0
    finally:
        os._exit(status)


def one_request(
    make_server_context: object, client: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bytes, ssl.SSLSession | None, bool]:
    near, far = socket.socketpair()
    assert callable(make_server_context)
    pid = serve_one_in_a_child(make_server_context(), far)
    with client.wrap_socket(near, server_hostname="default.test", session=session) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: default.test\r\n\r\n")
        answer = b""
        while not answer.endswith((b"fresh", b"resumed")):
            chunk = tls.recv(65536)
            if not chunk:
                break
            answer += chunk
        reused, new_session = bool(tls.session_reused), tls.session
    _, status = os.waitpid(pid, 0)
    assert status == 0
    return answer, new_session, reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_session_resumes_on_another_process_of_the_same_generation(
    certs: Certificates, version: ssl.TLSVersion
) -> None:
    # The contexts are built once, before fork, as the master does: each connection is
    # served by a different forked process, and the ticket of the first resumes the second.
    generation = build_contexts(certs.default)
    client = client_context(certs.authority.certificate, maximum_version=version)
    answer, session, reused = one_request(lambda: generation.base, client, None)
    assert answer.endswith(b"fresh") and not reused and session is not None
    answer, _, reused = one_request(lambda: generation.base, client, session)
    assert answer.endswith(b"resumed") and reused


def test_contexts_built_after_fork_do_not_resume(certs: Certificates) -> None:
    # The control: a context built in each process has its own ticket keys.
    client = client_context(certs.authority.certificate)
    _, session, _ = one_request(lambda: build_contexts(certs.default).base, client, None)
    answer, _, reused = one_request(lambda: build_contexts(certs.default).base, client, session)
    assert answer.endswith(b"fresh") and not reused


def test_a_file_is_sent_in_bounded_chunks(certs: Certificates, tmp_path: Path) -> None:
    data = os.urandom(3 * FILE_CHUNK + 1000)
    path = tmp_path / "body.bin"
    path.write_bytes(data)
    client = client_context(certs.authority.certificate)
    peer, stream = connect(build_contexts(certs.default).base, client, "default.test")
    received = bytearray()
    offset = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(10 * STEPS):
            if offset < len(data):
                try:
                    sent = stream.send_file(fd, offset, len(data) - offset)
                except BlockingIOError:
                    sent = 0
                assert sent <= FILE_CHUNK
                offset += sent
            peer.fill()
            with contextlib.suppress(ssl.SSLWantReadError):
                received += peer.tls.read(1 << 20)
            if len(received) == len(data):
                break
        assert stream.send_file(fd, len(data), 100) == 0  # the end of the file
    finally:
        os.close(fd)
    assert bytes(received) == data
