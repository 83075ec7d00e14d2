"""The shipped logrotate file (systemd/forkserver.logrotate), run by the real logrotate.

The test takes the file's own text and replaces only the four install paths its header
names (logs, pidfile, program, configuration) with paths in a temporary directory, so
what is tested is what an operator installs. While clients send a bounded number of
requests, `logrotate -f` rotates the logs and its postrotate reopens them; every
request's line must then be in access.log or access.log.1, and requests sent after
the rotation must go to the new access.log.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support import running, wait_for

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "systemd" / "forkserver.logrotate"
LOGS, PIDFILE = "/var/log/forkserver", "/run/forkserver/forkserver.pid"
PROGRAM, CONFIG = "/opt/forkserver/bin/forkserver", "/etc/forkserver/site.yaml"
CLIENTS = 4
MAX_EACH = 20000  # a bound on each client, whatever happens
AFTER_EACH = 50  # requests each client still sends once logrotate has returned

pytestmark = pytest.mark.skipif(shutil.which("logrotate") is None,
                                reason="logrotate is not installed (apt-get install logrotate)")


def instantiate(logs: Path, pidfile: Path, config: Path) -> str:
    """The shipped file with its install paths pointed at the test's files."""
    text = SHIPPED.read_text()
    program = Path(sys.executable).parent / "forkserver"  # the script pip installs
    for shipped, here in ((LOGS, logs), (PIDFILE, pidfile), (PROGRAM, program),
                          (CONFIG, config)):
        assert shipped in text, f"{SHIPPED.name} no longer names {shipped}"
        text = text.replace(shipped, str(here))
    return text


class Client:
    """Requests on one keep-alive connection, each naming itself in the query string."""

    def __init__(self, port: int, name: str) -> None:
        self.port, self.name = port, name
        self.sent: list[str] = []
        self.failures: list[str] = []

    def get(self, connection: http.client.HTTPConnection, tag: str) -> None:
        connection.request("GET", f"/a.txt?{tag}")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            self.failures.append(f"{tag}: {response.status}")

    def run(self, count: int, done: threading.Event | None = None) -> None:
        """``count`` requests at most; with ``done``, only AFTER_EACH more once it is set."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        left = AFTER_EACH
        try:
            for number in range(count):
                if done is not None and done.is_set():
                    left -= 1
                    if left < 0:
                        break
                tag = f"{self.name}r{number}"
                try:
                    self.get(connection, tag)
                except (OSError, http.client.HTTPException):
                    # The server may close a keep-alive connection: a new one carries on.
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    self.get(connection, tag)
                self.sent.append(tag)
        finally:
            connection.close()


def writes_to(pid: int, path: Path) -> bool:
    """Whether ``pid`` has ``path`` open and nothing renamed from it (``path``.N)."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return str(path) in targets and not any(t.startswith(f"{path}.") for t in targets)


def logged_tags(*files: Path) -> list[str]:
    tags = []
    for path in files:
        if path.exists():
            for line in path.read_text().splitlines():
                if "/a.txt?" in line:
                    tags.append(line.split("/a.txt?", 1)[1].split(" ", 1)[0])
    return tags


def test_the_shipped_logrotate_file_loses_no_line(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    www = tmp_path / "www"
    www.mkdir()
    (www / "a.txt").write_text("alpha\n")
    pidfile = tmp_path / "run" / "forkserver.pid"
    pidfile.parent.mkdir()
    settings = {"docroot": str(www), "workers": 2, "pidfile": str(pidfile),
                "access_log": str(logs / "access.log"), "error_log": str(logs / "error.log")}
    with running(tmp_path, settings) as server:
        wait_for(pidfile.exists, what="the pidfile")
        conf = tmp_path / "logrotate.conf"
        conf.write_text(instantiate(logs, pidfile, server.config_path))
        os.chmod(conf, 0o644)  # logrotate ignores a config file others may write

        done = threading.Event()
        clients = [Client(server.port, f"c{number}") for number in range(CLIENTS)]
        threads = [threading.Thread(target=client.run, args=(MAX_EACH, done))
                   for client in clients]
        for thread in threads:
            thread.start()
        try:
            # Rotate while the clients are running, once some lines are logged.
            wait_for(lambda: len(logged_tags(logs / "access.log")) > 20,
                     what="the first access lines")
            rotated = subprocess.run(
                ["logrotate", "--verbose", "-f", "-s", str(tmp_path / "logrotate.state"),
                 str(conf)], capture_output=True, text=True, timeout=60,
            )
        finally:
            done.set()
            for thread in threads:
                thread.join(timeout=120)
        assert rotated.returncode == 0, rotated.stderr
        assert "error:" not in rotated.stderr, rotated.stderr  # how logrotate reports one
        assert (logs / "access.log.1").exists() and (logs / "error.log.1").exists()

        # Every worker has reopened: its access-log descriptor names the new file.
        wait_for(lambda: all(writes_to(pid, logs / "access.log") for pid in server.workers()),
                 what="every worker writing to the new access.log")
        last = Client(server.port, "after")
        last.run(20)
        sent = [tag for client in [*clients, last] for tag in client.sent]
        assert not [f for client in [*clients, last] for f in client.failures]
        files = (logs / "access.log.1", logs / "access.log")
        wait_for(lambda: len(logged_tags(*files)) >= len(sent), timeout=10,
                 what=f"{len(sent)} access lines in access.log.1 + access.log")
        assert sorted(logged_tags(*files)) == sorted(sent)  # each line exactly once
        # The old file has the lines from before the rotation; the requests made after
        # the workers reopened are in the new one.
        assert logged_tags(logs / "access.log.1")
        assert set(last.sent) <= set(logged_tags(logs / "access.log"))
        assert "log files reopened" in (logs / "error.log").read_text()


def test_a_failing_reopen_is_reported_not_hidden(tmp_path: Path) -> None:
    """A pidfile no master holds (a crashed server): logrotate fails, saying why."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "access.log").write_text("a line\n")
    pidfile = tmp_path / "forkserver.pid"
    pidfile.write_text("999999\n")  # stale: nobody holds its lock
    config = tmp_path / "site.yaml"
    config.write_text(f"pidfile: {pidfile}\n")
    conf = tmp_path / "logrotate.conf"
    conf.write_text(instantiate(logs, pidfile, config))
    os.chmod(conf, 0o644)
    rotated = subprocess.run(
        ["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
        capture_output=True, text=True, timeout=60,
    )
    assert rotated.returncode != 0
    assert "no forkserver holds" in rotated.stderr and "stale pid 999999" in rotated.stderr
    # Without a pidfile there is no master, so there is nothing to reopen: no error.
    pidfile.unlink()
    (logs / "access.log").write_text("another line\n")
    rotated = subprocess.run(
        ["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
        capture_output=True, text=True, timeout=60,
    )
    assert rotated.returncode == 0, rotated.stderr
