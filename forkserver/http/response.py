"""The response vocabulary shared by the static site, the status page and the worker.

Owns what a planned response is (``Plan``, ``FileBody``), who owns an open file
descriptor while a response is in flight (``SharedDescriptor``), the status line and
reason phrases, header encoding, and THE keep-alive rule (``keeps_alive``). Must not
touch sockets, signals or the clock, nor decide what a request means: the static
site and the status page make plans, the worker sends them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from forkserver.http.request import Request

__all__ = [
    "NOSNIFF",
    "REASONS",
    "BodyStream",
    "FileBody",
    "Plan",
    "SharedDescriptor",
    "close_body",
    "encode_fields",
    "file_version",
    "keeps_alive",
    "status_line",
]

# Reason phrases for the status line (RFC 9110 §15).
REASONS: dict[int, str] = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",  # rules' auth (RFC 9110 §15.5.2)
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",  # no site answers for the Host (RFC 9110 §15.5.20)
    429: "Too Many Requests",  # RFC 6585 §4
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

# Every response carries it: a browser must not guess a type other than Content-Type.
NOSNIFF = ("X-Content-Type-Options", "nosniff")


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>`` CRLF, as it goes on the wire."""
    return f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n".encode()


def encode_fields(headers: list[tuple[str, str]]) -> bytes:
    """Field lines as they go on the wire: ``Name: value`` CRLF each, latin-1."""
    return "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1")


def keeps_alive(request: Request, plan: Plan) -> bool:
    """THE keep-alive rule: whether the connection may carry another request after
    ``plan`` answers ``request``, as far as HTTP decides it (RFC 9112 §9.3).

    Not when the client asked to close (or spoke HTTP/1.0 without keep-alive), nor
    when the plan says so, nor when the request announced a body: the body is never
    read, so its bytes would be parsed as the next request (RFC 9112 §6.3). The
    planners settle ``plan.close`` with it; the worker adds its own reasons to close
    (draining, recycling).
    """
    return request.keep_alive and not request.content_length and not plan.close


def file_version(st: os.stat_result) -> tuple[int, int]:
    """What a write or truncate to a file changes; rename and unlink change neither."""
    return (st.st_size, st.st_mtime_ns)


class SharedDescriptor:
    """An open file descriptor with counted holders, closed when the last lets go.

    Whoever opens the file makes the object and holds the first reference; each
    further holder takes one with ``share()``, and every holder calls ``close()``
    exactly once. The open-file cache holds one reference to a cached file's
    descriptor and each response lent it holds another, so neither has to know
    whether the other is done.
    """

    __slots__ = ("fd", "holders")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.holders = 1

    def share(self) -> SharedDescriptor:
        """One more holder; it calls ``close()`` when done."""
        self.holders += 1
        return self

    def close(self) -> None:
        """Release one reference; the last one closes the descriptor."""
        self.holders -= 1
        if self.holders == 0:
            os.close(self.fd)


class FileBody:
    """A byte range of an open file that the worker sends (``os.sendfile``).

    The body holds one reference to ``descriptor`` (``fd`` is its number, for the send
    path), released with ``close_body`` when the response is sent or abandoned.
    ``version`` is the file's (size, mtime) when the response was planned: the worker
    stops sending when the open file no longer matches it, so one response never
    carries bytes of two versions of a file (``cp`` and shell redirection rewrite in
    place). None: never checked.
    """

    __slots__ = ("descriptor", "fd", "length", "offset", "version")

    def __init__(
        self, descriptor: SharedDescriptor, offset: int, length: int,
        version: tuple[int, int] | None = None,
    ) -> None:
        self.descriptor = descriptor
        self.fd = descriptor.fd
        self.offset = offset
        self.length = length
        self.version = version

    def __repr__(self) -> str:
        return f"FileBody(fd={self.fd}, offset={self.offset}, length={self.length})"


def close_body(body: FileBody) -> None:
    """Release a FileBody's reference to its descriptor (once, when it is done)."""
    body.descriptor.close()


class BodyStream(Protocol):
    """Content made while it is sent, in bounded slices (a ``.gz`` decoded on the fly).

    ``read()`` returns the next slice (possibly empty before the end) and raises when
    the content can no longer match the head already sent; the worker then cuts the
    response and logs why. ``close()`` releases what it holds.
    """

    @property
    def done(self) -> bool: ...

    def read(self) -> bytes: ...

    def close(self) -> None: ...


class Waiting(Protocol):
    """A job off the loop that the answer needs (``forkserver.encoding.prepare``)."""

    def park(self, resume: Callable[[], None]) -> Cancellable: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


@dataclass(slots=True)
class Plan:
    """Everything the worker needs to answer a request.

    ``headers`` holds every response field except Date, Server and Connection, which
    the worker adds. ``body`` is sent after the head; ``file`` (when set) after that;
    then each segment of ``rest`` in order (a multipart/byteranges body alternates part
    heads and file ranges). The worker closes every FileBody it is handed
    (``close_body``), so each holds its own reference to a descriptor.
    ``close`` asks the worker to close the connection after this response.
    ``encoded``, when not empty, is ``headers`` already encoded by ``encode_fields``
    (a cache hit reuses the bytes instead of encoding every field again).
    ``waiting``, when set, means there is no answer yet: the worker parks the request
    on it and plans the request again when it fires. ``log`` is a line for the error
    log (a file that cannot be served as asked), written when the plan is sent.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    file: FileBody | None = None
    close: bool = False
    rest: list[bytes | FileBody | BodyStream] | None = None
    encoded: bytes = b""
    waiting: Waiting | None = None
    log: str = ""
