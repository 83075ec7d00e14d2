"""forkserver.offload: results reach the loop's thread through the eventfd, bounded."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator

import pytest

from forkserver.offload import Finished, Offload

DEADLINE_MS = 5000  # generous: only a broken wake-up would ever take this long


@pytest.fixture()
def offload() -> Iterator[Offload]:
    pool = Offload(threads=2, capacity=4)
    yield pool
    pool.close()


def wait_and_deliver(pool: Offload, want: int) -> int:
    """Wait on epoll (as a worker does) until ``want`` callbacks ran; returns the count."""
    epoll = select.epoll()
    epoll.register(pool.fileno(), select.EPOLLIN)
    ran = 0
    try:
        for _ in range(100):
            if ran >= want:
                break
            events = epoll.poll(DEADLINE_MS / 1000)
            assert events, "the eventfd never woke the loop"
            ran += pool.deliver()
    finally:
        epoll.close()
    return ran


def test_result_and_error_come_back_on_the_loops_thread(offload: Offload) -> None:
    seen: list[tuple[object, object, int]] = []

    def record(outcome: Finished[int]) -> None:
        seen.append((outcome.value, outcome.error, threading.get_ident()))

    def fails() -> int:
        raise ValueError("bad")

    assert offload.submit(lambda: 6 * 7, record) is not None
    assert offload.submit(fails, record) is not None
    assert wait_and_deliver(offload, 2) == 2
    loop = threading.get_ident()
    values = sorted((str(v), type(e).__name__) for v, e, _ in seen)
    assert values == [("42", "NoneType"), ("None", "ValueError")]
    assert all(thread == loop for _, _, thread in seen)
    assert offload.outstanding == 0


def test_slow_work_does_not_hold_the_loop(offload: Offload) -> None:
    release = threading.Event()
    done: list[bool] = []
    offload.submit(lambda: release.wait(DEADLINE_MS / 1000), lambda o: done.append(bool(o.value)))
    # The loop is free: nothing is ready, deliver returns at once with nothing run.
    epoll = select.epoll()
    epoll.register(offload.fileno(), select.EPOLLIN)
    assert epoll.poll(0) == []
    epoll.close()
    assert offload.deliver() == 0 and done == []
    release.set()
    assert wait_and_deliver(offload, 1) == 1
    assert done == [True]


def test_capacity_bounds_what_is_accepted(offload: Offload) -> None:
    release = threading.Event()
    tickets = [offload.submit(lambda: release.wait(5), lambda o: None) for _ in range(4)]
    assert all(ticket is not None for ticket in tickets)
    assert offload.submit(lambda: True, lambda o: None) is None  # full: the caller says 503
    release.set()
    assert wait_and_deliver(offload, 4) == 4
    assert offload.submit(lambda: True, lambda o: None) is not None  # room again


def test_cancelled_ticket_is_not_called_back(offload: Offload) -> None:
    release = threading.Event()
    calls: list[object] = []
    ticket = offload.submit(lambda: release.wait(5), calls.append)
    kept = offload.submit(lambda: release.wait(5), calls.append)
    assert ticket is not None and kept is not None
    ticket.cancel()
    release.set()
    assert wait_and_deliver(offload, 1) == 1
    assert len(calls) == 1
    for _ in range(100):  # the cancelled one still frees its place
        if offload.outstanding == 0:
            break
        select.select([offload.fileno()], [], [], DEADLINE_MS / 1000)
        offload.deliver()
    assert offload.outstanding == 0


def test_a_raising_callback_loses_no_other_result(offload: Offload) -> None:
    gate = threading.Event()
    got: list[object] = []

    def explode(outcome: Finished[int]) -> None:
        raise RuntimeError("callback bug")

    offload.submit(lambda: gate.wait(5) and 1, explode)
    offload.submit(lambda: gate.wait(5) and 2, lambda o: got.append(o.value))
    gate.set()
    epoll = select.epoll()
    epoll.register(offload.fileno(), select.EPOLLIN)
    raised = 0
    for _ in range(100):
        if got and raised:
            break
        assert epoll.poll(DEADLINE_MS / 1000), "a finished job was never delivered"
        try:
            offload.deliver()
        except RuntimeError:
            raised += 1
    epoll.close()
    assert got == [2] and raised == 1


def test_no_threads_until_the_first_job() -> None:
    before = threading.active_count()
    pool = Offload(threads=3)
    assert threading.active_count() == before
    pool.submit(lambda: None, lambda o: None)
    assert threading.active_count() == before + 3
    pool.close()
    assert threading.active_count() == before
    assert pool.submit(lambda: None, lambda o: None) is None  # closed


def test_refuses_use_across_fork() -> None:
    pool = Offload(threads=1)
    pid = os.fork()
    if pid == 0:  # the child: submitting must raise, not hang on the parent's threads
        try:
            pool.submit(lambda: None, lambda o: None)
        except RuntimeError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pool.close()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        Offload(threads=0)
    with pytest.raises(ValueError):
        Offload(capacity=0)
