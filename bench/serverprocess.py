"""A server under test as a process: launch, readiness, the docroot check, stop.

Owns what is the same for every server: the launch in its own session on a loopback
port, the readiness poll, the byte-exact check of the docroot, scanning its logs for
problem lines, and stopping it by its pid (then any process of its group left
behind). Which servers there are and how each is configured is ``bench/servers.py``.
Measures nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.docroot import ServedFile
from bench.prerequisites import Programs
from bench.processes import command_line, process_is_zombie_or_gone, process_tree

LOOPBACK = "127.0.0.1"
STARTUP_DEADLINE_SECONDS = 20.0
STARTUP_POLL_SECONDS = 0.05
PROBE_TIMEOUT_SECONDS = 1.0
# The 10 MiB file through http.server can take a while; still never wait forever.
FETCH_TIMEOUT_SECONDS = 30.0
FETCH_BLOCK_BYTES = 256 * 1024
# A graceful stop with no client connected should take well under this.
STOP_GRACE_SECONDS = 10.0
KILL_WAIT_SECONDS = 5.0
# Workers must notice their master is gone (the forkserver spec says within 2 s).
ORPHAN_WAIT_SECONDS = 3.0
LOG_PROBLEM_LINES_KEPT = 5

class ServerStartError(RuntimeError):
    """A server did not come up; the message says why, with its log's last lines."""

@dataclass(frozen=True)
class StartContext:
    """What every server starter gets: where to put files, what to serve, how wide."""

    workdir: Path  # a private directory for this server's config, logs and temp files
    docroot: Path
    workers: int
    programs: Programs
    repo_root: Path
    probe_path: str  # a path that exists in the docroot, fetched to detect readiness

@dataclass(frozen=True)
class StopOutcome:
    exit_status: int | None  # Popen returncode: negative = killed by that signal
    killed: bool  # needed SIGKILL after STOP_GRACE_SECONDS
    leftovers: tuple[str, ...]  # processes of its group still alive after the master exited

    def describe(self) -> str:
        parts = [f"exit status {self.exit_status}"]
        if self.killed:
            parts.append(f"did not stop within {STOP_GRACE_SECONDS:.0f} s of SIGTERM: killed")
        if self.leftovers:
            parts.append(f"{len(self.leftovers)} process(es) outlived the master: "
                         + "; ".join(self.leftovers))
        return ", ".join(parts)

@dataclass
class RunningServer:
    name: str
    note: str  # a footnote for the table: what is unusual about this server
    process: subprocess.Popen[bytes]
    port: int
    log_paths: tuple[Path, ...]
    problem_pattern: re.Pattern[str]  # a log line matching this is worth reporting
    expected_processes: int  # master + workers once fully started
    stop_signal: signal.Signals = signal.SIGTERM
    initial_tree: tuple[int, ...] = field(default_factory=tuple)

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def tree(self) -> list[int]:
        return process_tree(self.pid) if self.is_running() else []

    def log_problems(self) -> list[str]:
        """Problem lines from its logs: a count and the first few, prefixed by the file."""
        problems: list[str] = []
        for path in self.log_paths:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            matching = [line for line in lines if self.problem_pattern.search(line)]
            if matching:
                problems.append(f"{path.name}: {len(matching)} problem line(s)")
                problems.extend(f"  {line[:300]}" for line in matching[:LOG_PROBLEM_LINES_KEPT])
        return problems

    def stop(self) -> StopOutcome:
        """Stop it by its pid, then kill any process of its session left behind."""
        killed = False
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.stop_signal)
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                killed = True
                self.process.kill()
                self.process.wait(timeout=KILL_WAIT_SECONDS)
        leftovers = self.wait_for_group_to_exit()
        return StopOutcome(self.process.returncode, killed, leftovers)

    def wait_for_group_to_exit(self) -> tuple[str, ...]:
        """Give orphaned workers ORPHAN_WAIT_SECONDS to leave, then kill them by pid."""
        deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
        members = live_group_members(self.pid)
        while members and time.monotonic() < deadline:
            time.sleep(STARTUP_POLL_SECONDS)
            members = live_group_members(self.pid)
        described = tuple(f"pid {pid} ({command_line(pid)[:80]})" for pid in members)
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return described

def live_group_members(process_group: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``process_group``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getpgid(pid) == process_group and not process_is_zombie_or_gone(pid):
                members.append(pid)
        except ProcessLookupError:
            continue
    return members

def free_loopback_port() -> int:
    """A port free on 127.0.0.1 right now (the kernel's pick; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port

def log_tail(paths: tuple[Path, ...], lines: int = 15) -> str:
    tails = []
    for path in paths:
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        if text:
            tails.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(tails) or "(no log output)"

def launch(
    command: list[str], workdir: Path, log_path: Path, *,
    environment: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session (so a terminal's Ctrl-C reaches only us and
    the group can be found later) with stdout and stderr in ``log_path``: never a pipe,
    which a chatty server would fill and block on."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=workdir, env=environment, start_new_session=True,
        )

def wait_until_serving(server: RunningServer, path: str) -> None:
    """Poll with GET ``path`` until any HTTP answer, the process exits, or the deadline."""
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if not server.is_running():
            raise ServerStartError(
                f"{server.name} exited with status {server.process.returncode} while "
                f"starting\n{log_tail(server.log_paths)}"
            )
        connection = http.client.HTTPConnection(LOOPBACK, server.port,
                                                timeout=PROBE_TIMEOUT_SECONDS)
        try:
            connection.request("GET", path)
            connection.getresponse().read()
            return
        except (OSError, http.client.HTTPException) as error:
            last_error = f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        time.sleep(STARTUP_POLL_SECONDS)
    raise ServerStartError(
        f"{server.name} not serving on port {server.port} after "
        f"{STARTUP_DEADLINE_SECONDS:.0f} s ({last_error})\n{log_tail(server.log_paths)}"
    )

def fetch_problem(server: RunningServer, served: ServedFile) -> str | None:
    """None if GET returns exactly the file's bytes with status 200, else what is wrong."""
    connection = http.client.HTTPConnection(LOOPBACK, server.port,
                                            timeout=FETCH_TIMEOUT_SECONDS)
    try:
        connection.request("GET", served.url_path)
        response = connection.getresponse()
        digest = hashlib.sha256()
        received = 0
        while block := response.read(FETCH_BLOCK_BYTES):
            digest.update(block)
            received += len(block)
        if response.status != 200:
            return f"GET {served.url_path}: status {response.status}"
        length = response.getheader("Content-Length")
        if length is not None and length != str(served.size):
            return f"GET {served.url_path}: Content-Length {length}, expected {served.size}"
        if received != served.size or digest.hexdigest() != served.sha256:
            return (f"GET {served.url_path}: {received} bytes with sha256 "
                    f"{digest.hexdigest()[:16]}…, expected {served.size} bytes "
                    f"with {served.sha256[:16]}…")
        return None
    except (OSError, http.client.HTTPException) as error:
        return f"GET {served.url_path}: {type(error).__name__}: {error}"
    finally:
        connection.close()

def docroot_problems(server: RunningServer, files: dict[str, ServedFile]) -> list[str]:
    """Every way ``server`` fails to serve the docroot byte-exact (empty = it is fine)."""
    problems = [fetch_problem(server, served) for served in files.values()]
    return [problem for problem in problems if problem is not None]

def stop_unready(process: subprocess.Popen[bytes]) -> None:
    """Stop a server that never became ready (same escalation as RunningServer.stop)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=KILL_WAIT_SECONDS)

def wait_for_all_processes(server: RunningServer) -> list[int]:
    """Its process tree once master and every worker exist (or what exists at the
    deadline: a short tree is then visible in the report's process counts)."""
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    tree = server.tree()
    while len(tree) < server.expected_processes and time.monotonic() < deadline:
        time.sleep(STARTUP_POLL_SECONDS)
        tree = server.tree()
    return tree
