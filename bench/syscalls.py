"""System calls per request: counted in a separate round, attached to a server's workers.

Owns attaching a counter to running processes for the length of one wrk round and
reading back how many system calls they made, in total and by name. Two counters:

- ``perf stat`` on the ``raw_syscalls:sys_enter`` tracepoint (plus one
  ``syscalls:sys_enter_NAME`` tracepoint per syscall of BREAKDOWN_SYSCALLS), when perf
  works here: in-kernel counting, little slowdown;
- else ``strace -c -f``, which stops the traced process at every call and slows it
  several-fold (the count per request stays meaningful; the rate does not).

Either way the round's req/s are not reported: only the count divided by the
requests wrk completed in that round. A short idle moment before the load (the
counter attaching) is counted too; a few idle calls against tens of thousands.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PERF = "perf"
STRACE = "strace"
ATTACH_SECONDS = 0.5  # perf and strace print nothing when attached: give them this long
DETACH_TIMEOUT_SECONDS = 10.0
TRACEPOINT_DIRECTORIES = (Path("/sys/kernel/tracing/events/syscalls"),
                          Path("/sys/kernel/debug/tracing/events/syscalls"))
# What a static file server calls; the breakdown names those that were made.
BREAKDOWN_SYSCALLS = (
    "accept4", "recvfrom", "read", "sendto", "sendmsg", "write", "writev", "sendfile64",
    "openat", "newfstatat", "newfstat", "statx", "close", "epoll_wait", "epoll_pwait",
    "epoll_ctl", "ioctl", "getsockname", "setsockopt", "fcntl", "lseek", "pread64",
    "shutdown", "mmap", "munmap", "brk", "futex", "getdents64", "readlinkat",
)


@dataclass(frozen=True)
class SyscallCount:
    method: str  # "perf" or "strace"
    requests: int  # completed by wrk while the counter was attached
    total: int
    by_name: dict[str, int]  # only calls that were made, most frequent first

    @property
    def per_request(self) -> float:
        return self.total / self.requests if self.requests else 0.0

    def top(self, count: int = 6) -> str:
        """``recvfrom 1.00, sendto 1.00, …`` per request."""
        if not self.requests:
            return ""
        return ", ".join(f"{name} {calls / self.requests:.2f}"
                         for name, calls in list(self.by_name.items())[:count])


class SyscallFailure(RuntimeError):
    """No counter could be attached, or its output could not be read."""


def tracepoints() -> Path | None:
    return next((path for path in TRACEPOINT_DIRECTORIES if (path / "enable").exists()
                 or (path / "sys_enter_read").is_dir()), None)


@functools.cache
def available_method() -> str | None:
    """``perf`` if it can count the raw_syscalls tracepoint here, else ``strace`` if
    present, else None."""
    try:
        perf = subprocess.run([PERF, "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--",
                               "true"], capture_output=True, text=True, timeout=20,
                              check=False)
        if perf.returncode == 0 and "raw_syscalls:sys_enter" in perf.stderr:
            return PERF
    except (OSError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        if subprocess.run([STRACE, "-V"], capture_output=True, timeout=20,
                          check=False).returncode == 0:
            return STRACE
    return None


def perf_command(pids: list[int], output: Path) -> list[str]:
    events = ["raw_syscalls:sys_enter"]
    directory = tracepoints()
    if directory is not None:
        events += [f"syscalls:sys_enter_{name}" for name in BREAKDOWN_SYSCALLS
                   if (directory / f"sys_enter_{name}").is_dir()]
    return [PERF, "stat", "-x,", "-o", str(output), "-e", ",".join(events),
            "-p", ",".join(map(str, pids))]


def strace_command(pids: list[int], output: Path) -> list[str]:
    command = [STRACE, "-c", "-f", "-q", "-o", str(output)]
    for pid in pids:
        command += ["-p", str(pid)]
    return command


def parse_perf(text: str) -> tuple[int, dict[str, int]]:
    """perf stat -x, lines: ``count,unit,event,...``."""
    total, by_name = None, {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or not fields[0].strip().isdigit():
            continue
        count, event = int(fields[0]), fields[2]
        if event == "raw_syscalls:sys_enter":
            total = count
        elif event.startswith("syscalls:sys_enter_") and count:
            by_name[event.removeprefix("syscalls:sys_enter_")] = count
    if total is None:
        raise SyscallFailure(f"perf printed no raw_syscalls count: {text.strip()[-300:]}")
    return total, by_name


STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def parse_strace(text: str) -> tuple[int, dict[str, int]]:
    """strace -c's table: ``% time seconds usecs/call calls [errors] syscall``."""
    by_name = {}
    for line in text.splitlines():
        match = STRACE_ROW.match(line)
        if match and match.group(2) != "total":
            by_name[match.group(2)] = int(match.group(1))
    if not by_name:
        raise SyscallFailure(f"strace printed no table: {text.strip()[-300:]}")
    return sum(by_name.values()), by_name


def count_syscalls(pids: list[int], run_load: Callable[[], int]) -> SyscallCount:
    """Attach to ``pids`` (threads included), call ``run_load`` (returns the requests
    completed), detach; the counts."""
    method = available_method()
    if method is None:
        raise SyscallFailure("neither perf nor strace works here "
                             "(apt-get install -y linux-perf or strace)")
    with tempfile.TemporaryDirectory(prefix="bench-syscalls-") as temporary:
        output = Path(temporary) / "counts.txt"
        command = (perf_command if method == PERF else strace_command)(pids, output)
        counter = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(ATTACH_SECONDS)
            if counter.poll() is not None:
                said = counter.stderr.read().decode(errors="replace") if counter.stderr else ""
                raise SyscallFailure(f"{method} exited at once: {said.strip()[-300:]}")
            requests = run_load()
        finally:
            stop_counter(counter)
        text = output.read_text(errors="replace") if output.exists() else ""
    total, by_name = parse_perf(text) if method == PERF else parse_strace(text)
    ordered = dict(sorted(by_name.items(), key=lambda item: -item[1]))
    return SyscallCount(method, requests, total, ordered)


def stop_counter(counter: subprocess.Popen[bytes]) -> None:
    """SIGINT makes perf print its counts and strace detach and print its table."""
    if counter.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(counter.pid, signal.SIGINT)
    try:
        counter.wait(timeout=DETACH_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        counter.kill()
        counter.wait()
    if counter.stderr:
        counter.stderr.close()
