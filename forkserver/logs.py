"""Log files: the error log and the access log.

Owns the error log's lines, the access log's buffering, atomic line writes,
reopening (USR1) and the reports of a log in trouble; the access log's line formats
are logformats.py. Must not know about sockets, workers or the master: callers hand
it finished facts.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable

from forkserver.logformats import Entry, LineFormat, LoggedRequest

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


class AccessLog:
    """One line per response, in one of ACCESS_LOG_FORMATS (logformats.py), buffered.

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
        self.file = file
        self.enabled = file is not None  # an attribute, not a property: read per request
        self.format = log_format
        self.errors = errors
        self.dropped_lines = 0  # since writes started failing; > 0 means "in trouble"
        self.failing = False
        self.deletion_reported = False
        self.pending: list[Entry] = []  # lines not yet formatted, oldest first
        self.last_flush = time.monotonic()
        self.formats = LineFormat(log_format)  # logformats.py
        self._format_lines = self.formats.lines

    @property
    def site_of(self) -> Callable[[LoggedRequest | str], str | None] | None:
        """worker/siterouting.py's name of the site that answered (the json "site")."""
        return self.formats.site_of

    @site_of.setter
    def site_of(self, name_of: Callable[[LoggedRequest | str], str | None] | None) -> None:
        self.formats.site_of = name_of

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
