"""The master's decisions in memory, the way gunicorn tests its arbiter.

A real Master (with its real scoreboard, pool, generations and log files) drives a
fake process table: fork returns made-up pids, kill and waitpid are recorded and
scripted, and the clock moves only when a test moves it. No process is started and
nothing sleeps; each test asserts on the calls made and on the named state.
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkserver.capacity import MAX_WORKERS, SCOREBOARD_SLOTS
from forkserver.config import load_config
from forkserver.master import UPGRADE_FROM_ENV, Master, StartInfo, State, Upgrade
from forkserver.master.pool import (
    ABORT_GRACE_SECONDS,
    BACKOFF_CAP,
    HEALTHY_SECONDS,
    KILL_MARGIN_SECONDS,
    backoff_delay,
)
from forkserver.master.restarts import RESTARTS, Cause, classify
from forkserver.scoreboard import RESTART_REASONS, SLOT_COUNT, SlotState
from forkserver.workerspec import WorkerSpec

_BEAT = struct.calcsize("=iI")  # the heartbeat's offset in a slot (scoreboard.py)


def exited(code: int) -> int:
    return code << 8  # a wait status, as os.waitpid returns it


def killed(signum: int) -> int:
    return int(signum)


class FakeProcesses:
    """fork/kill/waitpid/monotonic for the Master, with no process behind them."""

    def __init__(self) -> None:
        self.now = time.monotonic()  # the scoreboard stamps claims with the real clock
        self.next_pid = 1000
        self.forked: list[int] = []
        self.kills: list[tuple[int, int]] = []
        self.ended: list[tuple[int, int]] = []  # what waitpid reports next

    def fork(self) -> int:
        self.next_pid += 1
        self.forked.append(self.next_pid)
        return self.next_pid

    def kill(self, pid: int, signum: int) -> None:
        self.kills.append((pid, signum))

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        assert (pid, options) == (-1, os.WNOHANG)
        return self.ended.pop(0) if self.ended else (0, 0)

    def monotonic(self) -> float:
        return self.now

    def sent(self, signum: int) -> list[int]:
        return [pid for pid, sig in self.kills if sig == signum]


class Harness:
    def __init__(self, tmp_path: Path, text: str) -> None:
        self.path = tmp_path / "site.yaml"
        self.log = tmp_path / "error.log"
        self.docroot = tmp_path / "www"
        self.docroot.mkdir(exist_ok=True)
        # A real listener on a free port, named in the file, so a reload keeps it
        # instead of binding the default port (which anything else may hold).
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.write(text)
        self.processes = FakeProcesses()
        self.master = Master(
            load_config(str(self.path)), [self.listener], self.worker_main,
            StartInfo([], str(tmp_path)), processes=self.processes,
        )

    @staticmethod
    def worker_main(spec: WorkerSpec) -> int:
        raise AssertionError("no worker runs in these tests")

    def write(self, text: str) -> None:
        self.path.write_text(
            f"docroot: {self.docroot}\nerror_log: {self.log}\nport: {self.port}\n{text}"
        )

    def pids(self, generation: int | None = None) -> list[int]:
        return sorted(pid for pid, w in self.master.pool.workers.items()
                      if generation is None or w.generation.number == generation)

    def serve(self, *pids: int) -> None:
        """The workers reach SERVING and beat now (by the fake clock)."""
        for pid in pids or self.pids():
            self.master.scoreboard.set_state(self.master.pool.workers[pid].slot,
                                             SlotState.SERVING)
        self.beat(*(pids or self.pids()))

    def beat(self, *pids: int) -> None:
        for pid in pids:
            slot = self.master.pool.workers[pid].slot
            base = self.master.scoreboard._base(slot)
            struct.pack_into("=d", self.master.scoreboard.memory, base + _BEAT,
                             self.processes.now)

    def end(self, pid: int, status: int) -> None:
        self.processes.ended.append((pid, status))

    def restarts(self) -> dict[str, int]:
        return self.master.scoreboard.snapshot().master.restarts

    def close(self) -> None:
        os.close(self.master.signals.read_fd)
        os.close(self.master.signals.write_fd)
        self.listener.close()


@pytest.fixture(autouse=True)
def _no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", UPGRADE_FROM_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path, "workers: 2\n")
    yield made
    made.close()


# Read through functions: mypy would narrow an attribute after the first assert.
def state(harness: Harness) -> State:
    return harness.master.state


def upgrade(harness: Harness) -> Upgrade:
    return harness.master.handoff.state


def serving(harness: Harness) -> list[int]:
    harness.master.turn()
    pids = harness.pids()
    harness.serve()
    harness.master.turn()
    assert state(harness) is State.SERVING
    return pids


# -- start-up and reload ----------------------------------------------------------------

def test_first_generation_spawns_its_workers_and_serves_once_all_are_ready(
    harness: Harness,
) -> None:
    assert state(harness) is State.STARTING
    harness.master.turn()
    assert len(harness.processes.forked) == 2
    harness.serve(harness.processes.forked[0])
    harness.master.turn()
    assert state(harness) is State.STARTING  # one of two is not enough
    harness.serve()
    harness.master.turn()
    assert state(harness) is State.SERVING
    assert harness.processes.kills == []


def test_reload_spawns_a_new_generation_and_retires_the_old_only_once_it_is_ready(
    harness: Harness,
) -> None:
    old = serving(harness)
    harness.write("workers: 3\n")
    harness.master.dispatch(signal.SIGHUP)
    assert state(harness) is State.RELOADING
    assert harness.master.generation.number == 2
    harness.master.turn()
    new = harness.pids(2)
    assert len(new) == 3
    harness.serve(*new[:2])
    harness.master.turn()
    assert harness.processes.sent(signal.SIGTERM) == []  # the new one is not ready yet
    assert state(harness) is State.RELOADING
    harness.serve(*new)
    harness.master.turn()
    assert sorted(harness.processes.sent(signal.SIGTERM)) == old
    assert state(harness) is State.SERVING
    for pid in old:
        harness.end(pid, exited(0))
    harness.master.turn()
    assert harness.restarts()["reload"] == 2
    assert [g.number for g in harness.master.generations.all] == [2]  # gen 1 forgotten
    assert harness.processes.forked[-1] == new[-1]  # nobody replaced the retired ones


def test_refused_reload_changes_nothing(harness: Harness) -> None:
    serving(harness)
    harness.write("workers: 0\n")
    harness.master.dispatch(signal.SIGHUP)
    harness.master.turn()
    assert state(harness) is State.SERVING
    assert harness.master.generation.number == 1
    assert len(harness.processes.forked) == 2
    assert "reload failed; still serving generation 1" in harness.log.read_text()


def test_a_worker_of_the_new_generation_dying_keeps_the_old_one_serving(
    harness: Harness,
) -> None:
    old = serving(harness)
    harness.master.dispatch(signal.SIGHUP)
    harness.master.turn()
    harness.end(harness.pids(2)[0], exited(3))
    harness.master.turn()
    assert state(harness) is State.RELOADING
    assert harness.processes.sent(signal.SIGTERM) == []
    assert harness.pids(1) == old


# -- scaling ------------------------------------------------------------------------------

def test_ttin_adds_a_worker(harness: Harness) -> None:
    serving(harness)
    harness.master.dispatch(signal.SIGTTIN)
    harness.master.turn()
    assert harness.master.generation.target == 3
    assert len(harness.processes.forked) == 3


def test_ttin_is_refused_at_max_workers(harness: Harness) -> None:
    serving(harness)
    harness.master.generation.target = MAX_WORKERS
    harness.master.dispatch(signal.SIGTTIN)
    assert harness.master.generation.target == MAX_WORKERS
    assert f"TTIN refused: {MAX_WORKERS} workers" in harness.log.read_text()


def test_max_workers_is_half_the_scoreboard_so_a_reload_fits_twice() -> None:
    assert SLOT_COUNT == SCOREBOARD_SLOTS
    assert 2 * MAX_WORKERS == SLOT_COUNT


def test_ttou_retires_the_youngest_and_never_goes_below_one(harness: Harness) -> None:
    harness.master.turn()
    harness.processes.now += 1  # the second worker is younger
    harness.master.pool.workers[harness.pids()[1]].started = harness.processes.now
    harness.serve()
    harness.master.turn()
    harness.master.dispatch(signal.SIGTTOU)
    assert harness.master.generation.target == 1
    assert harness.processes.sent(signal.SIGTERM) == [harness.pids()[1]]
    harness.master.dispatch(signal.SIGTTOU)
    assert harness.master.generation.target == 1
    assert len(harness.processes.sent(signal.SIGTERM)) == 1
    harness.end(harness.pids()[1], exited(0))
    harness.master.turn()
    assert len(harness.processes.forked) == 2  # a scaled-down worker is not replaced
    assert sum(harness.restarts().values()) == 0


# -- heartbeats, crashes, recycling ---------------------------------------------------

def test_a_silent_worker_gets_sigabrt_then_sigkill_after_the_grace(harness: Harness) -> None:
    silent, alive = serving(harness)
    limit = harness.master.generation.config.timeouts.worker
    harness.processes.now += limit + 0.5
    harness.beat(alive)
    harness.master.turn()
    assert harness.processes.kills == [(silent, signal.SIGABRT)]
    harness.processes.now += ABORT_GRACE_SECONDS - 0.1
    harness.beat(alive)
    harness.master.turn()
    assert harness.processes.sent(signal.SIGKILL) == []
    harness.processes.now += 0.2
    harness.beat(alive)
    harness.master.turn()
    assert harness.processes.sent(signal.SIGKILL) == [silent]
    harness.end(silent, killed(signal.SIGKILL))
    harness.master.turn()
    assert harness.restarts()["heartbeat_timeout"] == 1
    assert len(harness.processes.forked) == 3  # replaced


def test_crashes_back_off_exponentially_up_to_the_cap(tmp_path: Path) -> None:
    harness = Harness(tmp_path, "workers: 1\n")
    try:
        delays = []
        for _ in range(10):
            harness.master.turn()
            (pid,) = harness.pids()
            harness.end(pid, exited(1))
            harness.master.turn()  # reaps, and respawns only if no delay is due
            delays.append(round(max(0.0, harness.master.pool.next_spawn_at
                                    - harness.processes.now), 3))
            harness.processes.now = max(harness.processes.now,
                                        harness.master.pool.next_spawn_at)
        assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
        assert harness.restarts()["crash"] == 10
        assert "respawning in 0.5s" in harness.log.read_text()
    finally:
        harness.close()


def test_a_worker_that_lived_long_resets_the_crash_streak(tmp_path: Path) -> None:
    harness = Harness(tmp_path, "workers: 1\n")
    try:
        harness.master.pool.crash_streak = 5
        harness.master.turn()
        harness.processes.now += HEALTHY_SECONDS + 1
        harness.end(harness.pids()[0], killed(signal.SIGSEGV))
        harness.master.turn()
        assert harness.master.pool.crash_streak == 0
        assert len(harness.processes.forked) == 2  # replaced at once
        assert "killed by signal SIGSEGV; replacing it" in harness.log.read_text()
    finally:
        harness.close()


def test_backoff_delays() -> None:
    assert [backoff_delay(n) for n in range(1, 5)] == [0.0, 0.5, 1.0, 2.0]
    assert backoff_delay(100) == BACKOFF_CAP


def test_max_requests_recycling_replaces_the_worker_at_once(tmp_path: Path) -> None:
    harness = Harness(tmp_path, "workers: 1\nmax_requests: 100\n")
    try:
        (pid,) = serving(harness)
        assert harness.master.pool.workers[pid].max_requests == 100  # no jitter configured
        slot = harness.master.pool.workers[pid].slot
        harness.master.scoreboard.beat(slot, 100, 0, 0, (0, 0, 0, 0, 0))
        harness.end(pid, exited(0))
        harness.master.turn()
        assert harness.restarts()["max_requests"] == 1
        assert len(harness.processes.forked) == 2
        assert harness.master.generation.restarts == {1: 1}
        assert f"worker {pid} (generation 1) exited with status 0; replacing it" in (
            harness.log.read_text())
    finally:
        harness.close()


# -- stopping -------------------------------------------------------------------------

def test_term_drains_then_kills_at_the_deadline_then_exits(harness: Harness) -> None:
    pids = serving(harness)
    harness.master.dispatch(signal.SIGTERM)
    assert state(harness) is State.STOPPING
    assert sorted(harness.processes.sent(signal.SIGTERM)) == pids
    graceful = harness.master.generation.config.timeouts.graceful
    harness.processes.now += graceful + KILL_MARGIN_SECONDS
    assert harness.master.turn()
    assert sorted(harness.processes.sent(signal.SIGKILL)) == pids
    for pid in pids:
        harness.end(pid, killed(signal.SIGKILL))
    assert not harness.master.turn()
    assert sum(harness.restarts().values()) == 0  # stopping is not restarting
    assert len(harness.processes.forked) == 2


def test_quit_asks_workers_to_exit_at_once(harness: Harness) -> None:
    pids = serving(harness)
    harness.master.dispatch(signal.SIGQUIT)
    assert state(harness) is State.QUITTING
    assert sorted(harness.processes.sent(signal.SIGQUIT)) == pids
    harness.master.dispatch(signal.SIGHUP)  # ignored while stopping
    harness.master.dispatch(signal.SIGTTIN)
    assert harness.master.generation.number == 1 and harness.master.generation.target == 2


# -- upgrade ----------------------------------------------------------------------------

def test_upgrade_forks_a_successor_once_and_keeps_serving_if_it_dies(
    harness: Harness,
) -> None:
    serving(harness)
    harness.master.dispatch(signal.SIGUSR2)
    successor = harness.processes.forked[-1]
    assert upgrade(harness) is Upgrade.UPGRADING
    assert harness.master.handoff.successor == successor
    harness.master.dispatch(signal.SIGUSR2)  # already under way: no second fork
    assert harness.processes.forked[-1] == successor
    harness.end(successor, exited(1))
    harness.master.turn()
    assert upgrade(harness) is Upgrade.NONE
    assert state(harness) is State.SERVING
    assert len(harness.processes.forked) == 3  # two workers and the successor, no more
    assert f"upgrade failed: new master {successor} exited with status 1" in (
        harness.log.read_text())


def test_upgrade_then_the_successors_term_stops_us_with_the_handoff_kept(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serving(harness)
    harness.master.dispatch(signal.SIGUSR2)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        harness.master.dispatch(signal.SIGTERM)
        with pytest.raises(BlockingIOError):
            notify.recv(4096)  # no STOPPING=1: systemd follows the successor now
    assert state(harness) is State.STOPPING
    assert upgrade(harness) is Upgrade.UPGRADING


def test_upgrade_is_refused_while_starting(harness: Harness) -> None:
    harness.master.dispatch(signal.SIGUSR2)
    assert harness.processes.forked == []
    assert upgrade(harness) is Upgrade.NONE


def test_a_new_master_takes_over_once_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UPGRADE_FROM_ENV, "4242")
    harness = Harness(tmp_path, "workers: 1\n")
    try:
        assert upgrade(harness) is Upgrade.TAKING_OVER
        harness.master.turn()
        assert harness.processes.kills == []
        harness.serve()
        harness.master.turn()
        assert harness.processes.kills == [(4242, signal.SIGTERM)]
        assert upgrade(harness) is Upgrade.NONE
        assert UPGRADE_FROM_ENV not in os.environ  # not handed on to workers or successors
    finally:
        harness.close()


# -- the tables ---------------------------------------------------------------------------

def test_every_restart_label_is_a_scoreboard_counter() -> None:
    labels = {r.label for r in RESTARTS.values()} - {None}
    assert labels == set(RESTART_REASONS)
    assert set(RESTARTS) == set(Cause)


@pytest.mark.parametrize(("facts", "cause"), [
    ({"stopping": True, "status": exited(1)}, Cause.STOPPED),
    ({"retiring": True, "retired_for": "reload"}, Cause.RELOADED),
    ({"retiring": True, "retired_for": "scale_down"}, Cause.SCALED_DOWN),
    ({"retiring": True, "aborted": True}, Cause.SILENT_RETIREE),
    ({"aborted": True, "status": killed(signal.SIGABRT)}, Cause.SILENT),
    ({"aborted": True}, Cause.SILENT_EXITED),
    ({"served": 10, "max_requests": 10}, Cause.MAX_REQUESTS),
    ({"served": 9, "max_requests": 10}, Cause.EXITED),
    ({"status": killed(signal.SIGKILL)}, Cause.CRASHED),
    ({"status": exited(3)}, Cause.CRASHED),
])
def test_restart_causes(facts: dict[str, object], cause: Cause) -> None:
    given: dict[str, object] = {"stopping": False, "retiring": False, "retired_for": "",
                                "aborted": False, "status": exited(0), "served": 0,
                                "max_requests": 0}
    given.update(facts)
    assert classify(**given) is cause  # type: ignore[arg-type]


def test_every_signal_handler_says_what_it_does_in_one_line() -> None:
    handlers = [m for name, m in inspect.getmembers(Master) if name.startswith("handle_")]
    assert len(handlers) == 7
    for handler in handlers:
        doc = inspect.getdoc(handler)
        assert doc and "\n" not in doc, handler.__name__
