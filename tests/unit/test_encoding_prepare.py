"""encoding/prepare.py: one job per file version however many requests wait, results
stored before waiters resume, small inputs inline, a full pool degrades.

The pool is the real ``forkserver.offload.Offload`` (threads and an eventfd), or a
queue this test runs by hand where the order of events matters.
"""

from __future__ import annotations

import gzip
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from forkserver.encoding.etags import hash_bytes
from forkserver.encoding.gzipcache import FileIdentity, file_identity
from forkserver.encoding.prepare import (
    INLINE_GZIP_BYTES,
    INLINE_HASH_BYTES,
    Busy,
    Failed,
    Preparations,
    Waiting,
)
from forkserver.offload import Offload

BIG = b"".join(b"body { margin: %d; }\n" % i for i in range(40_000))  # ~800 KiB
assert len(BIG) > INLINE_HASH_BYTES > INLINE_GZIP_BYTES


@dataclass
class Done:
    value: Any
    error: Exception | None = None


class Ticket:
    def cancel(self) -> None:
        raise AssertionError("the hub never cancels a job")


class HandQueue:
    """A pool whose jobs run when the test says so (``run_all``), like Offload's."""

    def __init__(self, capacity: int = 8) -> None:
        self.jobs: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []
        self.capacity = capacity

    def __call__(
        self, work: Callable[[], Any], callback: Callable[[Any], None]
    ) -> Ticket | None:
        if len(self.jobs) >= self.capacity:
            return None
        self.jobs.append((work, callback))
        return Ticket()

    def run_all(self) -> None:
        jobs, self.jobs = self.jobs, []
        for work, callback in jobs:
            try:
                callback(Done(work()))
            except Exception as error:
                callback(Done(None, error))


def opened(tmp_path: Path, data: bytes, name: str = "f") -> tuple[int, FileIdentity]:
    path = tmp_path / name
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    return fd, file_identity(os.fstat(fd))


def test_small_inputs_are_done_inline_and_remembered(tmp_path: Path) -> None:
    pool = HandQueue()
    hub = Preparations(pool)
    fd, identity = opened(tmp_path, b"small file\n" * 10)
    try:
        assert hub.content_tag(fd, identity) == hash_bytes(b"small file\n" * 10)
        body = hub.gzip_body(fd, identity, 6)
        assert isinstance(body, bytes) and gzip.decompress(body) == b"small file\n" * 10
        assert not pool.jobs  # nothing went to the pool
        assert hub.gzip_body(fd, identity, 6) is body  # the cached bytes themselves
    finally:
        os.close(fd)


def test_one_job_per_version_however_many_wait(tmp_path: Path) -> None:
    pool = HandQueue()
    hub = Preparations(pool)
    fd, identity = opened(tmp_path, BIG)
    resumed: list[str] = []
    try:
        first = hub.gzip_body(fd, identity, 6)
        second = hub.gzip_body(fd, identity, 6)
        assert isinstance(first, Waiting) and second is first
        assert len(pool.jobs) == 1 and hub.in_flight == 1
        first.park(lambda: resumed.append("a"))
        gone = first.park(lambda: resumed.append("b"))
        first.park(lambda: resumed.append("c"))
        gone.cancel()  # that connection closed
        pool.run_all()
        assert resumed == ["a", "c"] and hub.in_flight == 0
        body = hub.gzip_body(fd, identity, 6)  # what a resumed plan finds
        assert isinstance(body, bytes) and gzip.decompress(body) == BIG
        assert not pool.jobs
    finally:
        os.close(fd)


def test_the_result_is_stored_before_any_waiter_resumes(tmp_path: Path) -> None:
    pool = HandQueue()
    hub = Preparations(pool)
    fd, identity = opened(tmp_path, BIG)
    seen: list[object] = []
    try:
        waiting = hub.content_tag(fd, identity)
        assert isinstance(waiting, Waiting)
        waiting.park(lambda: seen.append(hub.content_tag(fd, identity)))
        pool.run_all()
        assert seen == [hash_bytes(BIG)]
    finally:
        os.close(fd)


def test_a_full_pool_is_busy_and_leaks_no_descriptor(tmp_path: Path) -> None:
    pool = HandQueue(capacity=0)
    hub = Preparations(pool)
    fd, identity = opened(tmp_path, BIG)
    try:
        before = len(os.listdir("/proc/self/fd"))
        assert isinstance(hub.gzip_body(fd, identity, 6), Busy)
        assert isinstance(hub.content_tag(fd, identity), Busy)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(fd)


def test_a_failed_job_is_remembered_for_that_version(tmp_path: Path) -> None:
    pool = HandQueue()
    hub = Preparations(pool)
    fd, identity = opened(tmp_path, BIG)
    try:
        waiting = hub.content_tag(fd, identity)
        assert isinstance(waiting, Waiting)
        os.truncate(tmp_path / "f", 10)  # the job will find the file shorter
        pool.run_all()
        failed = hub.content_tag(fd, identity)
        assert isinstance(failed, Failed) and "shrank" in failed.reason
        assert not pool.jobs  # not retried for the same version
    finally:
        os.close(fd)


def test_files_too_large_for_the_cache_are_not_compressed(tmp_path: Path) -> None:
    hub = Preparations(None, gzip_bytes=len(BIG))  # inputs up to half of it
    fd, identity = opened(tmp_path, BIG)
    try:
        assert hub.gzip_body(fd, identity, 6) is None
    finally:
        os.close(fd)


def test_decoding_a_gz_is_measured_once_off_the_loop(tmp_path: Path) -> None:
    pool = HandQueue()
    hub = Preparations(pool)
    fd, identity = opened(tmp_path, gzip.compress(BIG), "f.gz")
    try:
        waiting = hub.decode(fd, identity)
        assert isinstance(waiting, Waiting) and len(pool.jobs) == 1
        pool.run_all()
        decoded = hub.decode(fd, identity)
        assert not isinstance(decoded, (Waiting, Busy, Failed))
        assert decoded.size == len(BIG) and decoded.body == BIG and decoded.problem is None
    finally:
        os.close(fd)


def test_jobs_run_on_the_real_offload_pool_and_come_back_on_the_loop(tmp_path: Path) -> None:
    offload = Offload(threads=2, capacity=8)
    hub = Preparations(offload.submit)
    fd, identity = opened(tmp_path, BIG)
    resumed: list[object] = []
    try:
        for start in (hub.content_tag, lambda f, i: hub.gzip_body(f, i, 6)):
            waiting = start(fd, identity)
            assert isinstance(waiting, Waiting)
            waiting.park(lambda: resumed.append(True))
        poller = select.poll()
        poller.register(offload.fileno(), select.POLLIN)
        deadline = time.monotonic() + 30
        while len(resumed) < 2 and time.monotonic() < deadline:
            if poller.poll(100):
                offload.deliver()
        assert len(resumed) == 2
        assert hub.content_tag(fd, identity) == hash_bytes(BIG)
        body = hub.gzip_body(fd, identity, 6)
        assert isinstance(body, bytes) and gzip.decompress(body) == BIG
    finally:
        os.close(fd)
        offload.close()


@pytest.mark.parametrize("size", [0, 1, INLINE_HASH_BYTES])
def test_no_pool_runs_everything_inline(tmp_path: Path, size: int) -> None:
    hub = Preparations(None)
    data = os.urandom(size)
    fd, identity = opened(tmp_path, data)
    try:
        assert hub.content_tag(fd, identity) == hash_bytes(data)
    finally:
        os.close(fd)
