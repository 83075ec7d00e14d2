"""Static files: a request for a path under the docroot → a response plan.

Re-exports ``StaticSite`` (``site.py``) and the names the worker, the status page and
the tests import from ``forkserver.static``. Must not send anything, touch sockets or
signals, or know about workers; the response vocabulary itself (``Plan``,
``FileBody``, ...) belongs to ``forkserver.http.response`` and is re-exported here
only for the importers that still take it from this package.
"""

from forkserver.http.response import (
    NOSNIFF,
    REASONS,
    FileBody,
    Plan,
    close_body,
    encode_fields,
    file_version,
)
from forkserver.static.conditional import etag, http_date
from forkserver.static.filecache import (
    CACHE_CONTENT_BYTES,
    CACHE_DESCRIPTORS,
    CACHE_FILE_BYTES,
    CACHE_IDLE_SECONDS,
    CACHE_INLINE_BYTES,
    CACHE_RECHECK_SECONDS,
    CACHE_TOTAL_BYTES,
)
from forkserver.static.mime import CONTENT_TYPES, DEFAULT_TYPE, content_type
from forkserver.static.pages import server_header
from forkserver.static.paths import ResolvedPath, resolve_path
from forkserver.static.site import KNOWN_METHODS, StaticSite

__all__ = [
    "CACHE_CONTENT_BYTES",
    "CACHE_DESCRIPTORS",
    "CACHE_FILE_BYTES",
    "CACHE_IDLE_SECONDS",
    "CACHE_INLINE_BYTES",
    "CACHE_RECHECK_SECONDS",
    "CACHE_TOTAL_BYTES",
    "CONTENT_TYPES",
    "DEFAULT_TYPE",
    "KNOWN_METHODS",
    "NOSNIFF",
    "REASONS",
    "FileBody",
    "Plan",
    "ResolvedPath",
    "StaticSite",
    "close_body",
    "content_type",
    "encode_fields",
    "etag",
    "file_version",
    "http_date",
    "resolve_path",
    "server_header",
]
