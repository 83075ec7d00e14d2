"""encoding/gunzip.py: .gz decoded in bounded slices; bombs, truncated files and
files that are not gzip are refused with a reason, in bounded memory.

Every gzip here is real gzip made by zlib in the test: a "bomb" is a file of a few
KiB that decodes to hundreds of MiB or gigabytes.
"""

from __future__ import annotations

import gzip
import os
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkserver.encoding.gunzip import (
    INPUT_BUDGET,
    MAX_DECODED_BYTES,
    SLICE_BYTES,
    Decoded,
    GunzipError,
    GunzipStream,
    measure,
)
from forkserver.encoding.gzipcache import file_identity

TEXT = b"".join(b"line %d of a log that compresses well\n" % i for i in range(20_000))
MIB = 1024 * 1024


def zeros_member(decoded: int) -> bytes:
    """One gzip member of ``decoded`` zero bytes, made in pieces (no big buffer)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MIB)
    out = [packer.compress(block) for _ in range(decoded // MIB)]
    out.append(packer.flush())
    return b"".join(out)


def write(tmp_path: Path, data: bytes, name: str = "x.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def measured(path: Path, **limits: int) -> Decoded:
    fd = os.open(path, os.O_RDONLY)
    return measure(fd, file_identity(os.fstat(fd)), **limits)


@pytest.fixture
def gz_text(tmp_path: Path) -> Path:
    return write(tmp_path, gzip.compress(TEXT, mtime=0))


def stream(path: Path, limit: int = SLICE_BYTES, **options: int) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = GunzipStream(fd, os.fstat(fd).st_size, **options)
        while not reader.done:
            yield reader.read(limit)
    finally:
        os.close(fd)


# -- good files -----------------------------------------------------------------------
def test_a_gzip_file_is_measured_and_kept_when_small(gz_text: Path) -> None:
    result = measured(gz_text)
    assert result.problem is None and result.size == len(TEXT)
    assert result.body == TEXT


def test_a_large_decoded_body_is_measured_but_not_kept(gz_text: Path) -> None:
    result = measured(gz_text, keep=1000)
    assert result.problem is None and result.size == len(TEXT)
    assert result.body is None


def test_streamed_slices_are_bounded_and_add_up_to_the_file(gz_text: Path) -> None:
    pieces = list(stream(gz_text, limit=4096))
    assert all(len(piece) <= 4096 for piece in pieces)
    assert b"".join(pieces) == TEXT


def test_rfc1952_2_2_several_members_are_one_file(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(b"first\n") + gzip.compress(b"second\n"))
    assert b"".join(stream(path)) == b"first\nsecond\n"
    assert measured(path).body == b"first\nsecond\n"


def test_an_empty_member_decodes_to_nothing(tmp_path: Path) -> None:
    result = measured(write(tmp_path, gzip.compress(b"")))
    assert result.problem is None and result.size == 0


# -- bombs ----------------------------------------------------------------------------
def test_gzip_bomb_of_a_gigabyte_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    member = zeros_member(MIB)  # ~1 KiB that decodes to 1 MiB
    path = write(tmp_path, member * 1024)  # ~1 MiB on disk, 1 GiB decoded
    tracemalloc.start()
    try:
        result = measured(path, max_decoded=64 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.problem is not None and "bomb" in result.problem
    assert result.body is None
    assert peak < 4 * MIB, f"peak {peak} bytes"


def test_single_member_bomb_beyond_the_default_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, zeros_member(MAX_DECODED_BYTES + MIB))  # ~260 KiB on disk
    assert path.stat().st_size < MIB
    tracemalloc.start()
    try:
        result = measured(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "more than" in str(result.problem)
    assert peak < 4 * MIB, f"peak {peak} bytes"


def test_a_bomb_streams_no_further_than_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, zeros_member(32 * MIB))
    total = 0
    with pytest.raises(GunzipError, match="more than"):
        for piece in stream(path, max_decoded=4 * MIB):
            total += len(piece)
    assert total <= 4 * MIB


def test_one_read_consumes_a_bounded_amount_of_input(tmp_path: Path) -> None:
    # Thousands of empty members: much input, no output.
    path = write(tmp_path, gzip.compress(b"", mtime=0) * 50_000 + gzip.compress(b"end"))
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = GunzipStream(fd, os.fstat(fd).st_size)
        reader.read()
        assert not reader.done  # stopped by the input budget, not by the end
        assert reader._offset <= INPUT_BUDGET + 64 * 1024
        out = b""
        while not reader.done:
            out += reader.read()
        assert out == b"end"
    finally:
        os.close(fd)


# -- broken files ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("truncated in the middle", lambda: gzip.compress(TEXT)[:5000], "truncated"),
        ("trailer cut", lambda: gzip.compress(TEXT)[:-4], "truncated"),
        ("header only", lambda: gzip.compress(TEXT)[:10], "truncated"),
        ("empty file", lambda: b"", "truncated"),
        ("plain text", lambda: TEXT[:3000], "not valid gzip"),
        ("zlib, not gzip", lambda: zlib.compress(TEXT), "not valid gzip"),
        ("random bytes", lambda: os.urandom(4096), "not valid gzip"),
        ("trailing garbage", lambda: gzip.compress(b"ok") + b"garbage!", "not valid gzip"),
        ("trailing zeros", lambda: gzip.compress(b"ok") + bytes(512), "not valid gzip"),
        ("bad crc", lambda: gzip.compress(b"ok")[:-8] + b"\0\0\0\0\2\0\0\0", "not valid gzip"),
    ],
)
def test_a_broken_gz_is_refused_with_a_reason(
    tmp_path: Path, name: str, make: object, reason: str
) -> None:
    path = write(tmp_path, make())  # type: ignore[operator]
    result = measured(path)
    assert result.problem is not None and reason in result.problem, result.problem
    assert result.body is None
    with pytest.raises(GunzipError, match=reason):
        for _ in stream(path):
            pass


def test_a_stream_that_disagrees_with_its_measured_length_is_cut(gz_text: Path) -> None:
    with pytest.raises(GunzipError, match="measured"):
        for _ in stream(gz_text, expected=len(TEXT) - 1):
            pass
    with pytest.raises(GunzipError, match="measured"):
        for _ in stream(gz_text, expected=len(TEXT) + 1):
            pass
    assert b"".join(stream(gz_text, expected=len(TEXT))) == TEXT


def test_a_file_truncated_after_it_was_opened_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(os.urandom(300_000)))
    fd = os.open(path, os.O_RDONLY)
    identity = file_identity(os.fstat(fd))
    os.truncate(path, 1000)
    result = measure(fd, identity)
    assert "truncated" in str(result.problem)
