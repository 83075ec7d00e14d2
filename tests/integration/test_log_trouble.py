"""Disk and log trouble: a full disk under the logs, an access log deleted while open,
and clients that try to write their own log lines.

Serving never stops for the logs. A worker that cannot write its access lines drops
them and says so in the error log once when the trouble starts and once when it
ends, never per request or per flush; an access log deleted while open is reported
once, and USR1 makes a new one. A full disk is a real one: an 8 MiB tmpfs (mounting
needs root, as in CI), or /dev/full, which fails every write with ENOSPC.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.load import LoadResult, run_load
from tests.support import Server, holds_open, request, running, wait_for

FILES = {"/index.html": b"<p>hello</p>\n", "/style.css": b"p { color: red }\n"}
NO_SPACE = "cannot write the access log"
WRITABLE_AGAIN = "is writable again"
DELETED = "was deleted"


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    for path, content in FILES.items():
        (root / path.lstrip("/")).write_bytes(content)
    return root


def serve_for(server: Server, seconds: float) -> LoadResult:
    """Keep-alive and fresh-connection clients on both workers, every byte checked.

    At most 3000 requests (about 300 KiB of access lines), so a freed disk is not
    filled again by the test's own traffic.
    """
    result = run_load(
        server.port, list(FILES), lambda path, status, body: (status, body) == (200, FILES[path]),
        seconds=seconds, keepalive_clients=2, fresh_clients=2, max_requests=3000,
    )
    assert result.requests > 50, result.summary()
    assert not result.failures, result.summary()
    return result


def said_by_pid(text: str, phrase: str) -> Counter[str]:
    """How many lines containing ``phrase`` each pid wrote."""
    pids: Counter[str] = Counter()
    for line in text.splitlines():
        if phrase in line:
            match = re.search(r"\] \[(\d+)\] ", line)
            assert match is not None, line
            pids[match.group(1)] += 1
    return pids


def serve_over_many_flushes(server: Server) -> None:
    """Requests for 3.5 s, or 3000 of them: either way several flushes per worker.

    A worker flushes its access buffer at least once a second while lines are
    pending, and whenever 256 are; the test polls for what the flushes say after.
    """
    serve_for(server, 3.5)


def assert_once_per_worker(server: Server, text: str, phrase: str) -> None:
    counts = said_by_pid(text, phrase)
    assert counts, f"nobody said {phrase!r}"
    assert set(counts) <= {str(pid) for pid in server.workers()}
    assert max(counts.values()) == 1, f"{phrase!r} said more than once: {counts}"


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(where)],
        capture_output=True, text=True, check=False,
    )
    assert mounted.returncode == 0, f"mount failed: {mounted.stderr}"
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill(directory: Path, *top_up: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; return the filler.

    tmpfs allocates whole pages, so the last page of each file in ``top_up`` still
    takes writes: those are padded with newlines until they fail too.
    """
    filler = directory / "filler"
    for path in (filler, *top_up):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (4096, 256, 16, 1):  # each until it fails: the last byte too
                for _ in range(4096):  # an 8 MiB tmpfs is full long before
                    try:
                        os.write(fd, b"\n" * size)
                    except OSError:
                        break
        finally:
            os.close(fd)
    return filler


# needs root to mount; .ci/run runs the suite as root, so CI always runs it
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_log_disk_keeps_serving_and_is_reported_once(
    tmp_path: Path, docroot: Path
) -> None:
    """Both logs on one full disk: the error goes to stderr, the recovery to the log."""
    with small_tmpfs(tmp_path / "logs") as logs:
        settings = {
            "docroot": str(docroot),
            "access_log": str(logs / "access.log"),
            "error_log": str(logs / "error.log"),
            "log_level": "info",
        }
        with running(tmp_path, settings) as server:
            filler = fill(logs, logs / "error.log")
            serve_over_many_flushes(server)
            wait_for(lambda: NO_SPACE in server.stderr, timeout=5, what="the stderr line")
            assert "No space left on device" in server.stderr
            assert_once_per_worker(server, server.stderr, NO_SPACE)

            filler.unlink()
            serve_for(server, 2.0)
            wait_for(lambda: WRITABLE_AGAIN in server.error_log, timeout=5,
                     what="the recovery line")
            assert_once_per_worker(server, server.error_log, WRITABLE_AGAIN)
            assert re.search(r"writable again; [1-9]\d* lines were dropped", server.error_log)
            # The stderr line was said once per worker, for all those flushes.
            assert_once_per_worker(server, server.stderr, NO_SPACE)
            lines_before = server.access_log.count("\n")
            serve_for(server, 1.5)
            wait_for(lambda: server.access_log.count("\n") > lines_before, timeout=5,
                     what="access lines written again")


def test_an_access_log_on_dev_full_keeps_serving_until_usr1_fixes_it(
    tmp_path: Path, docroot: Path
) -> None:
    """/dev/full fails every write with ENOSPC, whoever runs the test."""
    access = tmp_path / "access.log"
    access.symlink_to("/dev/full")
    with running(tmp_path, {"docroot": str(docroot), "access_log": str(access)}) as server:
        serve_over_many_flushes(server)
        wait_for(lambda: NO_SPACE in server.error_log, timeout=5, what="the error line")
        assert "No space left on device" in server.error_log
        assert_once_per_worker(server, server.error_log, NO_SPACE)
        assert server.process is not None and server.process.poll() is None

        access.unlink()  # the operator points the log somewhere sane and reopens
        server.signal(signal.SIGUSR1)
        wait_for(lambda: server.error_log.count("log files reopened") == 1, timeout=5,
                 what="the reopen")
        wait_for(lambda: all(holds_open(pid, access) for pid in server.workers()), timeout=5,
                 what="every worker reopening the access log")
        serve_for(server, 2.0)
        wait_for(lambda: WRITABLE_AGAIN in server.error_log, timeout=5,
                 what="the recovery line")
        assert access.is_file() and not access.is_symlink()
        wait_for(lambda: "GET /" in server.access_log, timeout=5, what="access lines")
        assert_once_per_worker(server, server.error_log, NO_SPACE)


def test_a_deleted_access_log_is_reported_once_and_usr1_recreates_it(
    tmp_path: Path, docroot: Path
) -> None:
    with running(tmp_path, {"docroot": str(docroot)}) as server:
        access = Path(server.settings["access_log"])
        serve_for(server, 1.5)
        wait_for(lambda: access.exists() and "GET /" in access.read_text(), timeout=5,
                 what="access lines")
        access.unlink()
        serve_over_many_flushes(server)
        wait_for(lambda: DELETED in server.error_log, timeout=5, what="the deletion warning")
        assert_once_per_worker(server, server.error_log, DELETED)
        assert not access.exists()

        server.signal(signal.SIGUSR1)
        wait_for(lambda: all(holds_open(pid, access) for pid in server.workers()), timeout=5,
                 what="every worker writing to a new access.log")
        result = serve_for(server, 2.0)
        wait_for(lambda: access.read_text().count("\n") >= result.requests, timeout=5,
                 what="every request of the last round in the new file")
        # Writing to the new file says nothing more.
        assert_once_per_worker(server, server.error_log, DELETED)
        assert NO_SPACE not in server.error_log


def test_a_request_line_cannot_forge_an_access_log_line(tmp_path: Path, docroot: Path) -> None:
    forged = b'GET /x HTTP/1.1" 200 1 "-" "-" 1\r\n10.0.0.1 - - "GET /\x1b[2J\xff HTTP/1.1'
    with running(tmp_path, {"docroot": str(docroot)}) as server:
        answer = request(server.port, forged + b"\r\nHost: t\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")
        request(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nUser-Agent: a\" \xff\r\n"
                             b"Connection: close\r\n\r\n")
        wait_for(lambda: server.access_log.count("\n") == 2, timeout=5, what="2 lines")
        first, second = server.access_log.splitlines()
    assert first.startswith('127.0.0.1 - - [') and ' "GET /x HTTP/1.1\\x22 200 1 ' in first
    assert "10.0.0.1" not in server.access_log  # the header line after it is not logged
    assert ' 200 ' in second and ' "a\\x22 \\xFF" ' in second
    assert "\x1b" not in server.access_log
