"""TLS on a worker's non-blocking connection: handshake, recv, send, file bodies.

Owns ``TlsStream``, which puts a server-side ``ssl.SSLSocket`` (non-blocking, never
blocking the loop) behind the same calls the worker makes on a plain socket: recv
and send raise ``BlockingIOError`` when TLS must wait for the network, return
``b""`` at the end, raise ``OSError`` on failure. ``handshake`` reports whether the
loop must wait for input or output. File bodies go out in bounded chunks read with
``pread`` and written through TLS (``os.sendfile`` cannot cross a userspace TLS
layer), or with ``sendfile`` when the kernel does the encryption (kTLS: whether
it does is asked of the socket after the handshake, forkserver/tls/ktls.py). Must
not parse HTTP, know deadlines or touch the epoll set: the connection
(forkserver/worker) decides what to wait for.

Why an ``SSLSocket`` and not an ``SSLObject`` over memory BIOs: measured with
``bench/tls_transport.py`` (see docs/architecture.md), the socket form costs less
CPU per request and per handshake (OpenSSL reads and writes the descriptor itself:
no copy through Python bytes, no second buffer of ciphertext to flush), its
send/recv map one to one onto the plain socket's, and kTLS needs it.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import ssl

from forkserver.tls.contexts import sni_site
from forkserver.tls.ktls import Detection, confirm, kernel_sends

DONE, WANT_READ, WANT_WRITE = 0, 1, 2  # what handshake() says the loop must wait for
# One TLS write of a file body: 16 records of 16 KiB (RFC 8446 §5.1). Bounded so
# that a 10 MiB body is sent in slices between which the loop serves other clients.
FILE_CHUNK = 256 * 1024


class HandshakeFailed(Exception):
    """The handshake cannot complete: garbage, plain HTTP, a refused version, EOF."""


class TlsStream:
    """A server-side TLS connection over a non-blocking accepted socket.

    ``buffer`` is the worker's one scratch buffer for file chunks (shared by every
    connection: a chunk is read again from the file before each retry, so no
    connection needs its own). ``offloaded``: the kernel encrypts what this socket
    sends (set by ``check_offload`` after the handshake), so file bodies may go out
    with ``os.sendfile`` on ``fd`` like plain HTTP's.
    """

    __slots__ = ("buffer", "fd", "offloaded", "ssl")

    def __init__(self, sock: _socket.socket, context: ssl.SSLContext, buffer: bytearray) -> None:
        # SSLSocket takes over the descriptor (``sock`` is detached).
        self.ssl = context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False,  # type: ignore[arg-type]
        )
        self.fd = self.ssl.fileno()
        self.buffer = buffer
        self.offloaded = False

    # -- handshake ------------------------------------------------------------------
    def handshake(self) -> int:
        """DONE, WANT_READ or WANT_WRITE; raises HandshakeFailed (the caller closes)."""
        try:
            self.ssl.do_handshake()
        except ssl.SSLWantReadError:
            return WANT_READ
        except ssl.SSLWantWriteError:
            return WANT_WRITE
        except (ssl.SSLError, OSError, ValueError) as exc:
            # ValueError: an SNI callback or a context that refused; OSError: a reset.
            raise HandshakeFailed(getattr(exc, "reason", None) or type(exc).__name__) from None
        return DONE

    def check_offload(self, detection: Detection) -> bool:
        """After the handshake: does the kernel encrypt for this socket? Asked of the
        kernel only when start-up asked OpenSSL for kTLS (no syscall otherwise)."""
        self.offloaded = detection.available and kernel_sends(detection, confirm(self.ssl))
        return self.offloaded

    @property
    def sni_site(self) -> str | None:
        return sni_site(self.ssl)

    @property
    def alpn(self) -> str | None:
        return self.ssl.selected_alpn_protocol()

    @property
    def version(self) -> str | None:
        return self.ssl.version()

    @property
    def resumed(self) -> bool:
        return bool(self.ssl.session_reused)

    # -- the socket calls the worker makes --------------------------------------------
    def fileno(self) -> int:
        return self.fd

    def recv(self, size: int) -> bytes:
        """Decrypted bytes; b"" at the end (close_notify or EOF); BlockingIOError to wait."""
        tls = self.ssl
        try:
            data = tls.recv(size)
            # One read returns one record; a record OpenSSL has read whole but not
            # handed over would not wake level-triggered epoll again.
            if tls.pending():
                data += tls.recv(tls.pending())
            return data
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None
        except ssl.SSLZeroReturnError:
            return b""

    def send(self, data: bytes | memoryview, flags: int = 0) -> int:
        """Plaintext bytes taken (whole records); BlockingIOError to wait for EPOLLOUT.

        After BlockingIOError the caller retries with the same bytes, as OpenSSL
        requires of SSL_write (the worker does: its buffer only moves on success).
        ``flags`` (MSG_MORE) do not apply: each record is written as it is made.
        """
        try:
            return self.ssl.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            raise BlockingIOError from None

    def send_file(self, fd: int, offset: int, count: int) -> int:
        """Send up to FILE_CHUNK bytes of a file; 0 if the file ended early.

        The chunk is read with pread at ``offset`` on every try, so a retry after
        BlockingIOError writes the same bytes (the caller checks that the file did
        not change between tries).
        """
        view = memoryview(self.buffer)[: min(count, len(self.buffer))]
        read = os.preadv(fd, [view], offset)
        if read == 0:
            return 0
        return self.send(view[:read])

    def shutdown(self, how: int) -> None:
        """Send close_notify (RFC 8446 §6.1), then half-close TCP (the worker's linger).

        What the client still sends is then drained as raw bytes: the TLS session is
        over, only the kernel's buffers remain to be emptied before close.
        """
        tls = self.ssl
        session = tls._sslobj  # type: ignore[attr-defined]
        if session is not None:
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                session.shutdown()
            tls._sslobj = None  # type: ignore[attr-defined]
        _socket.socket.shutdown(tls, how)

    def setsockopt(self, level: int, option: int, value: bytes | int) -> None:
        self.ssl.setsockopt(level, option, value)

    def close(self) -> None:
        """Send close_notify when the session is up, then close the descriptor.

        Without it a client sees EOF "in violation of protocol", and OpenSSL clients
        then refuse to resume that session (RFC 8446 §6.1: each side closes with
        close_notify). One non-blocking try: a full socket or a gone client is not
        waited for.
        """
        tls = self.ssl
        session = tls._sslobj  # type: ignore[attr-defined]
        if session is not None and tls.version() is not None:
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                session.shutdown()
        tls.close()
