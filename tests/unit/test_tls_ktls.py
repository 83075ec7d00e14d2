"""kTLS: the decision, the detection on this machine, the kernel's word on a real socket.

The decision (``kernel_sends``) is a pure function and is tested as a table. The
detection and the per-socket confirmation talk to the real kernel: a real TLS
connection over loopback TCP (the worker's ``TlsStream`` on the server end, a
memory-BIO client on the other), no mocks. This machine's kernel has no ``tls``
module, so here they must say "not offloaded" and the userspace path must carry the
bytes; the sendfile branch itself needs a kernel with ``modprobe tls`` (see
docs/operations.md, kTLS).
"""

from __future__ import annotations

import _socket
import contextlib
import os
import select
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkserver.tls.certificates import Certificate, load_certificate
from forkserver.tls.contexts import build_contexts
from forkserver.tls.ktls import (
    NOT_DETECTED,
    SSL_OP_ENABLE_KTLS,
    Detection,
    Offload,
    confirm,
    detect,
    kernel_sends,
    ktls_option,
    ktls_unavailable,
)
from forkserver.tls.transport import DONE, FILE_CHUNK, TlsStream
from tests.tlscerts import Authority
from tests.unit.test_tls_transport import STEPS, Client, client_context

ULP_TABLE = Path("/proc/sys/net/ipv4/tcp_available_ulp")  # the kernel's loaded ULPs
MAY = Detection(SSL_OP_ENABLE_KTLS, None)  # start-up found the kernel able to encrypt
MAY_NOT = Detection(0, "the kernel has no tls module (modprobe tls)")


def kernel_has_tls() -> bool:
    """The kernel's own list, read after the probe (which loads the module if it can)."""
    return "tls" in ULP_TABLE.read_text().split()


# -- the decision: a pure function of (detection, the socket's confirmation) -----------
@pytest.mark.parametrize(("detection", "offload", "sends"), [
    (MAY, Offload(b"tls", True), True),
    (MAY, Offload(b"tls", False), False),  # ULP set, keys not installed (OpenSSL gave up)
    (MAY, Offload(b"", False), False),  # OpenSSL encrypts in userspace
    (MAY, Offload(b"mptcp", True), False),  # some other ULP: never sendfile plaintext
    (MAY, Offload(b"", True), False),
    (MAY_NOT, Offload(b"tls", True), False),  # not asked for at start: not trusted
    (NOT_DETECTED, Offload(b"tls", True), False),
    (MAY_NOT, Offload(b"", False), False),
])
def test_the_kernel_sends_file_bodies_only_when_both_say_so(
    detection: Detection, offload: Offload, sends: bool,
) -> None:
    assert kernel_sends(detection, offload) is sends


# -- a real TLS connection over loopback TCP -----------------------------------------
@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def certificate(authority: Authority) -> Certificate:
    return load_certificate(authority.issue("default.test").settings())


@pytest.fixture
def client(authority: Authority) -> ssl.SSLContext:
    return client_context(authority.certificate)


@contextlib.contextmanager
def tls_over_tcp(
    context: ssl.SSLContext, client: ssl.SSLContext,
) -> Iterator[tuple[Client, TlsStream]]:
    """A handshaken connection: the worker's TlsStream on an accepted TCP socket."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        near = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    near.setblocking(False)
    raw = _socket.socket(accepted.family, accepted.type, 0, accepted.detach())
    raw.setblocking(False)
    stream = TlsStream(raw, context, bytearray(FILE_CHUNK))
    peer = Client(near, client, "default.test")
    try:
        client_done = server_done = False
        for _ in range(STEPS):
            if not client_done:
                client_done = peer.step()
            if not server_done:
                server_done = stream.handshake() == DONE
            wait_readable(peer.sock)
            peer.fill()
            if client_done and server_done:
                break
        assert client_done and server_done, "handshake did not finish"
        yield peer, stream
    finally:
        stream.close()
        near.close()


def wait_readable(sock: socket.socket) -> None:
    """Loopback TCP is not instant: wait for input, at most briefly (not a sleep)."""
    select.select([sock], [], [], 0.05)


def receive_file(peer: Client, stream: TlsStream, path: Path) -> bytes:
    """Send ``path`` as the worker's userspace path does; the client's plaintext back."""
    data = path.read_bytes()
    received = bytearray()
    offset = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(20 * STEPS):
            if offset < len(data):
                with contextlib.suppress(BlockingIOError):
                    offset += stream.send_file(fd, offset, len(data) - offset)
            wait_readable(peer.sock)
            peer.fill()
            with contextlib.suppress(ssl.SSLWantReadError):
                received += peer.tls.read(1 << 20)
            if len(received) == len(data):
                break
    finally:
        os.close(fd)
    return bytes(received)


def test_detection_here_agrees_with_the_kernels_own_list() -> None:
    detection = detect()
    assert ktls_unavailable() == detection.reason
    if ktls_option() is None:  # an OpenSSL before 3: no way to ask for kTLS
        assert not detection.available and "OpenSSL 3" in (detection.reason or "")
    elif not kernel_has_tls():  # this machine: no tls module
        assert detection == Detection(0, "the kernel has no tls module (modprobe tls)")
    else:
        assert detection == Detection(ktls_option() or 0, None)


def test_a_real_tls_connection_here_stays_on_the_userspace_path(
    certificate: Certificate, client: ssl.SSLContext, tmp_path: Path,
) -> None:
    # What the master and a worker do: detect, build the contexts with the verdict,
    # handshake, then ask the socket.
    detection = detect()
    context = build_contexts(certificate, ktls=detection).base
    assert bool(context.options & SSL_OP_ENABLE_KTLS) is detection.available
    body = tmp_path / "body"
    body.write_bytes(os.urandom(3 * FILE_CHUNK + 123))
    with tls_over_tcp(context, client) as (peer, stream):
        offloaded = stream.check_offload(detection)
        assert offloaded is stream.offloaded
        if not kernel_has_tls():
            assert not offloaded  # this machine: bodies are encrypted in userspace
        assert receive_file(peer, stream, body) == body.read_bytes()


def test_the_kernels_word_is_read_on_a_real_tls_socket_and_says_not_offloaded_here(
    certificate: Certificate, client: ssl.SSLContext, tmp_path: Path,
) -> None:
    # Forced: the contexts ask OpenSSL for kTLS and the socket is asked, whatever the
    # detection says. OpenSSL's attempt fails quietly on a kernel without the module
    # and it encrypts in userspace; the kernel's answer must say so, not raise.
    context = build_contexts(certificate, ktls=MAY).base
    assert context.options & SSL_OP_ENABLE_KTLS
    body = tmp_path / "body"
    body.write_bytes(os.urandom(FILE_CHUNK + 7))
    with tls_over_tcp(context, client) as (peer, stream):
        offload = confirm(stream.ssl)
        assert stream.check_offload(MAY) is kernel_sends(MAY, offload)
        if not kernel_has_tls():
            assert offload == Offload(b"", False)
            assert not stream.offloaded
            assert receive_file(peer, stream, body) == body.read_bytes()


def test_the_kernels_word_on_a_socket_that_is_not_tcp() -> None:
    # A unix-socket TLS listener's connection: no TCP ULP at all, no crash.
    near, far = socket.socketpair()
    with near, far:
        assert confirm(far) == Offload(b"", False)
