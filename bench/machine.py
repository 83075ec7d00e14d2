"""The machine and software a benchmark ran on, for the report's header.

Owns reading CPU count and model, kernel, Python, nginx, wrk, gunicorn and
forkserver versions, and the git commit of the tree being measured. Reads only.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

VERSION_COMMAND_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Machine:
    cpus: int  # usable by this process (what nproc prints)
    cpu_model: str
    kernel: str
    python: str
    nginx: str
    wrk: str
    gunicorn: str
    forkserver: str
    commit: str

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("CPUs (nproc)", str(self.cpus)),
            ("CPU model", self.cpu_model),
            ("kernel", self.kernel),
            ("Python", self.python),
            ("forkserver", f"{self.forkserver} ({self.commit})"),
            ("nginx", self.nginx),
            ("gunicorn", self.gunicorn),
            ("wrk", self.wrk),
        ]


def command_output(command: list[str]) -> str:
    """stdout and stderr of ``command`` together ('' if it cannot run)."""
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False,
                                   timeout=VERSION_COMMAND_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return completed.stdout + completed.stderr


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit(repo_root: Path) -> str:
    commit = command_output(["git", "-C", str(repo_root), "rev-parse", "--short", "HEAD"])
    if not commit.strip() or "fatal" in commit:
        return "no git commit"
    dirty = command_output(["git", "-C", str(repo_root), "status", "--porcelain",
                            "--untracked-files=no", "--", "forkserver"])
    return commit.strip() + (" + uncommitted changes" if dirty.strip() else "")


def first_match(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    return match.group(1) if match else "unknown"


def describe_machine(nginx: str, wrk: str, repo_root: Path) -> Machine:
    return Machine(
        cpus=len(os.sched_getaffinity(0)),
        cpu_model=cpu_model(),
        kernel=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        nginx=first_match(r"nginx version: (\S+)", command_output([nginx, "-v"])),
        wrk=first_match(r"^(wrk \S+)", command_output([wrk, "-v"])),
        gunicorn=package_version("gunicorn"),
        forkserver=package_version("forkserver-static"),  # the distribution name
        commit=git_commit(repo_root),
    )
