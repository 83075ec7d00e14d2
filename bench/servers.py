"""The servers under test: how each one is configured, started, checked and stopped.

Owns the generated configurations (forkserver YAML, nginx.conf, gunicorn flags),
the launch of each server in its own session on a loopback port, the readiness
poll, the byte-exact check of the docroot, scanning each server's log for problem
lines, and stopping every server by its pid (then any process of its group left
behind). Measures nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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

FORKSERVER = "forkserver"
NGINX = "nginx"
GUNICORN = "gunicorn"
HTTP_SERVER = "http.server"

FORKSERVER_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


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


def yaml_string(value: str) -> str:
    """A double-quoted YAML scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def wait_for_forkserver_port(process: subprocess.Popen[bytes], log_paths: tuple[Path, ...]
                             ) -> int:
    """The port forkserver chose for ``port: 0``, read from its ``listening on`` line."""
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        for path in log_paths:
            try:
                match = FORKSERVER_LISTENING.search(path.read_text(errors="replace"))
            except OSError:
                continue
            if match:
                return int(match.group(1))
        if process.poll() is not None:
            raise ServerStartError(
                f"forkserver exited with status {process.returncode} while starting\n"
                f"{log_tail(log_paths)}"
            )
        time.sleep(STARTUP_POLL_SECONDS)
    raise ServerStartError(
        f"forkserver logged no 'listening on http://127.0.0.1:PORT' line within "
        f"{STARTUP_DEADLINE_SECONDS:.0f} s\n{log_tail(log_paths)}"
    )


def forkserver_config(workdir: Path, docroot: Path, workers: int, error_log: Path,
                      access_log: Path | None = None, extra_yaml: str = "") -> Path:
    """Write the forkserver YAML for this run; ``port: 0`` lets the kernel pick."""
    path = workdir / "forkserver.yaml"
    logged = "null" if access_log is None else yaml_string(str(access_log))
    path.write_text(
        "# Generated by bench/servers.py for one benchmark run.\n"
        f"host: {LOOPBACK}\n"
        "port: 0\n"
        f"docroot: {yaml_string(str(docroot))}\n"
        f"workers: {workers}\n"
        f"access_log: {logged}\n"
        f"error_log: {yaml_string(str(error_log))}\n"
        "log_level: info\n"
        + extra_yaml
    )
    return path


def forkserver_command(workdir: Path, docroot: Path, workers: int,
                       access_log: Path | None = None, extra_yaml: str = ""
                       ) -> tuple[list[str], tuple[Path, ...]]:
    """The command line and log files (error log, stderr) of a forkserver master."""
    error_log = workdir / "forkserver-error.log"
    config = forkserver_config(workdir, docroot, workers, error_log, access_log, extra_yaml)
    command = [sys.executable, "-m", "forkserver", "-c", str(config)]
    return command, (error_log, workdir / "forkserver-stderr.log")


FORKSERVER_PROBLEMS = re.compile(r"\[(warning|error|critical)\]|Traceback|Error\b")


def start_forkserver(context: StartContext, access_log: Path | None = None,
                     extra_yaml: str = "") -> RunningServer:
    command, log_paths = forkserver_command(context.workdir, context.docroot, context.workers,
                                            access_log, extra_yaml)
    process = launch(command, context.workdir, log_paths[1])
    try:
        port = wait_for_forkserver_port(process, log_paths)
    except BaseException:  # also Ctrl-C: never leave it running
        stop_unready(process)
        raise
    logging = "access log off" if access_log is None else "access log to a file"
    return RunningServer(FORKSERVER, f"{context.workers} workers, {logging}", process,
                         port, log_paths, FORKSERVER_PROBLEMS, context.workers + 1)


def nginx_config(context: StartContext, port: int) -> Path:
    """nginx.conf with every path inside the workdir, so it never touches /var."""
    workdir = context.workdir
    temp_directives = "\n".join(
        f"    {kind}_temp_path {workdir / ('temp-' + kind)};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    path = workdir / "nginx.conf"
    path.write_text(
        f"""# Generated by bench/servers.py for one benchmark run.
worker_processes {context.workers};
daemon off;
master_process on;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'nginx-error.log'};

events {{
    worker_connections 4096;
}}

http {{
    default_type application/octet-stream;
    # The site-mix types, so nginx labels them as forkserver does (a lookup each).
    types {{
        text/html html;
        text/css css;
        text/javascript js;
        application/json json;
        image/png png;
        image/jpeg jpg;
        image/svg+xml svg;
        font/woff2 woff2;
    }}
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 100000;
{temp_directives}

    server {{
        listen {LOOPBACK}:{port};
        root {context.docroot};
    }}
}}
"""
    )
    return path


NGINX_PROBLEMS = re.compile(r"\[(warn|error|crit|alert|emerg)\]")


def start_nginx(context: StartContext) -> RunningServer:
    port = free_loopback_port()
    config = nginx_config(context, port)
    log_paths = (context.workdir / "nginx-error.log", context.workdir / "nginx-stderr.log")
    command = [context.programs.nginx, "-p", str(context.workdir), "-c", str(config),
               "-e", str(log_paths[0])]
    process = launch(command, context.workdir, log_paths[1])
    return RunningServer(NGINX, f"{context.workers} workers, sendfile, access log off",
                         process, port, log_paths, NGINX_PROBLEMS, context.workers + 1,
                         # TERM is nginx's fast stop; QUIT its graceful one.
                         stop_signal=signal.SIGQUIT)


def gunicorn_has_control_socket() -> bool:
    """Recent gunicorn opens a control socket under ~/.gunicorn unless told not to."""
    try:
        completed = subprocess.run([sys.executable, "-m", "gunicorn", "--help"],
                                   capture_output=True, text=True, check=False,
                                   timeout=STARTUP_DEADLINE_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--no-control-socket" in completed.stdout


GUNICORN_PROBLEMS = re.compile(r"\[(ERROR|CRITICAL)\]|WORKER TIMEOUT|Traceback")


def start_gunicorn(context: StartContext) -> RunningServer:
    port = free_loopback_port()
    log_paths = (context.workdir / "gunicorn-error.log", context.workdir / "gunicorn-stderr.log")
    command = [sys.executable, "-m", "gunicorn", "--workers", str(context.workers),
               "--worker-class", "sync", "--bind", f"{LOOPBACK}:{port}",
               "--error-logfile", str(log_paths[0]), "--log-level", "warning",
               "--chdir", str(context.repo_root)]
    if gunicorn_has_control_socket():
        command.append("--no-control-socket")
    command.append("bench.gunicorn_app:application")
    environment = dict(os.environ, BENCH_DOCROOT=str(context.docroot))
    process = launch(command, context.workdir, log_paths[1], environment=environment)
    return RunningServer(
        GUNICORN, f"{context.workers} sync workers: no keep-alive, every response closes",
        process, port, log_paths, GUNICORN_PROBLEMS, context.workers + 1)


# Every wrk run ends by closing connections mid-response: the BrokenPipe and
# ConnectionReset tracebacks that http.server prints for that are expected.
HTTP_SERVER_PROBLEMS = re.compile(
    r"^(?!BrokenPipeError|ConnectionResetError)\w+(Error|Exception)\b")


def start_http_server(context: StartContext) -> RunningServer:
    port = free_loopback_port()
    log_paths = (context.workdir / "http-server.log",)
    command = [sys.executable, "-m", "http.server", "--bind", LOOPBACK,
               "--directory", str(context.docroot), str(port)]
    process = launch(command, context.workdir, log_paths[0])
    return RunningServer(
        HTTP_SERVER,
        "one process, a thread per connection, HTTP/1.0 (no keep-alive); ignores --workers; "
        "logs every request to stderr (to a file here)",
        process, port, log_paths, HTTP_SERVER_PROBLEMS, expected_processes=1)


ServerStarter = Callable[[StartContext], RunningServer]
SERVER_STARTERS: dict[str, ServerStarter] = {
    FORKSERVER: start_forkserver,
    NGINX: start_nginx,
    GUNICORN: start_gunicorn,
    HTTP_SERVER: start_http_server,
}


def stop_unready(process: subprocess.Popen[bytes]) -> None:
    """Stop a server that never became ready (same escalation as RunningServer.stop)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=KILL_WAIT_SECONDS)


def start_server(name: str, context: StartContext,
                 starter: ServerStarter | None = None) -> RunningServer:
    """Start server ``name`` (with ``starter``, else its usual one) and wait until it
    answers HTTP; stop it again on failure."""
    context.workdir.mkdir(parents=True, exist_ok=True)
    context.workdir.chmod(0o755)
    server = (starter or SERVER_STARTERS[name])(context)
    try:
        wait_until_serving(server, context.probe_path)
    except BaseException:
        server.stop()
        raise
    server.initial_tree = tuple(wait_for_all_processes(server))
    return server


def wait_for_all_processes(server: RunningServer) -> list[int]:
    """Its process tree once master and every worker exist (or what exists at the
    deadline: a short tree is then visible in the report's process counts)."""
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    tree = server.tree()
    while len(tree) < server.expected_processes and time.monotonic() < deadline:
        time.sleep(STARTUP_POLL_SECONDS)
        tree = server.tree()
    return tree
