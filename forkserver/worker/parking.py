"""Requests whose answer waits for a job off the loop: parked, then planned again.

Owns the pause of a connection while a slow job its answer needs runs on the pool
(gzip of a large file, a content hash, measuring a ``.gz``: ``Plan.waiting``), its
deadline, and the resumption: the same request planned again once the job is done,
then the pipeline continues. Must not run jobs (``forkserver.offload`` does), decide
what a request means, or send anything itself (the Responder does).

While parked (phase PARKED, shared with the auth checks of siterouting.py), a
connection is in the epoll set with no events asked for, so input a client pipelines
meanwhile waits in the kernel, not in our memory; a hang-up still wakes it (and
closing it cancels its place among the job's waiters). It must be answered within
``timeouts.send`` or it is closed.
"""

from __future__ import annotations

import select
from collections.abc import Callable

from forkserver.errors import HttpError
from forkserver.http import Request
from forkserver.http.response import Plan
from forkserver.worker.connection import CLOSED, PARKED, READING, Connection

# A request is planned again at most this many times: each plan can start one more job
# (a content hash, then gzip of the same file), and a file that changes under every
# job must not keep a connection going round forever.
MAX_RESUMES = 4


class Parking:
    """One per worker; ``plan`` is the planner that asked to wait."""

    def __init__(
        self, epoll: select.epoll, plan: Callable[[Request], Plan],
        respond: Callable[[Connection, Request, Plan], None],
        respond_error: Callable[[Connection, HttpError], None],
        serve_buffered: Callable[[Connection], None], clock: Callable[[], float],
        send_seconds: float,
    ) -> None:
        self.epoll = epoll
        self.plan = plan
        self.respond = respond
        self.respond_error = respond_error
        self.serve_buffered = serve_buffered
        self.clock = clock
        self.send_seconds = send_seconds
        # worker/siterouting.py's planner (sites, rules); set with RequestReader.route.
        self.route: Callable[[Request, str], Plan] | None = None

    def park(self, connection: Connection, request: Request, plan: Plan, resumes: int = 0) -> None:
        """Wait for ``plan.waiting``; then plan ``request`` again and answer it."""
        waiting = plan.waiting
        assert waiting is not None
        connection.parked = waiting.park(lambda: self.resume(connection, request, resumes + 1))
        connection.phase = PARKED
        connection.deadline = self.clock() + self.send_seconds
        self.epoll.modify(connection.fd, 0)

    def resume(self, connection: Connection, request: Request, resumes: int) -> None:
        connection.parked = None
        if connection.phase == CLOSED:
            return
        connection.phase = READING
        self.epoll.modify(connection.fd, select.EPOLLIN)
        route = self.route
        plan = self.plan(request) if route is None else route(request, connection.client)
        if plan.waiting is not None:
            if resumes < MAX_RESUMES:
                self.park(connection, request, plan, resumes)
                return
            self.respond_error(connection, HttpError(503, "file changing under its jobs",
                                                     close=False))
            return
        self.respond(connection, request, plan)
        if connection.phase == READING and connection.inbuf:
            self.serve_buffered(connection)  # requests pipelined behind this one
