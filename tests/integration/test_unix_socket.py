"""A unix domain socket listener: served to curl --unix-socket, mode and owner applied,
the file removed on stop, kept across reload and upgrade, a live server refused and a
stale file replaced.

curl is a hard requirement (``.ci/run`` installs it). The owner test needs root and
the account ``.ci/run`` creates; it skips only when not root.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, alive, running, wait_for

BODY = b"served over a unix socket\n"
TEST_USER, TEST_GROUP = "forkserver-test", "forkserver-test-extra"  # created by .ci/run


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a socket path must fit in 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="fs-unix-", dir="/tmp"))
    yield directory
    for entry in directory.iterdir():
        entry.unlink()
    directory.rmdir()


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(BODY)
    return root


def curl(path: Path, url_path: str = "/") -> tuple[int, bytes]:
    """(status, body) of a GET over the unix socket at ``path``; status 0 if curl failed."""
    done = subprocess.run(
        ["curl", "-s", "--max-time", "10", "--unix-socket", str(path),
         "-w", "\n%{http_code}", f"http://localhost{url_path}"],
        capture_output=True, timeout=30,
    )
    body, _, code = done.stdout.rpartition(b"\n")
    return int(code or b"0"), body


def identity(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def unix_settings(docroot: Path, path: Path, **more: object) -> dict[str, object]:
    return {"docroot": str(docroot), "workers": 2, "host": f"unix:{path}", **more}


def forkserver(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forkserver", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=30)


def test_served_to_curl_and_logged_as_unix(tmp_path: Path, docroot: Path, short_dir: Path) -> None:
    path = short_dir / "http.sock"
    with running(tmp_path, unix_settings(docroot, path)) as server:
        assert f"listening on unix:{path}" in server.error_log
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert curl(path, "/?from-curl") == (200, BODY)
        line = wait_for(lambda: [x for x in server.access_log.splitlines() if "from-curl" in x],
                        what="the access line")[0]
        assert line.startswith("unix: - - [")


def test_mode_is_applied_and_never_wider_on_the_way(
    tmp_path: Path, docroot: Path, short_dir: Path
) -> None:
    path = short_dir / "http.sock"
    with running(tmp_path, unix_settings(docroot, path, socket_mode="0600")) as server:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert curl(path) == (200, BODY)
        # A reload that keeps the path applies a new mode to the same file.
        before = identity(path)
        server.write_config(socket_mode="0660")
        server.signal(signal.SIGHUP)
        wait_for(lambda: stat.S_IMODE(os.stat(path).st_mode) == 0o660, what="mode 0660")
        assert identity(path) == before


def test_owner_is_applied(tmp_path: Path, docroot: Path, short_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    short_dir.chmod(0o755)
    path = short_dir / "http.sock"
    settings = unix_settings(docroot, path, socket_mode="0660",
                             socket_owner=f"{TEST_USER}:{TEST_GROUP}")
    with running(tmp_path, settings):
        status = os.stat(path)
        assert status.st_uid == pwd.getpwnam(TEST_USER).pw_uid
        assert status.st_gid == grp.getgrnam(TEST_GROUP).gr_gid
        assert stat.S_IMODE(status.st_mode) == 0o660
        # The owner can connect; a user outside owner and group cannot (mode 0660).
        as_owner = subprocess.run(
            ["setpriv", f"--reuid={TEST_USER}", f"--regid={TEST_USER}", "--init-groups",
             "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
             str(path), "http://localhost/"], capture_output=True, text=True, timeout=30)
        assert as_owner.stdout == "200"
        as_nobody = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
             str(path), "http://localhost/"], capture_output=True, text=True, timeout=30)
        assert as_nobody.stdout == "000"  # connect(2) refused: Permission denied


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT, signal.SIGINT])
def test_removed_on_graceful_and_fast_stop(
    tmp_path: Path, docroot: Path, short_dir: Path, signum: int
) -> None:
    path = short_dir / "http.sock"
    server = Server(tmp_path, unix_settings(docroot, path), [])
    try:
        server.start()
        assert curl(path) == (200, BODY)
        server.signal(signum)
        assert server.process is not None
        assert server.process.wait(timeout=40) == 0
        assert not path.exists()
        assert f"removed socket file {path}" in server.error_log
    finally:
        server.stop()


def test_kept_across_reload(tmp_path: Path, docroot: Path, short_dir: Path) -> None:
    path = short_dir / "http.sock"
    with running(tmp_path, unix_settings(docroot, path)) as server:
        before = identity(path)
        old_workers = server.workers()
        server.signal(signal.SIGHUP)
        wait_for(lambda: "retiring 2 old workers" in server.error_log, timeout=20,
                 what="the new generation")
        wait_for(lambda: not any(alive(p) for p in old_workers), timeout=40,
                 what="the old workers gone")
        assert identity(path) == before
        assert curl(path) == (200, BODY)
        assert "removed socket file" not in server.error_log


def test_a_reload_to_another_path_removes_the_old_file(
    tmp_path: Path, docroot: Path, short_dir: Path
) -> None:
    first, second = short_dir / "a.sock", short_dir / "b.sock"
    with running(tmp_path, unix_settings(docroot, first)) as server:
        server.write_config(host=f"unix:{second}")
        server.signal(signal.SIGHUP)
        wait_for(lambda: not first.exists(), timeout=20, what="the old socket file removed")
        assert curl(second) == (200, BODY)
        assert f"reload: now listening on unix:{second}" in server.error_log
        # And a reload back to TCP removes the second one.
        server.write_config(host="127.0.0.1", port=0)
        server.signal(signal.SIGHUP)
        wait_for(lambda: not second.exists(), timeout=20, what="the second file removed")


def test_kept_across_upgrade_then_removed_by_the_new_master(
    tmp_path: Path, docroot: Path, short_dir: Path
) -> None:
    path = short_dir / "http.sock"
    pidfile = tmp_path / "forkserver.pid"
    server = Server(tmp_path, unix_settings(docroot, path, pidfile=str(pidfile)), [])
    new_master = 0
    try:
        server.start()
        old_master = server.pid
        before = identity(path)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(old_master),
                 what="the pidfile")
        server.signal(signal.SIGUSR2)
        wait_for(lambda: pidfile.read_text().strip() not in ("", str(old_master)),
                 timeout=20, what="the pidfile naming the new master")
        new_master = int(pidfile.read_text())
        assert server.process is not None
        assert server.process.wait(timeout=40) == 0  # the old master is gone...
        assert identity(path) == before  # ...and left the file to its successor
        assert curl(path) == (200, BODY)
        assert forkserver(server.config_path, "-s", "stop").returncode == 0
        wait_for(lambda: not alive(new_master), timeout=40, what="the new master stopped")
        assert not path.exists()
    finally:
        server.stop()
        if new_master and alive(new_master):
            os.kill(new_master, signal.SIGKILL)


def test_a_live_server_at_the_path_is_refused(
    tmp_path: Path, docroot: Path, short_dir: Path
) -> None:
    path = short_dir / "http.sock"
    with running(tmp_path, unix_settings(docroot, path)):
        before = identity(path)
        second = tmp_path / "second"
        second.mkdir()
        (second / "site.yaml").write_text(
            f"host: unix:{path}\ndocroot: {docroot}\nerror_log: {second}/error.log\n")
        refused = forkserver(second / "site.yaml")
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f"forkserver: cannot listen on unix:{path}: another server is listening there")
        assert identity(path) == before
        assert curl(path) == (200, BODY)


def test_a_stale_socket_file_is_replaced(tmp_path: Path, docroot: Path, short_dir: Path) -> None:
    path = short_dir / "http.sock"
    # What a server killed with SIGKILL leaves behind: a socket file nobody listens on.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    stale = identity(path)
    os.link(path, short_dir / "stale.sock")  # keeps the inode, so it cannot be reused
    with running(tmp_path, unix_settings(docroot, path)):
        assert identity(path) != stale
        assert curl(path) == (200, BODY)


def test_a_file_that_is_not_a_socket_is_left_alone(
    tmp_path: Path, docroot: Path, short_dir: Path
) -> None:
    path = short_dir / "http.sock"
    path.write_text("somebody's data\n")
    config = tmp_path / "site.yaml"
    config.write_text(f"host: unix:{path}\ndocroot: {docroot}\n")
    refused = forkserver(config)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"forkserver: host: 'unix:{path}' exists and is not a socket; "
        "forkserver replaces only a stale socket")
    assert path.read_text() == "somebody's data\n"


def test_after_sigkill_the_workers_leave_and_a_restart_replaces_the_file(
    tmp_path: Path, docroot: Path, short_dir: Path
) -> None:
    path = short_dir / "http.sock"
    server = Server(tmp_path, unix_settings(docroot, path), [])
    try:
        server.start()
        workers = server.workers()
        server.signal(signal.SIGKILL)
        wait_for(lambda: not any(alive(p) for p in workers), timeout=20, what="workers gone")
        assert path.exists()  # nobody was left to remove it
        with contextlib.suppress(FileNotFoundError):
            (tmp_path / "error.log").unlink()
        restarted = Server(tmp_path, unix_settings(docroot, path), [])
        try:
            restarted.start()
            assert curl(path) == (200, BODY)
        finally:
            restarted.stop()
    finally:
        server.stop()
