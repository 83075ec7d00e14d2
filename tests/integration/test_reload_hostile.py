"""No configuration file can take the server down: not on HUP, not at start-up.

The real master is HUPed with each hostile file of the unit table in turn: it must
log why, keep its pid and keep answering, and a good file (with merge keys) must
still reload afterwards. --check and a plain start with each file exit 2 with
FILE:LINE, never "internal error" (exit 1).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkserver.config import load_config
from forkserver.listeners import bind_listener
from forkserver.master import Master, StartInfo
from forkserver.master import reload as reload_module
from tests.support import Server, get, port_bindable, running, status_of, wait_for
from tests.unit.test_config_hostile_yaml import HOSTILE

EXIT_USAGE = 2


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    www.mkdir()
    (www / "a.txt").write_bytes(b"alpha\n")
    return www


@pytest.fixture
def server(tmp_path: Path, docroot: Path) -> Iterator[Server]:
    with running(tmp_path, {"docroot": str(docroot), "workers": 2}) as started:
        yield started


def first_where(problems: list[str], path: Path) -> str:
    """``/abs/site.yaml:7`` (and ``:COLUMN`` when given) of the first expected problem."""
    match = re.match(r"FILE(:\d+(?::\d+)?)", problems[0])
    assert match is not None
    return f"{path}{match.group(1)}"


def test_no_hostile_file_ends_the_master_and_a_good_one_still_reloads(server: Server) -> None:
    good = server.config_path.read_bytes()
    workers = server.workers()
    for number, (name, content, problems) in enumerate(HOSTILE, start=1):
        server.config_path.write_bytes(content)
        server.signal(signal.SIGHUP)

        def refused(count: int = number) -> bool:
            return server.error_log.count("reload failed") >= count

        wait_for(refused, timeout=20, what=f"reload of {name} refused")
        assert server.process is not None and server.process.poll() is None, name
        assert status_of(get(server.port, "/a.txt")) == 200, name
        assert first_where(problems, server.config_path) in server.error_log, name
    assert "internal error" not in server.error_log + server.stderr
    assert "unexpected" not in server.error_log  # every file was refused for its reason
    assert server.workers() == workers  # the first generation served throughout
    # A good file written with merge keys (and an x- key holding the anchor) reloads.
    server.config_path.write_bytes(
        good + b"x-timeouts: &t {keepalive: 5}\ntimeouts: {<<: *t, send: 9}\n"
    )
    server.signal(signal.SIGHUP)
    wait_for(lambda: "generation 2 serving" in server.error_log, timeout=20,
             what="the good file reloaded")
    assert status_of(get(server.port, "/a.txt")) == 200


@pytest.mark.parametrize("check", [True, False], ids=["check", "start-up"])
@pytest.mark.parametrize(("content", "problems"), [c[1:] for c in HOSTILE],
                         ids=[c[0] for c in HOSTILE])
def test_each_hostile_file_exits_2_with_its_line(
    tmp_path: Path, docroot: Path, content: bytes, problems: list[str], check: bool
) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(content)
    # Start-up with a file that happened to be valid would serve: port 0 and a deadline.
    args = ["--check"] if check else ["--port", "0", "--docroot", str(docroot)]
    done = subprocess.run(
        [sys.executable, "-m", "forkserver", "-c", str(path), *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "internal error" not in done.stderr
    assert f"forkserver: {first_where(problems, path)}: " in done.stderr


# -- the class: whatever fails while preparing a generation, the old one goes on ------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize("step", ["load_config", "environment_problems", "bind_entries",
                                  "make_generation"])
def test_any_exception_while_reloading_is_logged_and_changes_nothing(
    tmp_path: Path, docroot: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    # In-process: a Master that never forks, so each step of reload() can be made to
    # fail with an exception nobody planned for (a bug of ours, a library's surprise).
    log = tmp_path / "error.log"
    path = tmp_path / "site.yaml"
    path.write_text(f"docroot: {docroot}\nerror_log: {log}\nworkers: 1\nport: 0\n")
    listener = bind_listener("127.0.0.1", 0, 16)
    master = Master(load_config(str(path)), [listener], lambda _spec: 0,
                    StartInfo([], str(tmp_path)))
    first = master.generation
    new_port = free_port()  # a changed port makes reload() bind before building
    path.write_text(f"docroot: {docroot}\nerror_log: {log}\nworkers: 2\nport: {new_port}\n")
    if step == "make_generation":
        monkeypatch.setattr(master.generations, "make", boom)
    else:
        monkeypatch.setattr(reload_module, step, boom)
    try:
        master.reload(str(path))
        assert master.generation is first and master.generations.all == [first]
        assert "reload failed: unexpected RuntimeError: boom; still serving generation 1" in (
            log.read_text())
        assert port_bindable(new_port)  # a listener bound for the failed reload is closed
        assert listener.fileno() != -1  # the old generation's is not
    finally:
        listener.close()
