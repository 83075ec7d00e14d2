"""The worker's side of SPEC §9: per-client limits at the door, slow readers in the sweep.

Owns when a connection's client is counted (at accept, or once its PROXY header
named it), the refusals (``503`` for a connection over
``limits.connections_per_client``, ``429`` for a request over
``limits.requests_per_second``), built once as ready-made plans so that refusing
costs less than serving, releasing a closed connection's count, resetting a response
read slower than ``limits.min_send_rate``, and the refusal counts the heartbeat
publishes. Must not decide anything itself: forkserver/protect/ does (the shared
table, the token bucket, the send-rate window); must not parse, and sends only
through the Responder.
"""

from __future__ import annotations

from collections.abc import Callable

from forkserver.config import Config
from forkserver.http import Request
from forkserver.http.response import Plan, encode_fields
from forkserver.protect.admission import UNLIMITED, ClientLimits, retry_after
from forkserver.protect.clients import ClientTable, client_key
from forkserver.protect.sendrate import SendRate
from forkserver.static import StaticSite
from forkserver.worker.connection import WRITING, Connection, Responder

# Retry-After for a connection refused over connections_per_client: when one of the
# client's other connections will close is unknown; a second is the shortest honest
# answer (RFC 9110 §10.2.3), and the client's own connections are what frees a place.
CONNECTION_RETRY_SECONDS = 1


def guarded(config: Config) -> bool:
    """Whether any SPEC §9 limit of the worker's is on (else the worker has no Guard)."""
    limits = config.limits
    return bool(
        limits.connections_per_client or limits.requests_per_second or limits.min_send_rate
    )


class Guard:
    """One worker's protection: built only when a limit is on (``guarded``)."""

    def __init__(
        self, config: Config, table: ClientTable | None, slot: int, site: StaticSite,
        responder: Responder, connections: dict[int, Connection], clock: Callable[[], float],
    ) -> None:
        limits = config.limits
        per_client = bool(limits.connections_per_client or limits.requests_per_second)
        self.clients = (
            ClientLimits(limits, table, table.column_of(slot))
            if per_client and table is not None else None
        )
        self.min_send_rate = limits.min_send_rate
        self.slow_reset = 0  # responses reset for min_send_rate
        self.responder = responder
        self.connections = connections
        self.clock = clock
        self.site = site
        # The refusals, ready to send: (status, retry seconds, head) → Plan.
        self.refusals: dict[tuple[int, int, bool], Plan] = {}

    # -- connections ---------------------------------------------------------------
    def admit(self, connection: Connection, address: object) -> bool:
        """The Acceptor's gate without the PROXY protocol: the peer is the client."""
        self.open(connection)
        return True

    def open(self, connection: Connection) -> None:
        """The connection's client is known: count it (and decide its fate)."""
        clients = self.clients
        if clients is None:
            return
        admission = clients.open(client_key(connection.client), self.clock())
        connection.admission = None if admission is UNLIMITED else admission

    def release(self, connection: Connection) -> None:
        """A closed connection gives its place back (Responder.close calls this)."""
        admission = connection.admission
        if admission is not None and self.clients is not None:
            self.clients.close(admission)
            connection.admission = None

    # -- requests ------------------------------------------------------------------
    def refusal(self, connection: Connection, request: Request) -> Plan | None:
        """The ready-made refusal for this request, or None to serve it."""
        admission = connection.admission
        if admission is None or self.clients is None:
            return None
        if admission.refused:
            # SPEC §9: the extra connection's first request is answered, then closed.
            return self.plan(503, CONNECTION_RETRY_SECONDS, request.method == "HEAD")
        # The head's arrival time is the request's time: no clock read of its own.
        wait = self.clients.request(admission, connection.head_started)
        if wait:  # the connection stays open
            return self.plan(429, retry_after(wait), request.method == "HEAD")
        return None

    def plan(self, status: int, seconds: int, head: bool) -> Plan:
        key = (status, seconds, head)
        plan = self.refusals.get(key)
        if plan is None:
            page = self.site.error_plan(status, head=head)
            headers = [*page.headers, ("Retry-After", str(seconds))]
            plan = Plan(status, headers, page.body, close=status == 503,
                        encoded=encode_fields(headers))
            self.refusals[key] = plan
        return plan

    # -- the sweep -----------------------------------------------------------------
    def sweep(self, now: float) -> None:
        """Reset responses read slower than min_send_rate (RFC 9293 §3.10.7.1: a RST)."""
        rate = self.min_send_rate
        if not rate:
            return
        slow = []
        for connection in self.connections.values():
            if connection.phase != WRITING:
                continue
            tracker = connection.send_rate
            if tracker is None or tracker.response != connection.served:
                connection.send_rate = SendRate(now, connection.response_sent, connection.served)
            elif tracker.too_slow(now, connection.response_sent, rate):
                slow.append(connection)
        for connection in slow:
            self.slow_reset += 1
            self.responder.reset_on_close(connection)
            self.responder.close(connection)

    def counts(self) -> tuple[int, int, int, int]:
        """Refusals by scoreboard.LIMITED: connections, requests, min_send_rate, untracked."""
        clients = self.clients
        if clients is None:
            return (0, 0, self.slow_reset, 0)
        return (clients.refused_connections, clients.refused_requests, self.slow_reset,
                clients.untracked)
