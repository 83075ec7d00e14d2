"""What the benchmark needs installed, and installing it when it is missing.

Owns the runtime checks and the installs: Debian packages (``nginx-light``,
``wrk``) with ``apt-get install -y``, Python packages (``gunicorn``,
``matplotlib``, and ``py-spy`` for ``--profile``) with pip into the running
interpreter's environment. Installs only what is missing and prints every command
it runs. Never starts or stops a service.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# apt-get and pip may download; give them time, but never hang the benchmark forever.
INSTALL_TIMEOUT_SECONDS = 900
# Debian keeps daemons such as nginx in sbin directories, which a non-login PATH may lack.
SBIN_DIRECTORIES = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class PrerequisiteError(RuntimeError):
    """Something the benchmark needs is missing and could not be installed."""


@dataclass(frozen=True)
class DebianProgram:
    command: str
    package: str


@dataclass(frozen=True)
class PythonPackage:
    import_name: str
    requirement: str


@dataclass(frozen=True)
class Programs:
    """Absolute paths of the external programs the benchmark runs."""

    nginx: str
    wrk: str


NGINX = DebianProgram("nginx", "nginx-light")
WRK = DebianProgram("wrk", "wrk")
GUNICORN = PythonPackage("gunicorn", "gunicorn>=22")
MATPLOTLIB = PythonPackage("matplotlib", "matplotlib>=3.7")
PY_SPY_REQUIREMENT = "py-spy>=0.3.14"


def find_program(command: str) -> str | None:
    """Absolute path of ``command`` on PATH or in the sbin directories, else None."""
    found = shutil.which(command)
    if found:
        return found
    for directory in SBIN_DIRECTORIES:
        candidate = os.path.join(directory, command)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def run_install(command: list[str]) -> None:
    print(f"bench: installing: {shlex.join(command)}", flush=True)
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        completed = subprocess.run(
            command, env=environment, timeout=INSTALL_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PrerequisiteError(f"{shlex.join(command)} failed: {error}") from error
    if completed.returncode != 0:
        raise PrerequisiteError(
            f"{shlex.join(command)} exited with status {completed.returncode}"
        )


def ensure_debian_programs(programs: tuple[DebianProgram, ...]) -> dict[str, str]:
    """Paths of ``programs``, installing the missing ones' packages with apt-get."""
    missing = [program for program in programs if find_program(program.command) is None]
    if missing:
        packages = [program.package for program in missing]
        if os.geteuid() != 0:
            raise PrerequisiteError(
                f"missing {', '.join(p.command for p in missing)}; "
                f"run: sudo apt-get install -y {' '.join(packages)}"
            )
        run_install(["apt-get", "install", "-y", "--no-install-recommends", *packages])
    paths: dict[str, str] = {}
    for program in programs:
        path = find_program(program.command)
        if path is None:
            raise PrerequisiteError(
                f"{program.command} is still missing after installing {program.package}"
            )
        paths[program.command] = path
    return paths


def pip_install(requirements: list[str]) -> None:
    run_install(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *requirements]
    )
    importlib.invalidate_caches()


def ensure_python_packages(packages: tuple[PythonPackage, ...]) -> None:
    """Import-check ``packages`` and pip-install the missing ones into this environment."""
    missing = [p for p in packages if importlib.util.find_spec(p.import_name) is None]
    if not missing:
        return
    pip_install([p.requirement for p in missing])
    still_missing = [p for p in missing if importlib.util.find_spec(p.import_name) is None]
    if still_missing:
        names = ", ".join(p.import_name for p in still_missing)
        raise PrerequisiteError(f"{names} still not importable after pip install")


def ensure_benchmark_prerequisites() -> Programs:
    """Everything a full benchmark run needs; returns the external programs' paths."""
    paths = ensure_debian_programs((NGINX, WRK))
    ensure_python_packages((GUNICORN, MATPLOTLIB))
    return Programs(nginx=paths[NGINX.command], wrk=paths[WRK.command])


def ensure_py_spy() -> str:
    """Path of py-spy, pip-installing it into this environment if it is missing."""
    beside_python = Path(sys.executable).parent / "py-spy"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("py-spy")
    if found:
        return found
    pip_install([PY_SPY_REQUIREMENT])
    if beside_python.exists():
        return str(beside_python)
    raise PrerequisiteError("py-spy is still missing after pip install")
