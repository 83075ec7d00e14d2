"""The access log's line formats: combined, common and json, and their escaping.

Owns turning queued responses (``Entry``) into lines: nginx-style escaping of the
request line and client-supplied headers, JSON string literals that hold only ASCII,
the timestamps (cached by the second) and the json format's site name. Pure: no
files, no buffering, no clock of its own (logs.py's AccessLog owns those). Must not
know about sockets, workers or the master.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from json.encoder import encode_basestring_ascii
from typing import Protocol

from forkserver.config import ACCESS_LOG_FORMATS
from forkserver.sites.hosts import site_name

__all__ = ["Entry", "LineFormat", "LoggedRequest", "escape_field", "json_string"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _escape_byte(byte: int) -> str:
    if byte in (0x22, 0x5C) or byte < 0x20 or byte > 0x7E:
        return f"\\x{byte:02X}"
    return chr(byte)


# Request lines and client-supplied headers are escaped nginx-style (\xHH for quotes,
# backslashes, controls and non-ASCII) so nobody can forge a log line or a terminal
# escape sequence through the access log.
_ESCAPES = {i: _escape_byte(i) for i in range(256) if _escape_byte(i) != chr(i)}


# Anything outside printable ASCII, or a quote or backslash: what _ESCAPES rewrites.
_NEEDS_ESCAPE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def escape_field(value: str) -> str:
    """Escape a latin-1 string for a double-quoted access-log field."""
    # Most fields need nothing; one C-level search (0.2 us) instead of a translate
    # (1.2 us) for each of the three fields of every logged request.
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return value.translate(_ESCAPES)


def json_string(value: str | None) -> str:
    """A JSON string literal (or null) holding only ASCII.

    Each character of the latin-1 decoded input is one byte as received: controls,
    quotes, backslashes and bytes above 0x7E become ``\\uXXXX`` or ``\\"`` escapes,
    so a line cannot be split, forged or turned into a terminal escape, and
    ``json.loads(line)[field].encode("latin-1")`` gives back the exact bytes.
    """
    # The C encoder json.dumps itself uses for a str, without dumps' per-call set-up.
    return "null" if value is None else encode_basestring_ascii(value)


class LoggedRequest(Protocol):
    """What the access log reads of a request (``http.Request`` has both)."""

    line: str  # the request line, latin-1 decoded
    headers: Mapping[str, str]  # lower-cased names


# One queued access line: client; the request, or the raw request line when it did
# not parse; status; bytes sent after the head (negative when the head itself was
# cut short); monotonic start and end of the response; wall-clock time at the end;
# whether the connection was TLS (the json format's "scheme").
Entry = tuple[str, LoggedRequest | str, int, int, float, float, float, bool]
# The same, with every field as it is written (request line, referer, user agent;
# body bytes >= 0; duration in microseconds).
Fields = tuple[str, str, int, int, str, str, int, float]


def _request_fields(request: LoggedRequest | str) -> tuple[str, str, str]:
    """(request line, referer, user agent) of a queued request."""
    if isinstance(request, str):
        return request, "", ""
    headers = request.headers
    return request.line, headers.get("referer", ""), headers.get("user-agent", "")


def _host_of(request: LoggedRequest | str) -> str | None:
    """The normalized host name of a parsed request (forkserver.sites.hosts), else None."""
    host = getattr(request, "host", None)
    return site_name(host) or None if isinstance(host, str) else None


def _fields(entries: list[Entry]) -> Iterator[Fields]:
    for client, request, status, sent, started, ended, now, _ in entries:
        line, referer, agent = _request_fields(request)
        duration = round((ended - started) * 1_000_000)
        yield client, line, status, sent if sent > 0 else 0, referer, agent, duration, now


class LineFormat:
    """One of ACCESS_LOG_FORMATS: ``lines(entries)`` formats a batch, oldest first.

    ``combined``: the combined log format plus the response time in microseconds;
    ``common``: the common log format (no referer, user agent or time taken);
    ``json``: one JSON object per line (time, client, method, path, protocol,
    status, bytes, duration_us, referer, user_agent, pid, scheme, host, and site
    with sites).
    """

    def __init__(self, log_format: str) -> None:
        if log_format not in ACCESS_LOG_FORMATS:
            raise ValueError(f"unknown access log format {log_format!r}")
        self._stamp_second = -1
        self._stamp = ""
        self._iso_second = -1
        self._iso_date = self._iso_offset = ""
        # worker/siterouting.py's name of the site that answered (the json "site").
        self.site_of: Callable[[LoggedRequest | str], str | None] | None = None
        self.lines: Callable[[list[Entry]], list[str]] = {
            "combined": self._combined, "common": self._common, "json": self._json,
        }[log_format]

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._stamp_second:
            local = time.localtime(second)
            self._stamp = time.strftime(
                f"%d/{_MONTHS[local.tm_mon - 1]}/%Y:%H:%M:%S %z", local
            )
            self._stamp_second = second
        return self._stamp

    def _iso_timestamp(self, now: float) -> str:
        """ISO-8601 local time with offset, to the millisecond (cached by the second)."""
        second = int(now)
        if second != self._iso_second:
            local = time.localtime(second)
            offset = time.strftime("%z", local)
            self._iso_date = time.strftime("%Y-%m-%dT%H:%M:%S", local)
            self._iso_offset = f"{offset[:3]}:{offset[3:]}"
            self._iso_second = second
        return f"{self._iso_date}.{int((now - second) * 1000):03d}{self._iso_offset}"

    def _combined(self, entries: list[Entry]) -> list[str]:
        search = _NEEDS_ESCAPE.search
        lines = []
        second = -1
        # A batch repeats a few (client, request, status, size) shapes: the worker
        # hands the same Request object for a repeated head (http.HeadParser), so each
        # shape's line up to the duration is escaped and formatted once per batch and
        # second. id() is safe as a key: the batch holds every request it names.
        starts: dict[tuple[str, int, int, int], str] = {}
        for client, request, status, sent, started, ended, now, _ in entries:
            if int(now) != second:
                second, stamp = int(now), self._timestamp(now)
                starts.clear()
            shape = (client, id(request), status, sent)
            start = starts.get(shape)
            if start is None:
                request_line, referer, agent = _request_fields(request)
                if search(request_line):
                    request_line = request_line.translate(_ESCAPES)
                if search(referer):
                    referer = referer.translate(_ESCAPES)
                if search(agent):
                    agent = agent.translate(_ESCAPES)
                start = starts[shape] = (
                    f'{client} - - [{stamp}] "{request_line}" {status} '
                    f'{sent if sent > 0 else "-"} "{referer or "-"}" "{agent or "-"}" '
                )
            lines.append(f"{start}{round((ended - started) * 1_000_000)}\n")
        return lines

    def _common(self, entries: list[Entry]) -> list[str]:
        stamp = self._timestamp
        return [
            f'{client} - - [{stamp(now)}] "{escape_field(request_line)}" {status} {size or "-"}\n'
            for client, request_line, status, size, _, _, _, now in _fields(entries)
        ]

    def _json(self, entries: list[Entry]) -> list[str]:
        # SPEC §6: the scheme and the normalized name that picked the site; with sites
        # (worker/siterouting.py) the site that answered, looked up at write time.
        site_of = self.site_of
        return [f'{line[:-2]},"scheme":"{"https" if entry[7] else "http"}",'
                f'"host":{json_string(_host_of(entry[1]))}'
                + ("" if site_of is None else f',"site":{json_string(site_of(entry[1]))}')
                + "}\n" for line, entry in zip(
                    (self._json_line(*fields) for fields in _fields(entries)), entries,
                    strict=True)]

    def _json_line(
        self, client: str, request_line: str, status: int, size: int, referer: str,
        agent: str, duration: int, now: float,
    ) -> str:
        # A request line that did not parse (a 400) is split the same way, as far as
        # it goes: its parts may be missing (null) or hold anything the client sent.
        parts = request_line.split(" ", 2) if request_line else []
        parts += [""] * (3 - len(parts))
        method, path, protocol = (json_string(part or None) for part in parts)
        return (
            f'{{"time":"{self._iso_timestamp(now)}","client":{json_string(client)},'
            f'"method":{method},"path":{path},"protocol":{protocol},'
            f'"status":{status},"bytes":{size},"duration_us":{duration},'
            f'"referer":{json_string(referer or None)},'
            f'"user_agent":{json_string(agent or None)},"pid":{os.getpid()}}}\n'
        )
