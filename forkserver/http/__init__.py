"""HTTP/1.1 on the wire, sans-I/O: request heads in, response vocabulary out.

Owns the request parser (``request``; ``heads`` for a worker's connections), the
PROXY protocol header (``proxy``) and the words every answer is made of
(``response``). Re-exports the names other modules import from ``forkserver.http``.
Must not touch sockets, signals, files or the clock.
"""

from forkserver.errors import HttpError
from forkserver.http.heads import HEAD_CACHE_ENTRIES, HEAD_CACHE_MAX_BYTES, HeadParser, HeadScan
from forkserver.http.request import MAX_CONTENT_LENGTH, Request, parse_request
from forkserver.http.response import (
    NOSNIFF,
    REASONS,
    FileBody,
    Plan,
    SharedDescriptor,
    close_body,
    encode_fields,
    file_version,
    keeps_alive,
    status_line,
)

__all__ = [
    "HEAD_CACHE_ENTRIES",
    "HEAD_CACHE_MAX_BYTES",
    "MAX_CONTENT_LENGTH",
    "NOSNIFF",
    "REASONS",
    "FileBody",
    "HeadParser",
    "HeadScan",
    "HttpError",
    "Plan",
    "Request",
    "SharedDescriptor",
    "close_body",
    "encode_fields",
    "file_version",
    "keeps_alive",
    "parse_request",
    "status_line",
]
