"""Helpers for tests that run the real program: start it, talk to it, read /proc.

Every wait is a poll with a deadline; every process started here is stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

LISTENING = re.compile(r"listening on (?:https?://(\[[^\]]+\]|[^:\s]+):(\d+)|unix:/\S+)")


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) child pids of ``pid``, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (utime + stime of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    """How many descriptors ``pid`` holds (entries of /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` was sent to ``pid`` and not yet delivered (or discarded)."""
    bit = 1 << (signum - 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
            return True
    return False


def send_and_deliver(pid: int, signum: int) -> None:
    """Signal ``pid`` and wait until the kernel has delivered it, so the next signal of
    the same number is not merged with this one while pending."""
    os.kill(pid, signum)
    wait_for(lambda: not signal_pending(pid, signum), what=f"signal {signum} delivered")


def holds_open(pid: int, path: Path) -> bool:
    """Whether ``pid`` has ``path`` itself open (a renamed file shows its new name, a
    deleted one its name with " (deleted)", so neither counts)."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == str(path):
                return True
    return False


def send_queue(port: int, peer_port: int) -> int | None:
    """Bytes queued to send on the 127.0.0.1 connection from ``port`` to ``peer_port``
    (tx_queue of /proc/net/tcp), or None if there is no such connection."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            local, remote = parts[1].rsplit(":", 1)[1], parts[2].rsplit(":", 1)[1]
            if int(local, 16) == port and int(remote, 16) == peer_port:
                return int(parts[4].split(":")[0], 16)
    return None


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:"):
                    inodes.add(target)
    return inodes


def listening_inode(port: int) -> str | None:
    """The socket inode listening on 127.0.0.1:port (from /proc/net/tcp)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    return f"socket:[{parts[9]}]"
    return None


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Server:
    """A running forkserver master started from a YAML config written for the test."""

    def __init__(
        self, directory: Path, settings: dict[str, Any], args: list[str],
        command_prefix: list[str] | None = None,
    ) -> None:
        self.directory = directory
        # Run before the server, and exec'ing it (so the pid is the master's): e.g.
        # ["prlimit", "--nofile=48", "--"] to start it with a small descriptor table.
        self.command_prefix = command_prefix or []
        self.config_path = directory / "site.yaml"
        self.stderr_path = directory / "stderr.log"
        self.settings = {
            "host": "127.0.0.1",
            "port": 0,
            "workers": 2,
            "error_log": str(directory / "error.log"),
            "access_log": str(directory / "access.log"),
            "log_level": "debug",
            **settings,
        }
        self.write_config()
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def write_config(self, **changes: Any) -> None:
        self.settings.update(changes)
        self.config_path.write_text(yaml.safe_dump(self.settings))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def error_log(self) -> str:
        path = Path(self.settings["error_log"])
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def access_log(self) -> str:
        path = Path(self.settings["access_log"])
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def start(self, env: dict[str, str] | None = None) -> Server:
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [*self.command_prefix, sys.executable, "-m", "forkserver",
                 "-c", str(self.config_path), *self.args],
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                env={**os.environ, **(env or {})},
            )
        match = wait_for(self.find_port, what="the 'listening on' line")
        self.port = int(match)
        self.wait_serving()
        return self

    def find_port(self) -> str | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"forkserver exited {self.process.returncode}: {self.stderr}")
        match = LISTENING.search(self.error_log)
        if match is None:
            return None
        return match.group(2) or "0"  # a unix socket has no port

    def wait_serving(self, workers: int | None = None) -> None:
        want = workers or self.settings["workers"]
        wait_for(lambda: "workers serving" in self.error_log, what="workers serving")
        wait_for(lambda: len(self.workers()) == want, what=f"{want} workers")

    def workers(self) -> list[int]:
        return children_of(self.pid)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        """Stop the master and any worker it left behind, by pid."""
        if self.process is None:
            return
        workers = self.workers()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def request(
    port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1"
) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout), return all of it."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a reset counts as a close (the
    client gets nothing more either way). A timeout is the caller's to handle."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def get(port: int, path: str = "/", headers: str = "") -> bytes:
    return request(
        port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()
    )


@contextlib.contextmanager
def running(directory: Path, settings: dict[str, Any], args: list[str] | None = None,
            env: dict[str, str] | None = None,
            command_prefix: list[str] | None = None) -> Iterator[Server]:
    server = Server(directory, settings, args or [], command_prefix)
    try:
        server.start(env)
        yield server
    finally:
        server.stop()


def flushed_access_log(server: Server) -> str:
    """Every access line the workers have so far, without waiting out the flush interval.

    USR1 makes each worker flush its buffer and then reopen the log. The log is moved
    aside first, so a worker holding the path again has flushed into the old file.
    """
    access = Path(server.settings["access_log"])
    aside = access.with_name(access.name + ".flushed")
    access.rename(aside)
    workers = server.workers()
    server.signal(signal.SIGUSR1)
    wait_for(lambda: all(holds_open(pid, access) for pid in workers), timeout=10,
             what="every worker flushing and reopening its access log")
    return aside.read_text(errors="replace") + server.access_log
