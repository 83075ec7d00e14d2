"""Kernel TLS (kTLS): whether the kernel may encrypt, and whether it does on a socket.

Owns three things, each small: the detection at start (can this Python's OpenSSL ask
for kTLS, and does the kernel have its ``tls`` upper layer protocol), asking
OpenSSL for kTLS on a server context when the detection allows, and the per-socket
confirmation after a handshake (the socket's ULP is ``tls`` and the kernel holds
its send keys). ``kernel_sends`` joins the two into the one decision the worker
acts on: file bodies go out with ``sendfile(2)`` on that socket, encrypted by the
kernel, exactly when it is True. Must not read or write connections, parse HTTP or
touch the epoll set (forkserver/tls/transport.py and the worker do).

Why both checks: OpenSSL turns kTLS on per connection only if it was built with it,
the cipher is one the kernel has (AES-GCM, ChaCha20-Poly1305), and the kernel takes
the keys; any of these can fail silently and OpenSSL then encrypts in userspace. A
``sendfile`` on such a socket would put plaintext on the wire, so only the kernel's
own answer on the socket counts (Linux Documentation/networking/tls.rst).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import sys
from dataclasses import dataclass

# SSL_OP_ENABLE_KTLS in OpenSSL 3's ssl.h. Python 3.12 names it ssl.OP_ENABLE_KTLS;
# 3.11 does not, but passes any bit of SSL_CTX_set_options through.
SSL_OP_ENABLE_KTLS = 1 << 3
# linux/tcp.h and linux/tls.h; Python 3.11's socket module names neither.
TCP_ULP = getattr(socket, "TCP_ULP", 31)
SOL_TLS = getattr(socket, "SOL_TLS", 282)
TLS_TX = 1
# getsockopt(SOL_TLS, TLS_TX) with the size of struct tls_crypto_info (version and
# cipher, two u16) answers for every cipher; EBUSY (an OSError) when no keys are set.
CRYPTO_INFO_SIZE = 4
ULP_NAME_SIZE = 16  # TCP_ULP_NAME_MAX


@dataclass(frozen=True, slots=True)
class Detection:
    """What start-up found: the option that asks OpenSSL for kTLS, or why not."""

    option: int  # the SSL_OP to set on server contexts; 0 when kTLS is not asked for
    reason: str | None  # why the kernel cannot encrypt here; None: it may (sockets confirm)

    @property
    def available(self) -> bool:
        return self.reason is None


NOT_DETECTED = Detection(0, "not detected")


@dataclass(frozen=True, slots=True)
class Offload:
    """What the kernel says about one connected socket after the handshake."""

    ulp: bytes  # its TCP upper layer protocol: b"tls" once OpenSSL handed it to kTLS
    tx: bool  # the kernel holds the send keys (SOL_TLS/TLS_TX answered)


def kernel_sends(detection: Detection, offload: Offload) -> bool:
    """Whether a connection's file bodies go out with sendfile (the kernel encrypts).

    True only when start-up asked OpenSSL for kTLS and this socket's kernel state
    confirms TX offload; anything else keeps the userspace path (pread, encrypt, send).
    """
    return detection.available and offload.ulp == b"tls" and offload.tx


def ktls_option() -> int | None:
    """The option bit that asks OpenSSL for kTLS, or None if this OpenSSL has none."""
    option = getattr(ssl, "OP_ENABLE_KTLS", None)
    if option is not None:
        return int(option)
    if ssl.OPENSSL_VERSION_INFO >= (3, 0):
        return SSL_OP_ENABLE_KTLS
    return None


def probe_ulp() -> str | None:
    """Try ``setsockopt(TCP_ULP, "tls")`` on a throwaway loopback connection: None if
    the kernel takes it, else why not. The socket never carries TLS, only the probe."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as listener:
                listener.bind((host, 0))
                listener.listen(1)
                with socket.create_connection(listener.getsockname()[:2], timeout=5) as near:
                    far, _ = listener.accept()
                    far.close()
                    try:
                        near.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
                    except OSError as exc:
                        if exc.errno == errno.ENOENT:
                            return "the kernel has no tls module (modprobe tls)"
                        return f"the kernel refused the tls ULP ({os.strerror(exc.errno or 0)})"
                    return None
        except OSError:
            continue  # no such loopback here: try the other
    return "no loopback TCP connection to probe the kernel's tls module with"


def detect() -> Detection:
    """Run once per generation in the master, before fork (a socket pair, no more)."""
    option = ktls_option()
    if option is None:
        version = ".".join(map(str, sys.version_info[:2]))
        return Detection(0, f"Python {version}'s {ssl.OPENSSL_VERSION} has no kTLS "
                            "(it needs OpenSSL 3)")
    why = probe_ulp()
    if why is not None:
        return Detection(0, why)
    return Detection(option, None)


def ktls_unavailable() -> str | None:
    """Why the kernel cannot do TLS here (logged once at start), or None if it may."""
    return detect().reason


def request_ktls(context: ssl.SSLContext, detection: Detection) -> None:
    """Ask OpenSSL to hand each connection's keys to the kernel (when detected)."""
    if detection.option:
        context.options |= detection.option


def confirm(sock: socket.socket) -> Offload:
    """The kernel's word on a connected socket; never raises (no offload is an answer).

    Both reads are made whatever the first says, so the path is the same on every
    kernel; on one without kTLS the ULP is empty and SOL_TLS is refused.
    """
    try:
        ulp = sock.getsockopt(socket.IPPROTO_TCP, TCP_ULP, ULP_NAME_SIZE).rstrip(b"\0")
    except OSError:
        ulp = b""
    try:
        sock.getsockopt(SOL_TLS, TLS_TX, CRYPTO_INFO_SIZE)
    except OSError:
        return Offload(ulp, False)
    return Offload(ulp, True)
