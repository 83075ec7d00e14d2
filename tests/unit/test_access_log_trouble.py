"""logs.py on real files: trouble with the access log is reported once, not per flush."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from forkserver.logformats import escape_field
from forkserver.logs import AccessLog, ErrorLog, LogFile


def record(log: AccessLog, count: int = 1) -> None:
    for _ in range(count):
        started = time.monotonic()
        log.add("127.0.0.1", "GET / HTTP/1.1", 200, 5, started, started + 1e-5, time.time())


def logs(tmp_path: Path, access_path: Path) -> tuple[AccessLog, Path]:
    errors = tmp_path / "error.log"
    return AccessLog(LogFile(str(access_path)), errors=ErrorLog(LogFile(str(errors)))), errors


def test_a_failing_access_log_is_reported_once_and_its_recovery_once(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    access.symlink_to("/dev/full")
    log, errors = logs(tmp_path, access)
    for _ in range(5):
        record(log, 3)
        assert log.flush() is False
    text = errors.read_text()
    assert text.count("cannot write the access log") == 1
    assert "No space left on device" in text

    access.unlink()
    assert log.file is not None
    log.file.reopen()
    for _ in range(3):
        record(log)
        assert log.flush() is True
    text = errors.read_text()
    assert text.count("is writable again; 15 lines were dropped") == 1
    assert access.read_text().count("\n") == 3


def test_a_deleted_access_log_is_reported_once_until_reopened(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    log, errors = logs(tmp_path, access)
    record(log)
    log.flush()
    access.unlink()
    for _ in range(4):
        record(log)
        assert log.flush() is True  # writing to an unlinked file works; nobody reads it
    assert errors.read_text().count("was deleted") == 1

    assert log.file is not None
    log.file.reopen()
    record(log)
    log.flush()
    assert access.read_text().count("\n") == 1
    access.unlink()  # deleted again after a reopen: said again, once
    for _ in range(2):
        record(log)
        log.flush()
    assert errors.read_text().count("was deleted") == 2


def test_an_error_log_that_cannot_be_written_falls_back_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "error.log"
    full.symlink_to("/dev/full")
    ErrorLog(LogFile(str(full))).error("the disk is full")
    _, err = capfd.readouterr()
    assert "[error]" in err and "the disk is full" in err


def test_escape_field_makes_log_injection_visible() -> None:
    forged = 'GET / HTTP/1.1" 200 1 "-" "-" 1\n127.0.0.1 - - [x] "GET /admin\x1b[2J'
    escaped = escape_field(forged)
    assert "\n" not in escaped and '"' not in escaped and "\x1b" not in escaped
    assert "\\x22" in escaped and "\\x0A" in escaped and "\\x1B" in escaped
