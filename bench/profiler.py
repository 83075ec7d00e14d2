"""``--profile``: a py-spy flamegraph of forkserver (one worker) under one wrk case.

Owns running forkserver with a single worker as a child of ``py-spy record
--subprocesses`` (so attaching needs no ptrace privilege), loading it with wrk,
then stopping the forkserver master so py-spy writes the SVG into
``bench/results/`` (gitignored). For the people optimizing the hot path; the
throughput it prints is lower than a normal run's (one worker, sampling overhead).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.docroot import SMALL_FILE, build_docroot
from bench.load import LoadCase, build_cases, run_wrk
from bench.prerequisites import WRK, ensure_debian_programs, ensure_py_spy
from bench.processes import command_line, process_tree
from bench.runner import REPO_ROOT, Options, progress_line
from bench.servers import (
    FORKSERVER,
    FORKSERVER_PROBLEMS,
    KILL_WAIT_SECONDS,
    RunningServer,
    ServerStartError,
    docroot_problems,
    forkserver_command,
    launch,
    log_tail,
    wait_for_forkserver_port,
    wait_until_serving,
)

RESULTS_DIRECTORY = Path(__file__).resolve().parent / "results"
SAMPLES_PER_SECOND = 200
# py-spy writes the flamegraph once its target exits; a big profile takes a moment.
PY_SPY_EXIT_SECONDS = 60.0
FORKSERVER_STOP_SECONDS = 10.0
FIND_MASTER_SECONDS = 10.0
FIND_MASTER_POLL_SECONDS = 0.05
EXIT_OK, EXIT_FAILED = 0, 1


def find_forkserver_master(py_spy: subprocess.Popen[bytes]) -> int:
    """The forkserver master (py-spy's child) once it exists."""
    deadline = time.monotonic() + FIND_MASTER_SECONDS
    while time.monotonic() < deadline and py_spy.poll() is None:
        for pid in process_tree(py_spy.pid)[1:]:
            if "forkserver" in command_line(pid):
                return pid
        time.sleep(FIND_MASTER_POLL_SECONDS)
    raise ServerStartError(f"no forkserver process appeared under py-spy "
                           f"(py-spy status {py_spy.poll()})")


def stop_profiled(py_spy: subprocess.Popen[bytes], master_pid: int | None) -> None:
    """TERM the forkserver master so py-spy sees its target exit and writes the SVG;
    escalate to Ctrl-C (py-spy still writes what it has), then SIGKILL."""
    if master_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(master_pid, signal.SIGTERM)
    try:
        py_spy.wait(timeout=FORKSERVER_STOP_SECONDS + PY_SPY_EXIT_SECONDS)
        return
    except subprocess.TimeoutExpired:
        pass
    py_spy.send_signal(signal.SIGINT)
    try:
        py_spy.wait(timeout=PY_SPY_EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        py_spy.kill()
        py_spy.wait(timeout=KILL_WAIT_SECONDS)


def profile_case(options: Options, case_key: str) -> LoadCase:
    cases = build_cases(options.connections, options.large_file_connections)
    return next(case for case in cases if case.key == case_key)


def run_profile(options: Options, case_key: str) -> int:
    """Profile forkserver under case ``case_key``; returns the exit status."""
    wrk = ensure_debian_programs((WRK,))[WRK.command]
    py_spy = ensure_py_spy()
    case = profile_case(options, case_key)
    RESULTS_DIRECTORY.mkdir(exist_ok=True)
    svg = RESULTS_DIRECTORY / f"forkserver-{case.key}-{datetime.now():%Y%m%d-%H%M%S}.svg"
    with tempfile.TemporaryDirectory(prefix="forkserver-profile-") as temporary:
        workdir = Path(temporary)
        workdir.chmod(0o755)  # as root, the worker serves as nobody (bench/servers.py)
        docroot = workdir / "docroot"
        files = build_docroot(docroot)
        command, log_paths = forkserver_command(workdir, docroot, workers=1)
        profiler_command = [py_spy, "record", "--subprocesses", "--nonblocking",
                            "--rate", str(SAMPLES_PER_SECOND), "--format", "flamegraph",
                            "--output", str(svg), "--", *command]
        print(f"bench: profiling: {' '.join(profiler_command)}", flush=True)
        py_spy_process = launch(profiler_command, workdir, log_paths[1])
        server = RunningServer(FORKSERVER, "1 worker under py-spy", py_spy_process, 0,
                               log_paths, FORKSERVER_PROBLEMS, expected_processes=3)
        master_pid: int | None = None
        try:
            master_pid = find_forkserver_master(py_spy_process)
            server.port = wait_for_forkserver_port(py_spy_process, log_paths)
            wait_until_serving(server, "/" + SMALL_FILE)
            problems = docroot_problems(server, files)
            if problems:
                print(f"bench: forkserver failed the byte-exact check: {problems}")
                return EXIT_FAILED
            url = server.url("/" + case.file_name)
            run_wrk(wrk, url, case, options.warmup_seconds)
            print(progress_line(case, server, run_wrk(wrk, url, case, options.seconds)),
                  flush=True)
        except ServerStartError as error:
            print(f"bench: forkserver did not start under py-spy: {error}")
            return EXIT_FAILED
        finally:
            stop_profiled(py_spy_process, master_pid)
            for line in server.log_problems():
                print(f"bench: {line}")
            if not svg.exists():
                print(f"bench: py-spy wrote no flamegraph; its output:\n{log_tail(log_paths)}")
    if not svg.exists():
        return EXIT_FAILED
    print(f"bench: flamegraph written to {svg.relative_to(REPO_ROOT)}")
    return EXIT_OK
