"""worker_memory_limit (forkserver/protect/memory.py): sizes, the RSS read, and the
master's replacement policy driven with a clock that is a number."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forkserver.protect.memory import (
    BACKOFF_CAP,
    NOTHING,
    MemoryPolicy,
    Step,
    WorkerMemory,
    resident_bytes,
)

MiB = 1024 * 1024
LIMIT = 100 * MiB


def test_resident_bytes_of_this_process_and_of_a_gone_one() -> None:
    rss = resident_bytes(os.getpid())
    assert rss is not None and rss > MiB
    assert resident_bytes(2**22 + 12345) is None  # above pid_max's default ceiling


def test_resident_bytes_reads_statm_pages(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "statm").write_text("1000 250 30 1 0 100 0\n")
    assert resident_bytes(42, str(tmp_path)) == 250 * os.sysconf("SC_PAGE_SIZE")
    (tmp_path / "43").mkdir()
    (tmp_path / "43" / "statm").write_text("garbage")
    assert resident_bytes(43, str(tmp_path)) is None


def w(pid: int, rss: int | None, serving: bool = True) -> WorkerMemory:
    return WorkerMemory(pid, rss, serving)


def test_nothing_to_do_under_the_limit() -> None:
    policy = MemoryPolicy(LIMIT)
    assert policy.decide(0.0, [w(1, LIMIT), w(2, 50 * MiB)]) == NOTHING


def test_successor_first_then_retire_then_the_next() -> None:
    policy = MemoryPolicy(LIMIT)
    pool = [w(1, 150 * MiB), w(2, 120 * MiB)]
    action = policy.decide(0.0, pool)
    assert action.step is Step.SPAWN_SUCCESSOR and action.pid == 1  # the largest first
    policy.successor_started(3)
    # While the successor boots: nothing else, however many are over the limit.
    assert policy.decide(1.0, [*pool, w(3, 20 * MiB, serving=False)]) == NOTHING
    action = policy.decide(2.0, [*pool, w(3, 20 * MiB)])
    assert action.step is Step.RETIRE and action.pid == 1 and not action.message
    # Worker 1 drains (no longer listed); worker 2 waits its turn until 1 is reaped.
    assert policy.decide(3.0, [w(2, 120 * MiB), w(3, 20 * MiB)]) == NOTHING
    policy.forget(1, 4.0)
    action = policy.decide(4.0, [w(2, 120 * MiB), w(3, 20 * MiB)])
    assert action.step is Step.SPAWN_SUCCESSOR and action.pid == 2


def test_never_more_than_one_extra_worker() -> None:
    """Simulate a pool of 4, all over the limit: alive workers never exceed 5."""
    policy = MemoryPolicy(LIMIT)
    pool = {pid: w(pid, 200 * MiB) for pid in (1, 2, 3, 4)}
    draining: set[int] = set()
    next_pid = 10
    replaced = 0
    now = 0.0
    while replaced < 4 and now < 100.0:
        action = policy.decide(now, list(pool.values()))
        if action.step is Step.SPAWN_SUCCESSOR:
            pool[next_pid] = w(next_pid, 20 * MiB, serving=False)
            policy.successor_started(next_pid)
            next_pid += 1
        elif action.step is Step.RETIRE:
            del pool[action.pid]
            draining.add(action.pid)
        assert len(pool) + len(draining) <= 5
        now += 0.5
        for pid, worker in list(pool.items()):
            pool[pid] = w(pid, worker.rss, serving=True)  # booted by the next look
        for pid in list(draining):  # drained and reaped
            draining.discard(pid)
            policy.forget(pid, now)
            replaced += 1
    assert replaced == 4
    assert all(worker.rss == 20 * MiB for worker in pool.values())


def test_a_limit_below_a_fresh_worker_is_reported_and_backs_off() -> None:
    policy = MemoryPolicy(LIMIT)
    now = 0.0
    delays = []
    old, new = 1, 100
    action = policy.decide(now, [w(old, 150 * MiB)])
    for _ in range(8):
        assert action.step is Step.SPAWN_SUCCESSOR and action.pid == old
        policy.successor_started(new)
        action = policy.decide(now, [w(old, 150 * MiB), w(new, 140 * MiB)])
        assert action.step is Step.RETIRE and "below a fresh worker" in action.message
        policy.forget(old, now)
        started = now
        old, new = new, new + 1
        while (action := policy.decide(now, [w(old, 140 * MiB)])) == NOTHING:
            now += 0.25
        delays.append(now - started)
    assert delays[0] == pytest.approx(0.5)
    assert delays == sorted(delays)
    assert max(delays) <= BACKOFF_CAP + 0.25


def test_a_successor_that_dies_before_serving_backs_off_and_keeps_the_old() -> None:
    policy = MemoryPolicy(LIMIT)
    assert policy.decide(0.0, [w(1, 150 * MiB)]).step is Step.SPAWN_SUCCESSOR
    policy.successor_started(2)
    policy.forget(2, 0.1)  # reaped: crashed while booting
    assert policy.decide(0.2, [w(1, 150 * MiB)]) == NOTHING  # backing off
    assert policy.decide(0.7, [w(1, 150 * MiB)]).step is Step.SPAWN_SUCCESSOR


def test_an_old_worker_that_ends_by_itself_ends_the_replacement() -> None:
    policy = MemoryPolicy(LIMIT)
    assert policy.decide(0.0, [w(1, 150 * MiB), w(2, 50 * MiB)]).step is Step.SPAWN_SUCCESSOR
    policy.successor_started(3)
    assert policy.decide(0.5, [w(2, 50 * MiB), w(3, 20 * MiB)]) == NOTHING
    assert policy.old == 0  # over: the successor simply joins the pool


def test_a_good_replacement_resets_the_back_off() -> None:
    policy = MemoryPolicy(LIMIT)
    policy.decide(0.0, [w(1, 150 * MiB)])
    policy.successor_started(2)
    policy.forget(2, 0.0)  # one failure: streak 1
    assert policy.streak == 1
    policy.decide(1.0, [w(1, 150 * MiB)])
    policy.successor_started(3)
    assert policy.decide(1.5, [w(1, 150 * MiB), w(3, 20 * MiB)]).step is Step.RETIRE
    assert policy.streak == 0


def test_unreadable_or_booting_workers_are_not_replaced() -> None:
    policy = MemoryPolicy(LIMIT)
    assert policy.decide(0.0, [w(1, None), w(2, 500 * MiB, serving=False)]) == NOTHING
