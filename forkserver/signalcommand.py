"""The ``-s SIGNAL`` command: find the running master through its pidfile, signal it,
and for reload and upgrade wait for the verdict it records beside the pidfile.

Owns the signal names, which signals are sent even when the configuration file does
not validate (stop, quit, reopen need only the pidfile), reading the pidfile out of
such a file, and the wait for the outcome. Prints one line per problem on stderr and
returns the exit status. Must not start, supervise or configure a server (cli.py).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time

import yaml

from forkserver.config import Config
from forkserver.errors import StartupError
from forkserver.service import (
    Pidfile,
    outcome_path,
    process_alive,
    read_outcome,
    read_pid,
)

__all__ = [
    "EXIT_OK", "EXIT_RUNTIME", "LENIENT_SIGNALS", "SIGNAL_NAMES", "fail", "salvage_pidfile",
    "send_signal", "signal_despite_invalid_file",
]

EXIT_OK, EXIT_RUNTIME = 0, 1
# Signals that need only the pidfile, so they are sent even when the file is invalid.
LENIENT_SIGNALS = frozenset({"stop", "quit", "reopen"})
# Signals whose outcome the master records beside its pidfile; -s waits for it.
VERDICT_SIGNALS = frozenset({"reload", "upgrade"})
VERDICT_MARGIN_SECONDS = 15.0  # on top of timeouts.graceful: a new master boots too
VERDICT_POLL_SECONDS = 0.05
SIGNAL_NAMES = {
    "reload": signal.SIGHUP,
    "stop": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "reopen": signal.SIGUSR1,
    "upgrade": signal.SIGUSR2,
}


def fail(message: str, status: int) -> int:
    """One line on stderr; the exit status (the command line's too)."""
    print(f"forkserver: {message}", file=sys.stderr)
    return status


def no_pidfile_hint(source: str | None) -> str:
    where = f"set pidfile: in {source}" if source else "use -c FILE with a pidfile: key"
    return (f"no pidfile is configured, so there is no master to signal; {where} "
            f"(and restart the server), or pass --pidfile FILE")


def signal_despite_invalid_file(args: argparse.Namespace, problems: list[str]) -> int:
    """stop, quit and reopen need only the pidfile: a broken file must never keep an
    operator from stopping the server or rotating its logs."""
    if args.pidfile is not None:
        pidfile: str | None = os.path.abspath(args.pidfile)
    else:
        pidfile = salvage_pidfile(args.config)
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    print(f"forkserver: warning: {args.config} is invalid ({count}; "
          f"forkserver -c {args.config} --check lists them)", file=sys.stderr)
    if not pidfile:
        return fail(no_pidfile_hint(args.config) + " (it could not be read from the "
                    "invalid file)", EXIT_RUNTIME)
    print(f"forkserver: warning: sending {args.signal} to the master named in "
          f"{pidfile} anyway", file=sys.stderr)
    return send_signal_to(pidfile, args.signal, None)


def salvage_pidfile(path: str | None) -> str | None:
    """The pidfile named by a configuration file that does not validate, if it can be
    made out: the top-level pidfile: key of a document that parses, else a plain
    top-level `pidfile: VALUE` line. Relative to the file's directory, as always."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return None
    value: object = None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        match = re.search(r"^pidfile:[ \t]*(['\"]?)([^'\"#\s][^'\"#]*?)\1[ \t]*(#.*)?$",
                          text, re.MULTILINE)
        value = match.group(2) if match else None
    else:
        if isinstance(document, dict):
            value = document.get("pidfile")
    if not isinstance(value, str) or not value.strip():
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), value))


def send_signal(config: Config, name: str) -> int:
    if not config.pidfile:
        return fail(no_pidfile_hint(config.source), EXIT_RUNTIME)
    return send_signal_to(config.pidfile, name, config)


def send_signal_to(pidfile: str, name: str, config: Config | None) -> int:
    """Signal the master holding ``pidfile``; for reload and upgrade (``config``
    given), wait for its verdict."""
    if read_pid(pidfile) is None:
        return fail(f"no pid in {pidfile}: is forkserver running?", EXIT_RUNTIME)
    # The lock, not the pid, says whether a master is alive: after a crash the pid
    # in a stale file may belong to an unrelated process by now.
    try:
        pid = Pidfile(pidfile).holder()
    except StartupError as exc:
        return fail(str(exc), EXIT_RUNTIME)
    if pid == -1:
        return fail(f"{pidfile} holds no pid yet: forkserver is starting", EXIT_RUNTIME)
    if pid is None or not process_alive(pid):
        stale = read_pid(pidfile)
        return fail(f"no forkserver holds {pidfile} (stale pid {stale})", EXIT_RUNTIME)
    before = read_outcome(pidfile)
    try:
        os.kill(pid, SIGNAL_NAMES[name])
    except OSError as exc:
        return fail(f"cannot signal pid {pid}: {exc.strerror}", EXIT_RUNTIME)
    if name not in VERDICT_SIGNALS or config is None:
        return EXIT_OK
    if before is None:
        # A master that records no outcome (an older version, or one that cannot
        # write beside its pidfile): say so rather than wait for nothing.
        print(f"forkserver: {name} sent to pid {pid}; this master reports no outcome "
              f"(no {outcome_path(pidfile)}): see its error log", file=sys.stderr)
        return EXIT_OK
    return await_outcome(pidfile, name, pid, before.serial,
                         config.timeouts.graceful + VERDICT_MARGIN_SECONDS)


def await_outcome(pidfile: str, name: str, pid: int, serial: int, timeout: float) -> int:
    """Wait for the master's verdict on a reload or upgrade, like `systemctl reload`
    waits for READY=1: exit 0 once the new generation (or master) serves, 1 with the
    reason if it was refused."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = read_outcome(pidfile)
        if outcome is not None and outcome.serial != serial and outcome.action == name:
            if not outcome.ok:
                return fail(f"{name} failed: {outcome.message}", EXIT_RUNTIME)
            if name == "upgrade" and read_pid(pidfile) != outcome.pid:
                return fail(f"upgrade: new master {outcome.pid} serves, but {pidfile} "
                            f"names {read_pid(pidfile)}", EXIT_RUNTIME)
            print(f"forkserver: {name}: {outcome.message}")
            return EXIT_OK
        if name == "reload" and not process_alive(pid):
            return fail(f"reload: the master (pid {pid}) exited", EXIT_RUNTIME)
        time.sleep(VERDICT_POLL_SECONDS)
    return fail(f"{name}: no outcome from pid {pid} within {timeout:g}s; it may still be "
                f"under way: see the error log", EXIT_RUNTIME)
