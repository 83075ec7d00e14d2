"""Error pages and the Server field: what every refusal looks like.

Owns the built-in HTML page of each status (fixed text, never request input), the
configured ``error_pages`` (read from the docroot through the contained walk on every
use; one that cannot be served falls back to the built-in page) and ``server_header``.
Must not decide which status a request earns: the site and the worker do.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from forkserver import SERVER_NAME, __version__
from forkserver.config import Config
from forkserver.http.response import (
    NOSNIFF,
    REASONS,
    FileBody,
    Plan,
    SharedDescriptor,
    file_version,
)
from forkserver.static.docroot import Docroot, NoIndex, Refused

__all__ = ["ALLOW", "HTML_TYPE", "ErrorPages", "server_header"]

ALLOW = "GET, HEAD"  # the Allow field of every 405 (RFC 9110 §10.2.1)
HTML_TYPE = "text/html; charset=utf-8"
# Statuses whose responses never have content, so no Content-Length (RFC 9110 §8.6).
_NO_CONTENT = frozenset({204, 304})


def server_header(config: Config) -> str:
    """The Server field: the product name, plus the version with ``server_tokens``."""
    return f"{SERVER_NAME}/{__version__}" if config.server_tokens else SERVER_NAME


def _page(status: int) -> bytes:
    """The HTML body for a status: fixed text only, never any request input."""
    title = f"{status} {REASONS.get(status, 'Error')}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{title}</title></head>\n"
        f"<body>\n<h1>{title}</h1>\n<hr>\n<p>forkserver</p>\n</body>\n</html>\n"
    ).encode()


class ErrorPages:
    """The page of each status for one site, built-in pages encoded once."""

    def __init__(
        self, config: Config, docroot: Docroot, content_type: Callable[[str], str]
    ) -> None:
        self._docroot = docroot
        self._types = content_type
        self._extra = list(config.headers)
        self._custom_pages = dict(config.error_pages)
        # Built-in pages, built once: (headers, body) per status.
        self._pages: dict[int, tuple[list[tuple[str, str]], bytes]] = {}
        for status in REASONS:
            if status >= 300:
                self._pages[status] = self._page_parts(status)

    def plan(self, status: int, head: bool = False) -> Plan:
        """The page for ``status``: the configured file, else a small fixed HTML page.

        With ``head`` the same headers and no body.
        """
        if status in self._custom_pages:
            custom = self._custom(status, head)
            if custom is not None:
                return custom
        parts = self._pages.get(status)
        if parts is None:
            if status in _NO_CONTENT or status < 200:
                return Plan(status, [NOSNIFF, *self._extra])
            parts = self._pages[status] = self._page_parts(status)
        headers, body = parts
        return Plan(status, list(headers), b"" if head else body)

    def _page_parts(self, status: int) -> tuple[list[tuple[str, str]], bytes]:
        body = _page(status)
        headers = [("Content-Type", HTML_TYPE), ("Content-Length", str(len(body))), NOSNIFF]
        if status == 405:
            headers.append(("Allow", ALLOW))
        headers.extend(self._extra)
        return headers, body

    def _custom(self, status: int, head: bool) -> Plan | None:
        """The configured page for ``status`` from the docroot, or None if unservable."""
        names = self._custom_pages[status].strip("/").split("/")
        try:
            opened = self._docroot.open(names, directory=False)
        except (Refused, NoIndex):
            return None
        fd = opened.fd
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            headers = [
                ("Content-Type", self._types(names[-1])),
                ("Content-Length", str(st.st_size)),
                NOSNIFF,
                *self._extra,
            ]
            if head or not st.st_size:
                return Plan(status, headers)
            body = FileBody(SharedDescriptor(fd), 0, st.st_size, file_version(st))
            fd = -1  # the body holds it now
            return Plan(status, headers, file=body)
        except OSError:
            return None
        finally:
            self._docroot.release(opened.parent)
            if fd >= 0:
                os.close(fd)
