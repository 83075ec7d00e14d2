"""The PROXY protocol phase of a connection (``proxy_protocol: true``).

Owns who may send the header (``proxy_protocol_from``; any peer of a unix socket)
and reading it before the first request: the client it names becomes the
connection's client. Must not parse the header (http/proxy does) or answer
anything: a connection that fails here is closed without a byte.
"""

from __future__ import annotations

from collections.abc import Callable

from forkserver.http.proxy import ProxyError, TrustedSources, parse_proxy_header
from forkserver.logs import ErrorLog
from forkserver.worker.connection import AWAITING_PROXY, READING, Connection, Responder


class ProxyPhase:
    def __init__(
        self, sources: TrustedSources, error_log: ErrorLog, responder: Responder,
        serve_buffered: Callable[[Connection], None], clock: Callable[[], float],
    ) -> None:
        self.sources = sources
        self.error_log = error_log
        self.receive = responder.receive
        self.close = responder.close
        self.serve_buffered = serve_buffered
        self.clock = clock
        # worker/guard.py counts the client once the header has named it.
        self.on_client: Callable[[Connection], None] | None = None

    def admit(self, connection: Connection, address: object) -> bool:
        """A TCP peer outside proxy_protocol_from is closed unanswered (False).

        A unix socket's peers are whoever its mode and owner let in, so they may send
        the header too.
        """
        if isinstance(address, tuple) and connection.client not in self.sources:
            self.error_log.debug(
                f"PROXY protocol: {connection.client} is not in proxy_protocol_from; closed"
            )
            connection.sock.close()
            return False
        connection.phase = AWAITING_PROXY
        return True

    def on_proxy_header(self, connection: Connection) -> None:
        """Read the PROXY header; the client it names is the connection's client.

        It must be complete by the deadline set at accept (timeouts.header); a bad one
        closes the connection without a byte of answer: what follows cannot be trusted.
        """
        data = self.receive(connection)
        if data is None:
            return
        if not data:
            self.close(connection)
            return
        connection.inbuf += data
        try:
            parsed = parse_proxy_header(connection.inbuf)
        except ProxyError as exc:
            self.error_log.debug(f"PROXY protocol: {connection.client} sent {exc}; closed")
            self.close(connection)
            return
        if parsed is None:
            return
        header, consumed = parsed
        if header.client is not None:
            connection.client = header.client
        del connection.inbuf[:consumed]
        connection.phase = READING
        if self.on_client is not None:
            self.on_client(connection)
        if connection.inbuf:
            connection.head_started = self.clock()
            self.serve_buffered(connection)
