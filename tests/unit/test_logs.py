"""Access log formats: each line whole, escaped, and parseable whatever the client sent.

Lines are written to a real file through LogFile and read back.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserver.logformats import escape_field, json_string
from forkserver.logs import AccessLog, LogFile

# What a line says: client, request line, status, body bytes, referer, user agent,
# duration in microseconds (``queue`` hands it to AccessLog.add as a worker would).
Record = tuple[str, str, int, int, str, str, int]

NOW = 1_795_000_000.25  # a fixed instant; the offset depends on the local zone


@dataclass
class Logged:
    """A request as the access log reads it (``http.Request`` has more); not frozen,
    as logformats.LoggedRequest declares plain (settable) attributes."""

    line: str
    headers: Mapping[str, str]


def queue(log: AccessLog, record: Record) -> None:
    """Hand ``record`` to the log the way a worker does."""
    client, line, status, size, referer, agent, duration = record
    headers = {name: value for name, value in (("referer", referer), ("user-agent", agent))
               if value}
    started = 1000.0
    log.add(client, Logged(line, headers), status, size, started, started + duration / 1e6, NOW)


def written(tmp_path: Path, log_format: str, *records: Record) -> str:
    path = tmp_path / "access.log"
    path.unlink(missing_ok=True)
    log = AccessLog(LogFile(str(path)), log_format)
    for record in records:
        queue(log, record)
    assert log.flush()
    log.file.close()  # type: ignore[union-attr]
    return path.read_bytes().decode("ascii")


def record(line: str = "GET /a HTTP/1.1", referer: str = "", agent: str = "") -> Record:
    return ("192.0.2.1", line, 200, 42, referer, agent, 1234)


def test_combined_is_common_plus_referer_agent_and_time_taken(tmp_path: Path) -> None:
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(int(NOW)))
    rec = record(referer="https://example.org/", agent="curl/8")
    assert written(tmp_path, "combined", rec) == (
        f'192.0.2.1 - - [{stamp}] "GET /a HTTP/1.1" 200 42 "https://example.org/" "curl/8" 1234\n'
    )
    assert written(tmp_path, "common", rec) == (
        f'192.0.2.1 - - [{stamp}] "GET /a HTTP/1.1" 200 42\n'
    )


def test_json_has_every_field(tmp_path: Path) -> None:
    rec = record(line="GET /a?b=1 HTTP/1.0", agent="curl/8")
    (line,) = written(tmp_path, "json", rec).splitlines()
    document = json.loads(line)
    assert document == {
        "time": document["time"], "client": "192.0.2.1", "method": "GET", "path": "/a?b=1",
        "protocol": "HTTP/1.0", "status": 200, "bytes": 42, "duration_us": 1234,
        "referer": None, "user_agent": "curl/8", "pid": document["pid"],
        # SPEC §6: a raw request line names no host; this one came over plain HTTP.
        "scheme": "http", "host": None,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.250[+-]\d\d:\d\d", document["time"])
    assert isinstance(document["pid"], int)


def test_an_empty_body_is_a_dash_in_text_and_zero_in_json(tmp_path: Path) -> None:
    rec: Record = ("192.0.2.1", "HEAD / HTTP/1.1", 304, 0, "", "", 5)
    assert ' 304 - "-" "-" 5\n' in written(tmp_path, "combined", rec)
    assert written(tmp_path, "common", rec).endswith(" 304 -\n")
    assert json.loads(written(tmp_path, "json", rec))["bytes"] == 0


@pytest.mark.parametrize(
    ("line", "method", "path", "protocol"),
    [
        ("", None, None, None),
        ("GARBAGE", "GARBAGE", None, None),
        ("GET /x", "GET", "/x", None),
        ("GET /a b HTTP/1.1", "GET", "/a", "b HTTP/1.1"),
    ],
)
def test_a_line_that_did_not_parse_is_split_as_far_as_it_goes(
    tmp_path: Path, line: str, method: str | None, path: str | None, protocol: str | None
) -> None:
    # The worker hands over the raw line (a str) when the head did not parse.
    log_path = tmp_path / "access.log"
    log = AccessLog(LogFile(str(log_path)), "json")
    log.add("192.0.2.1", line, 400, -3, 1000.0, 1000.000007, NOW)  # head cut short
    assert log.flush()
    document = json.loads(log_path.read_text())
    assert (document["method"], document["path"], document["protocol"]) == (
        method, path, protocol,
    )
    assert (document["status"], document["bytes"], document["duration_us"]) == (400, 0, 7)
    log.file.close()  # type: ignore[union-attr]


def test_a_raw_request_line_is_escaped_in_text_formats(tmp_path: Path) -> None:
    for log_format, ending in (("combined", '"BAD \\x22x" 400 - "-" "-" 7\n'),
                               ("common", '"BAD \\x22x" 400 -\n')):
        log_path = tmp_path / f"{log_format}.log"
        log = AccessLog(LogFile(str(log_path)), log_format)
        log.add("192.0.2.1", 'BAD "x', 400, -3, 1000.0, 1000.000007, NOW)
        assert log.flush()
        assert log_path.read_text().endswith(ending)
        log.file.close()  # type: ignore[union-attr]


def test_text_fields_escape_quotes_backslashes_controls_and_high_bytes() -> None:
    assert escape_field('a"b\\c\n\x1b[31m\xff ~') == "a\\x22b\\x5Cc\\x0A\\x1B[31m\\xFF ~"


def test_json_strings_are_ascii_and_escape_every_control() -> None:
    assert json_string('a"b\\c\n\x1b\x7f\xff') == '"a\\"b\\\\c\\n\\u001b\\u007f\\u00ff"'
    assert json_string(None) == "null"


def test_an_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="xml"):
        AccessLog(None, "xml")


LATIN1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40)


@settings(max_examples=300, deadline=None)
@given(line=LATIN1, referer=LATIN1, agent=LATIN1)
def test_any_bytes_give_one_line_per_record_in_every_format(
    tmp_path_factory: pytest.TempPathFactory, line: str, referer: str, agent: str
) -> None:
    directory = tmp_path_factory.mktemp("log")
    rec: Record = ("2001:db8::1", line, 400, 0, referer, agent, 7)
    for log_format in ("combined", "common"):
        text = written(directory, log_format, rec, rec)
        lines = text.split("\n")
        assert len(lines) == 3 and lines[2] == ""
        quoted = re.findall(r'"((?:[^"\\]|\\x[0-9A-F]{2})*)"', lines[0])
        assert quoted[0] == escape_field(line)
    text = written(directory, "json", rec, rec)
    lines = text.split("\n")
    assert len(lines) == 3 and lines[2] == ""
    document = json.loads(lines[0])
    # The exact bytes come back, each character one byte.
    assert document["user_agent"] == (agent or None)
    assert document["referer"] == (referer or None)
    assert " ".join(p for p in (document["method"], document["path"], document["protocol"])
                    if p is not None) == " ".join(p for p in line.split(" ", 2) if p)


def test_a_batch_repeating_a_request_keeps_each_lines_own_fields(tmp_path: Path) -> None:
    """One request object queued many times (a repeated head gives the worker the same
    Request): lines share its escaped fields, never their own client, status, size or
    duration."""
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(int(NOW)))
    plain = Logged("GET /a HTTP/1.1", {})
    odd = Logged('GET /"q" HTTP/1.1', {"user-agent": "curl/8"})
    log_path = tmp_path / "access.log"
    log = AccessLog(LogFile(str(log_path)), "combined")
    for client, request, status, size, duration in [
        ("192.0.2.1", plain, 200, 42, 1), ("192.0.2.2", plain, 200, 42, 2),
        ("192.0.2.1", plain, 304, 0, 3), ("192.0.2.1", odd, 200, 42, 4),
        ("192.0.2.3", odd, 200, 42, 5), ("192.0.2.3", plain, 200, 42, 6),
    ]:
        log.add(client, request, status, size, 1000.0, 1000.0 + duration / 1e6, NOW)
    assert log.flush()
    assert log_path.read_text().splitlines() == [
        f'192.0.2.1 - - [{stamp}] "GET /a HTTP/1.1" 200 42 "-" "-" 1',
        f'192.0.2.2 - - [{stamp}] "GET /a HTTP/1.1" 200 42 "-" "-" 2',
        f'192.0.2.1 - - [{stamp}] "GET /a HTTP/1.1" 304 - "-" "-" 3',
        f'192.0.2.1 - - [{stamp}] "GET /\\x22q\\x22 HTTP/1.1" 200 42 "-" "curl/8" 4',
        f'192.0.2.3 - - [{stamp}] "GET /\\x22q\\x22 HTTP/1.1" 200 42 "-" "curl/8" 5',
        f'192.0.2.3 - - [{stamp}] "GET /a HTTP/1.1" 200 42 "-" "-" 6',
    ]
    log.file.close()  # type: ignore[union-attr]


FLUSHES_PER_WRITER = 40
LINES_PER_FLUSH = 300  # about 30 KiB per flush: far over PIPE_BUF


def write_batches(path: str, tag: str) -> None:
    """One writer process: many large flushes through LogFile, as a worker makes."""
    log = LogFile(path)
    for flush in range(FLUSHES_PER_WRITER):
        lines = [f"{tag} {flush:03d} {index:04d} {'x' * 80}\n" for index in range(LINES_PER_FLUSH)]
        assert log.write("".join(lines).encode())
    log.close()


def assert_whole_lines(text: str, tags: tuple[str, ...]) -> None:
    lines = text.splitlines()
    assert len(lines) == len(tags) * FLUSHES_PER_WRITER * LINES_PER_FLUSH
    shape = re.compile(r"[ab] \d{3} \d{4} x{80}")
    assert all(shape.fullmatch(line) for line in lines), "a line was torn"
    for tag in tags:  # each writer's lines arrive whole and in its own order
        mine = [line for line in lines if line.startswith(tag)]
        assert mine == sorted(mine)


WRITER_TAGS = ("a", "b")


def run_writers(path: str) -> None:
    """Both writer processes at once, to the end."""
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=write_batches, args=(path, tag)) for tag in WRITER_TAGS]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0


def test_concurrent_writers_never_tear_a_line_in_a_file(tmp_path: Path) -> None:
    """A regular file takes each ~30 KiB flush in one write (O_APPEND keeps it whole)."""
    path = str(tmp_path / "access.log")
    probe = LogFile(path)
    assert probe.chunk_bytes > 1 << 20
    probe.close()
    run_writers(path)
    assert_whole_lines(Path(path).read_text(), WRITER_TAGS)


def test_concurrent_writers_never_tear_a_line_in_a_pipe() -> None:
    """A pipe gets chunks of whole lines of at most PIPE_BUF, each written atomically."""
    read_end, write_end = os.pipe()
    path = f"/proc/self/fd/{write_end}"
    probe = LogFile(path)
    assert probe.chunk_bytes == 4096
    probe.close()  # the reader sees EOF only once every write end is closed
    received = bytearray()

    def read_all() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    run_writers(path)
    os.close(write_end)
    reader.join(60)
    os.close(read_end)
    assert_whole_lines(received.decode(), WRITER_TAGS)
