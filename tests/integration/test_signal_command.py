"""`forkserver -c FILE -s NAME` against a real master: what the operator's command says.

stop, quit and reopen need only the pidfile, so a configuration file that has become
invalid since the start must not keep them from working. reload and upgrade wait for
the master's verdict (PIDFILE.state) and exit non-zero with the reason when it refused,
the way `systemctl reload` does for a Type=notify unit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, alive, get, running, status_of, wait_for


def forkserver(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forkserver", "-c", str(config), *args],
        capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    www.mkdir()
    (www / "a.txt").write_text("alpha\n")
    return www


@pytest.fixture
def server(tmp_path: Path, docroot: Path) -> Iterator[Server]:
    settings = {"docroot": str(docroot), "workers": 2, "pidfile": str(tmp_path / "fs.pid"),
                "timeouts": {"graceful": 5}}
    with running(tmp_path, settings) as started:
        wait_for(lambda: (tmp_path / "fs.pid").exists(), what="the pidfile")
        yield started


def test_stop_works_although_the_file_has_become_invalid(server: Server) -> None:
    pidfile = Path(server.settings["pidfile"])
    text = server.config_path.read_text()
    server.config_path.write_text(text + "port: [unclosed\n")  # a YAML syntax error
    result = forkserver(server.config_path, "-s", "stop")
    assert result.returncode == 0, result.stderr
    assert "is invalid" in result.stderr and "--check" in result.stderr
    assert f"sending stop to the master named in {pidfile}" in result.stderr
    assert server.process is not None and server.process.wait(timeout=15) == 0
    assert not pidfile.exists()
    assert not Path(f"{pidfile}.state").exists()  # removed by the clean stop


def test_reopen_works_although_a_value_is_invalid(server: Server) -> None:
    server.write_config(port=-5)  # parses, but does not validate
    result = forkserver(server.config_path, "-s", "reopen")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr
    wait_for(lambda: "log files reopened" in server.error_log, what="the reopen")


def test_a_broken_file_without_a_readable_pidfile_says_how_to_fix_it(
    server: Server, tmp_path: Path
) -> None:
    broken = tmp_path / "other.yaml"
    broken.write_text("port: -5\n")
    result = forkserver(broken, "-s", "stop")
    assert result.returncode == 1
    assert f"set pidfile: in {broken}" in result.stderr and "--pidfile" in result.stderr
    # --pidfile is enough whatever the file says.
    result = forkserver(broken, "-s", "reopen", "--pidfile", server.settings["pidfile"])
    assert result.returncode == 0, result.stderr
    wait_for(lambda: "log files reopened" in server.error_log, what="the reopen")


def test_no_pidfile_configured_says_how_to_fix_it(tmp_path: Path) -> None:
    config = tmp_path / "plain.yaml"
    config.write_text("port: 8080\n")
    result = forkserver(config, "-s", "reload")
    assert result.returncode == 1
    assert f"set pidfile: in {config}" in result.stderr and "--pidfile" in result.stderr


def test_reload_of_an_invalid_file_is_refused_with_the_reason(server: Server) -> None:
    server.write_config(port=-5)
    result = forkserver(server.config_path, "-s", "reload")
    assert result.returncode == 2
    assert "port: -5 is out of range" in result.stderr
    assert "nothing sent" in result.stderr
    assert "HUP received" not in server.error_log
    assert status_of(get(server.port, "/a.txt")) == 200


def test_reload_to_a_port_in_use_fails_with_the_reason(server: Server) -> None:
    workers = server.workers()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server.write_config(port=taken.getsockname()[1])
        result = forkserver(server.config_path, "-s", "reload")
    assert result.returncode == 1, result.stderr
    assert "reload failed" in result.stderr
    assert "Address already in use" in result.stderr
    assert "still serving generation 1" in result.stderr
    assert server.workers() == workers
    assert status_of(get(server.port, "/a.txt")) == 200


def test_a_good_reload_returns_once_the_new_generation_serves(server: Server) -> None:
    server.write_config(workers=3)
    result = forkserver(server.config_path, "-s", "reload")
    assert result.returncode == 0, result.stderr
    assert "generation 2 serving with 3 workers" in result.stdout
    # No waiting here: the command returned after the verdict, not after the signal.
    assert "reload: generation 2 serving" in server.error_log
    state = Path(f"{server.settings['pidfile']}.state").read_text()
    assert '"action": "reload"' in state and '"ok": true' in state


def test_upgrade_returns_once_the_new_master_serves(tmp_path: Path, docroot: Path) -> None:
    pidfile = tmp_path / "fs.pid"
    settings = {"docroot": str(docroot), "workers": 2, "pidfile": str(pidfile),
                "timeouts": {"graceful": 5}}
    server = Server(tmp_path, settings, [])
    new_master = 0
    try:
        server.start()
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(server.pid),
                 what="the pidfile")
        result = forkserver(server.config_path, "-s", "upgrade")
        assert result.returncode == 0, result.stderr
        new_master = int(pidfile.read_text())  # already rewritten when -s returns
        assert new_master != server.pid and alive(new_master)
        assert f"new master {new_master} serving" in result.stdout
        assert server.process is not None and server.process.wait(timeout=30) == 0
        assert status_of(get(server.port, "/a.txt")) == 200
        stop = forkserver(server.config_path, "-s", "stop")
        assert stop.returncode == 0, stop.stderr
        wait_for(lambda: not alive(new_master), timeout=15, what="the new master stopped")
        assert not pidfile.exists() and not Path(f"{pidfile}.state").exists()
    finally:
        server.stop()
        if new_master and alive(new_master):
            os.kill(new_master, signal.SIGKILL)
