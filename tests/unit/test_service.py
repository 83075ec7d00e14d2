"""service.py in one process: the pidfile's locking rules, sd_notify, the watchdog
interval, and the launcher's side of the daemon readiness pipe.

A "live holder" is a forked child that holds the lock (flock locks conflict between
open file descriptions, so a child is a faithful stand-in for another master).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkserver.errors import StartupError
from forkserver.service import (
    DaemonLink,
    Pidfile,
    process_alive,
    read_pid,
    sd_notify,
    watchdog_interval,
)


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A child process that acquired tmp_path/x.pid and keeps it until killed."""
    path = tmp_path / "x.pid"
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_read)
            Pidfile(str(path)).acquire()
            os.write(ready_write, b"1")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"1"
    os.close(ready_read)
    try:
        yield pid, path
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_acquire_writes_our_pid_and_release_removes_it(tmp_path: Path) -> None:
    pidfile = Pidfile(str(tmp_path / "a.pid"))
    pidfile.acquire()
    assert read_pid(pidfile.path) == os.getpid()
    assert (tmp_path / "a.pid").stat().st_mode & 0o777 == 0o644 & ~_umask()
    assert not list(tmp_path.glob("*.tmp")), "the temporary file was renamed"
    pidfile.release()
    assert not (tmp_path / "a.pid").exists()


def test_a_live_holder_is_refused_with_its_pid(holder: tuple[int, Path]) -> None:
    pid, path = holder
    assert Pidfile(str(path)).holder() == pid
    with pytest.raises(StartupError, match=rf"held by a running forkserver \(pid {pid}\)"):
        Pidfile(str(path)).acquire()
    assert read_pid(str(path)) == pid, "a refused start leaves the file alone"


def test_a_killed_holders_file_is_stale_and_taken_over(holder: tuple[int, Path]) -> None:
    pid, path = holder
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert path.exists() and read_pid(str(path)) == pid
    assert Pidfile(str(path)).holder() is None
    taker = Pidfile(str(path))
    taker.acquire()
    assert read_pid(str(path)) == os.getpid()
    taker.release()


def test_an_unlocked_file_naming_a_live_process_is_stale(tmp_path: Path) -> None:
    # pid reuse: the number in an abandoned file may belong to anything by now.
    path = tmp_path / "reused.pid"
    path.write_text("1\n")
    assert Pidfile(str(path)).holder() is None
    taker = Pidfile(str(path))
    taker.acquire()
    assert read_pid(str(path)) == os.getpid()
    taker.release()


def test_rewrite_keeps_the_lock_and_release_spares_a_successors_file(tmp_path: Path) -> None:
    path = str(tmp_path / "up.pid")
    old = Pidfile(path)
    old.acquire()
    old.write(424242)  # as after daemonizing: same owner, new content
    assert read_pid(path) == 424242
    with pytest.raises(StartupError):
        Pidfile(path).acquire()
    successor = Pidfile(path)
    successor.write(434343)  # an upgraded master writes without acquiring
    old.release()
    assert read_pid(path) == 434343, "the old master must not remove its successor's file"
    successor.release()
    assert not os.path.exists(path)


def test_unwritable_directory_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot open pidfile"):
        Pidfile(str(tmp_path / "missing" / "x.pid")).acquire()


def test_process_alive_treats_zombies_as_dead() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + 5
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not process_alive(pid), "an unreaped zombie is not alive"
    os.waitpid(pid, 0)
    assert not process_alive(dead_pid())
    assert process_alive(os.getpid())


def test_sd_notify_sends_one_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert sd_notify("READY=1\nSTATUS=x")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=x"
    name = f"forkserver-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("STOPPING=1")
        assert receiver.recv(4096) == b"STOPPING=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd_notify("READY=1")


@pytest.mark.parametrize(
    ("usec", "owner", "expected"),
    [("4000000", None, 2.0), ("4000000", "self", 2.0), ("4000000", "other", 0.0),
     ("0", None, 0.0), ("x", None, 0.0), (None, None, 0.0)],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, owner: str | None, expected: float
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", owner)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(name, value)
    assert watchdog_interval(os.getpid()) == expected


def launcher_pair() -> tuple[DaemonLink, DaemonLink]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    return DaemonLink(read_end, True), DaemonLink(write_end, False)


def test_launcher_sees_ready() -> None:
    launcher, daemon = launcher_pair()
    daemon.started()
    daemon.ready()
    assert launcher.wait(timeout=2) == (0, str(os.getpid()))


def test_launcher_sees_an_error_message() -> None:
    launcher, daemon = launcher_pair()
    daemon.started()
    daemon.failed("cannot write pidfile /x: Permission denied\nsecond line")
    status, reason = launcher.wait(timeout=2)
    assert status == 1
    assert reason == "cannot write pidfile /x: Permission denied second line"


def test_launcher_sees_the_daemon_vanish() -> None:
    launcher, daemon = launcher_pair()
    daemon.close()
    assert launcher.wait(timeout=2) == (1, "the daemon exited before it was ready")


def test_launcher_sees_a_dead_daemon_whose_pipe_stays_open() -> None:
    # The daemon's workers may still hold the pipe; the launcher watches the pid too.
    launcher, daemon = launcher_pair()
    os.write(daemon.fd, f"pid {dead_pid()}\n".encode())
    started = time.monotonic()
    status, reason = launcher.wait(timeout=5)
    assert status == 1 and "exited before it was ready" in reason
    assert time.monotonic() - started < 2
    daemon.close()


def test_launcher_gives_up_at_its_deadline() -> None:
    launcher, daemon = launcher_pair()
    daemon.started()
    status, reason = launcher.wait(timeout=0.3)
    assert status == 1 and "is not serving after 0.3s" in reason
    daemon.close()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_launcher_reports_the_daemons_reason_and_its_last_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from forkserver.cli import launcher_exit
    from forkserver.config import load_config

    log = tmp_path / "error.log"
    log.write_text("[t] [error] [1] an old error, from before this start\n")
    offset = log.stat().st_size
    config = load_config(None, {"docroot": str(tmp_path)})
    config = dataclasses.replace(config, error_log=str(log))
    launcher, daemon = launcher_pair()
    with log.open("a") as handle:
        handle.write("[t] [info] [2] master started\n[t] [error] [2] worker cannot start: x\n")
    daemon.failed("the daemon exited before it was ready")
    assert launcher_exit(launcher, config, offset) == 1
    assert capsys.readouterr().err == (
        "forkserver: the daemon exited before it was ready: last error: worker cannot start: x\n"
    )
    launcher, daemon = launcher_pair()
    daemon.failed("gone")
    assert launcher_exit(launcher, config, log.stat().st_size) == 1
    assert capsys.readouterr().err == f"forkserver: gone; see {log}\n"


def test_user_is_ignored_with_a_note_unless_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from forkserver.cli import identity_note
    from forkserver.config import load_config

    config = load_config(None, {"docroot": "."})
    config = dataclasses.replace(config, user="www-data")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert identity_note(config) == (
        "user/group www-data ignored: workers change user only when started as root")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert identity_note(config) is None
