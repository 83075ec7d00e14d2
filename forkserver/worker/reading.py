"""Reading requests off a connection and handing each one's plan to the Responder.

Owns the walk through a connection's input: recv, the head parser, pipelined
requests in order, the head deadline, and which planner answers (the status page
for ``status.path``, the static site for the rest). Must not send or close anything
itself (connection.py's Responder does) or accept connections (accepting.py).
"""

from __future__ import annotations

from collections.abc import Callable

from forkserver.config import Config
from forkserver.errors import HttpError
from forkserver.http import HeadParser, Request
from forkserver.http.expect import ServerAnswers
from forkserver.http.response import Plan
from forkserver.static import StaticSite
from forkserver.worker.connection import READING, RECV_BYTES, Connection, Responder
from forkserver.worker.parking import Parking
from forkserver.worker.status import NO_STATUS_PATH, StatusPage


class RequestReader:
    """Turns the bytes a connection receives into responses, one request at a time.

    The Responder's methods are bound once here, so splitting reading from sending
    costs the hot path no extra lookup per request.
    """

    def __init__(
        self, config: Config, site: StaticSite, status_page: StatusPage,
        responder: Responder, beat: Callable[[], None], clock: Callable[[], float],
    ) -> None:
        self.parse_head = HeadParser(config.limits).parse
        self.header_seconds = config.timeouts.header
        self.plan = site.plan
        self.status_path = config.status.path or NO_STATUS_PATH
        self.status_page = status_page
        self.beat = beat  # the worker's heartbeat, so the status page shows current numbers
        self.clock = clock
        self.respond = responder.respond
        self.respond_error = responder.respond_error
        self.flush_output = responder.flush_output
        self.close = responder.close
        self.parking = Parking(
            responder.epoll, site.plan, responder.respond, responder.respond_error,
            self.serve_buffered, clock, config.timeouts.send,
        )
        self.park = self.parking.park
        # worker/siterouting.py's planner when sites or rules are configured (None: the
        # static site's plan, as it always was); it needs the client for allow lists.
        self.route: Callable[[Request, str], Plan] | None = None
        # worker/guard.py's refusal when a per-client limit is on; None costs one test.
        self.refusal: Callable[[Connection, Request], Plan | None] | None = None
        # Expect (417) and OPTIONS * (http/expect.py): asked only when either is present.
        self.server_answer = ServerAnswers(site.error_plan, list(config.headers)).answer
        # worker/tlsrouting.py when redirect_to_https or sites are on; None costs one test.
        self.tls_routing: Callable[[Connection, Request], Plan | None] | None = None

    def on_readable(self, connection: Connection) -> None:
        try:
            data = connection.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            self.close(connection)
            return
        if not data:
            self.close(connection)
            return
        if not connection.inbuf:
            connection.head_started = self.clock()
        connection.inbuf += data
        self.serve_buffered(connection)

    def on_writable(self, connection: Connection) -> None:
        self.flush_output(connection)
        if connection.phase == READING and connection.inbuf:
            self.serve_buffered(connection)  # requests pipelined behind the one just sent

    def serve_buffered(self, connection: Connection) -> None:
        """Answer every complete request in the buffer, in order, until one blocks.

        The only place that walks a pipeline: a response that completes at once
        returns here for the next request (a loop, never a recursion, however many
        requests one packet holds); one that had to wait resumes from on_writable.
        """
        while connection.phase == READING and connection.inbuf:
            try:
                parsed = self.parse_head(connection.inbuf, connection.head_scan)
            except HttpError as error:
                self.respond_error(connection, error)
                return
            if parsed is None:
                # RFC 9110 §15.5.9: the head must be complete within timeouts.header.
                connection.deadline = connection.head_started + self.header_seconds
                return
            request, consumed = parsed
            del connection.inbuf[:consumed]
            connection.request_started = connection.head_started
            if connection.inbuf:
                # Pipelined: the next head's clock starts now.
                connection.head_started = self.clock()
            if self.refusal is not None:
                refused = self.refusal(connection, request)
                if refused is not None:
                    self.respond(connection, request, refused)
                    continue
            if request.path == "*" or "expect" in request.headers:
                answer = self.server_answer(request)
                if answer is not None:
                    self.respond(connection, request, answer)
                    continue
            if self.tls_routing is not None:  # worker/tlsrouting.py: 308 to https, 421
                decided = self.tls_routing(connection, request)
                if decided is not None:
                    self.respond(connection, request, decided)
                    continue
            if request.path == self.status_path:
                self.beat()  # so this worker's own numbers are current
                client = connection.client
                plan = self.status_page.plan(request, client, self.clock())
                logged = self.status_page.logged(request, client)
                self.respond(connection, request, plan, logged=logged)
                continue
            route = self.route
            plan = self.plan(request) if route is None else route(request, connection.client)
            if plan.waiting is not None:  # a job off the loop first (parking.py)
                self.park(connection, request, plan)
                return
            self.respond(connection, request, plan)
