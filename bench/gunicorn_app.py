"""A minimal static-file WSGI app, the gunicorn side of the benchmark.

Maps the request path to a regular file inside ``$BENCH_DOCROOT`` and returns it
through ``wsgi.file_wrapper`` (gunicorn sends it with sendfile) with a correct
Content-Length (a directory's ``index.html`` for a path ending in ``/``, as the
site-mix cases request pages); anything else is a 404. Deliberately as little work per request as
a fair WSGI static server can do: no MIME table, no conditionals, no ranges.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

DOCROOT_ENVIRONMENT_VARIABLE = "BENCH_DOCROOT"
FILE_WRAPPER_BLOCK_BYTES = 64 * 1024
NOT_FOUND_BODY = b"not found\n"

StartResponse = Callable[..., Any]

DOCROOT = os.path.realpath(os.environ.get(DOCROOT_ENVIRONMENT_VARIABLE, "."))


def resolve(path_info: str) -> str | None:
    """The regular file inside DOCROOT that ``path_info`` names, or None."""
    relative = path_info.lstrip("/")
    if path_info.endswith("/"):
        relative += "index.html"
    candidate = os.path.realpath(os.path.join(DOCROOT, relative))
    if os.path.commonpath([DOCROOT, candidate]) != DOCROOT or not os.path.isfile(candidate):
        return None
    return candidate


def not_found(start_response: StartResponse) -> Iterable[bytes]:
    start_response(
        "404 Not Found",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(NOT_FOUND_BODY)))],
    )
    return [NOT_FOUND_BODY]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = resolve(environ.get("PATH_INFO", "/"))
    if path is None:
        return not_found(start_response)
    try:
        body = open(path, "rb")  # noqa: SIM115 - the file wrapper closes it
    except OSError:
        return not_found(start_response)
    size = os.fstat(body.fileno()).st_size
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    file_wrapper = environ["wsgi.file_wrapper"]
    wrapped: Iterable[bytes] = file_wrapper(body, FILE_WRAPPER_BLOCK_BYTES)
    return wrapped
