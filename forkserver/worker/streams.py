"""Response bodies beyond the plain send: streams, bodies that fail mid-send, release.

Owns taking the next slice of a ``BodyStream`` (a ``.gz`` decoded on the fly) into a
connection's output; cutting a response whose body can no longer keep the length its
head promised (a stream that fails, a file written while sent): the connection is
closed and the reason logged, so the client sees a short body, never a wrong one; and
releasing what a closing connection's response still holds. Must not parse, plan or
decide anything else about the response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forkserver.encoding import GunzipError
from forkserver.http.response import BodyStream, FileBody, close_body

if TYPE_CHECKING:  # connection.py imports this module
    from forkserver.worker.connection import Connection, Responder


def pull_slice(responder: Responder, connection: Connection, stream: BodyStream) -> bool:
    """Put the stream's next slice in ``outbuf`` (and the stream back in ``rest`` if it
    has more); False when it failed and the connection was closed."""
    try:
        piece = stream.read()
    except (GunzipError, OSError) as error:
        request = connection.log_request
        what = request.path if request is not None else "a response"
        reason = error.reason if isinstance(error, GunzipError) else str(error)
        responder.error_log.error(
            f"{what}: cut after {connection.response_sent} bytes to {connection.client}: "
            f"{reason}"
        )
        stream.close()
        responder.close(connection)
        return False
    if stream.done:
        stream.close()
    else:
        assert connection.rest is not None
        connection.rest.insert(0, stream)
    connection.outbuf = piece
    return True


def release_bodies(connection: Connection) -> None:
    """What a closing connection still holds: each FileBody's reference to its
    descriptor, each stream's file, and the job a parked request waits for."""
    if connection.file is not None:
        close_body(connection.file)
        connection.file = None
    for segment in connection.rest or ():
        if isinstance(segment, FileBody):
            close_body(segment)
        elif not isinstance(segment, bytes):
            segment.close()
    connection.rest = None
    if connection.parked is not None:
        connection.parked.cancel()  # the job runs on; its answer goes nowhere
        connection.parked = None


def abandon_changed_file(responder: Responder, connection: Connection) -> None:
    """The file being sent was written or truncated since the head went out: cut."""
    request = connection.log_request
    what = request.path if request is not None else "an error page"
    if request is not None:
        # A cached descriptor of it would fail the same way until the entry expires;
        # with sites, every site's cache forgets it (worker/siterouting.py).
        responder.forget(request.path)
    responder.error_log.error(
        f"{what} changed while being sent to {connection.client}; closing the "
        f"connection after {connection.response_sent} bytes"
    )
    responder.close(connection)
