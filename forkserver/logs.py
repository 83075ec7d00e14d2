"""Log files: the error log and the access log.

Owns log formatting (the access log's combined, common and json formats),
buffering, atomic line writes and reopening (USR1). Must not know about sockets,
workers or the master: callers hand it finished facts.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from json.encoder import encode_basestring_ascii
from typing import Protocol

from forkserver.config import ACCESS_LOG_FORMATS
from forkserver.sites.hosts import site_name

STDERR = "-"
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

# One write() of at most this many bytes is atomic on a pipe (POSIX PIPE_BUF).
# Flushing to a pipe (or a terminal) in chunks of whole lines no larger than this
# keeps lines from different workers from interleaving. A regular file opened with
# O_APPEND takes each write whole (the kernel holds the inode lock across it), so a
# flush goes out in one write: 13 us instead of 26 us for 256 lines.
ATOMIC_WRITE = 4096
# Buffered access lines are flushed when this much is pending, or at least once a second.
ACCESS_BUFFER_LINES = 256  # about 32 KiB of combined-format lines
ACCESS_FLUSH_SECONDS = 1.0

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class LogFile:
    """An append-only destination: stderr or a path, reopenable in place."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = 2 if path == STDERR else self._open(path)
        self.error = ""  # strerror of the last failed write; "" after a good one
        self.chunk_bytes = self._chunk_bytes()

    @staticmethod
    def _open(path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _chunk_bytes(self) -> int:
        """The most one write may carry: anything for a regular file, else PIPE_BUF."""
        try:
            regular = stat.S_ISREG(os.fstat(self.fd).st_mode)
        except OSError:
            regular = False
        return sys.maxsize if regular else ATOMIC_WRITE

    def reopen(self) -> None:
        """Point our fd number at a fresh open of the path (logrotate moved the old file).

        dup2 keeps the fd number, so anything holding the number (python-daemon's
        files_preserve, an exec'd successor) stays valid.
        """
        if self.path == STDERR:
            return
        fresh = self._open(self.path)
        try:
            os.dup2(fresh, self.fd, inheritable=False)
        finally:
            os.close(fresh)
        self.chunk_bytes = self._chunk_bytes()

    def write(self, data: bytes) -> bool:
        """Write whole lines, at most ``chunk_bytes`` per syscall. False on failure."""
        view = memoryview(data)
        limit = self.chunk_bytes
        try:
            while view:
                if len(view) <= limit:
                    chunk = view
                else:
                    cut = bytes(view[:limit]).rfind(b"\n") + 1 or limit
                    chunk = view[:cut]
                written = os.write(self.fd, chunk)
                view = view[written:]
        except OSError as exc:
            self.error = exc.strerror or str(exc)
            return False
        self.error = ""
        return True

    def deleted(self) -> bool:
        """Whether the open file has been unlinked (rm) and not yet reopened."""
        if self.fd <= 2:
            return False
        try:
            return os.fstat(self.fd).st_nlink == 0
        except OSError:
            return False

    def close(self) -> None:
        if self.fd > 2:
            os.close(self.fd)
            self.fd = -1


def iso_time(now: float) -> str:
    """ISO-8601 local time with offset, to the millisecond."""
    local = time.localtime(now)
    millis = int((now % 1) * 1000)
    offset = time.strftime("%z", local)
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{millis:03d}{offset[:3]}:{offset[3:]}"


class ErrorLog:
    """``[ISO-8601 time] [level] [pid] message`` lines, written at once (never buffered)."""

    def __init__(self, file: LogFile, level: str = "info") -> None:
        self.file = file
        self.threshold = LEVELS[level]

    def log(self, level: str, message: str) -> None:
        if LEVELS[level] < self.threshold:
            return
        text = message.replace("\n", "\\n")
        line = f"[{iso_time(time.time())}] [{level}] [{os.getpid()}] {text}\n"
        data = line.encode("utf-8", "backslashreplace")
        if not self.file.write(data) and self.file.fd != 2:
            # The error log's own disk is full or gone: stderr (the journal under
            # systemd) is the last place left to say it.
            with contextlib.suppress(OSError):
                os.write(2, data)

    def debug(self, message: str) -> None:
        self.log("debug", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def warning(self, message: str) -> None:
        self.log("warning", message)

    def error(self, message: str) -> None:
        self.log("error", message)


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


class AccessLog:
    """One line per response, in one of ACCESS_LOG_FORMATS, buffered.

    ``combined``: the combined log format plus the response time in microseconds;
    ``common``: the common log format (no referer, user agent or time taken);
    ``json``: one JSON object per line (time, client, method, path, protocol,
    status, bytes, duration_us, referer, user_agent, pid, scheme, host, and site
    with sites).

    Lines are whole in the buffer and flushed in whole-line chunks, so a reader sees
    either a complete line or nothing. Flushed at ACCESS_BUFFER_LINES, by ``tick``
    at least once a second, and on ``flush`` (reopen, exit).

    Trouble (a full disk, an I/O error, the file deleted) never stops serving: lines
    that cannot be written are dropped, and ``errors`` hears of it once when it
    starts and once when it ends, never per request or per flush.
    """

    def __init__(
        self, file: LogFile | None, log_format: str = "combined",
        errors: ErrorLog | None = None,
    ) -> None:
        if log_format not in ACCESS_LOG_FORMATS:
            raise ValueError(f"unknown access log format {log_format!r}")
        self.file = file
        self.enabled = file is not None  # an attribute, not a property: read per request
        self.format = log_format
        self.errors = errors
        self.dropped_lines = 0  # since writes started failing; > 0 means "in trouble"
        self.failing = False
        self.deletion_reported = False
        self.pending: list[Entry] = []  # lines not yet formatted, oldest first
        self.last_flush = time.monotonic()
        self._stamp_second = -1
        self._stamp = ""
        self._iso_second = -1
        self._iso_date = self._iso_offset = ""
        # worker/siterouting.py's name of the site that answered (the json "site").
        self.site_of: Callable[[LoggedRequest | str], str | None] | None = None
        self._format_lines = {
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

    def add(
        self, client: str, request: LoggedRequest | str, status: int, sent_after_head: int,
        started: float, ended: float, now: float, secure: bool = False,
    ) -> None:
        """Queue one response's line; it is formatted when the buffer is flushed.

        The worker hands over what it has, unconverted: looking up fields, escaping
        and formatting happen in one loop per batch, once per repeated request,
        which is what keeps logging cheap.
        """
        pending = self.pending
        pending.append((client, request, status, sent_after_head, started, ended, now, secure))
        if len(pending) >= ACCESS_BUFFER_LINES:
            self.flush()

    def tick(self, monotonic_now: float) -> None:
        if self.pending and monotonic_now - self.last_flush >= ACCESS_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> bool:
        """Write what is pending. False if the write failed (the lines are dropped)."""
        self.last_flush = time.monotonic()
        if not self.pending or self.file is None:
            self.pending.clear()
            return True
        data = "".join(self._format_lines(self.pending)).encode("latin-1", "backslashreplace")
        lines = len(self.pending)
        self.pending.clear()
        written = self.file.write(data)
        self._report(written, lines)
        return written

    def _report(self, written: bool, lines: int) -> None:
        """Tell the error log when writing starts or stops failing, and of a deletion."""
        file = self.file
        assert file is not None
        if not written:
            self.dropped_lines += lines
            if not self.failing:
                self.failing = True
                self._say("error", f"cannot write the access log {file.path}: {file.error}; "
                                   "serving continues, access lines are dropped until "
                                   "writes succeed")
            return
        if self.failing:
            self.failing = False
            self._say("info", f"the access log {file.path} is writable again; "
                              f"{self.dropped_lines} lines were dropped")
            self.dropped_lines = 0
        deleted = file.deleted()
        if deleted and not self.deletion_reported:
            self._say("warning", f"the access log {file.path} was deleted; lines go to "
                                 "the unlinked file until USR1 reopens it")
        self.deletion_reported = deleted

    def _say(self, level: str, message: str) -> None:
        if self.errors is not None:
            self.errors.log(level, message)
