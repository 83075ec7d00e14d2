"""The command line: parse arguments, load configuration, and start or signal a master.

Owns argument parsing, exit statuses and the wiring of the other modules (it is
the only module allowed to import both the master and the worker). Prints one line
per problem on stderr; never lets a traceback reach the user.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence

from forkserver import __version__
from forkserver.config import Config, environment_problems, load_config
from forkserver.errors import ConfigError, StartupError
from forkserver.listeners import bind_listener, inherited_listeners, systemd_listeners
from forkserver.master import UPGRADE_FROM_ENV, Master, StartInfo
from forkserver.service import Pidfile, daemonize, process_alive, read_pid
from forkserver.worker import run_worker

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
SIGNAL_NAMES = {
    "reload": signal.SIGHUP,
    "stop": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "reopen": signal.SIGUSR1,
    "upgrade": signal.SIGUSR2,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forkserver", description="A pre-fork HTTP/1.1 static file server."
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="YAML configuration file")
    parser.add_argument("--host", help="address to bind (overrides the file)")
    parser.add_argument("--port", help="port to bind; 0 picks a free one")
    parser.add_argument("--docroot", metavar="DIR", help="directory to serve")
    parser.add_argument("--workers", metavar="N|auto", help="worker processes")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--daemon", action="store_true", default=None, help="detach")
    mode.add_argument("--foreground", action="store_true", help="stay attached (default)")
    parser.add_argument("--pidfile", metavar="FILE", help="where the master writes its pid")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "-t", "--check", action="store_true", help="validate the configuration and exit"
    )
    action.add_argument(
        "-s", dest="signal", choices=sorted(SIGNAL_NAMES), metavar="SIGNAL",
        help="send reload|stop|quit|reopen|upgrade to the running master",
    )
    parser.add_argument("--version", action="version", version=f"forkserver {__version__}")
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    for key in ("host", "port", "docroot", "workers", "pidfile"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.daemon:
        overrides["daemon"] = True
    if args.foreground:
        overrides["daemon"] = False
    return overrides


def fail(message: str, status: int) -> int:
    print(f"forkserver: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    try:
        return run(args, arguments)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_RUNTIME)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        return fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_RUNTIME)


def run(args: argparse.Namespace, arguments: list[str]) -> int:
    overrides = overrides_from(args)
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"forkserver: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.signal:
        return send_signal(config, args.signal)
    problems = environment_problems(config)
    if args.check:
        for problem in problems:
            print(f"forkserver: {problem}", file=sys.stderr)
        if problems:
            return EXIT_USAGE
        print(f"forkserver: configuration {args.config or '(defaults)'} is valid")
        return EXIT_OK
    if problems:
        for problem in problems:
            print(f"forkserver: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return serve(config, StartInfo(arguments, os.getcwd(), overrides))
    except StartupError as exc:
        return fail(str(exc), EXIT_RUNTIME)


def send_signal(config: Config, name: str) -> int:
    if not config.pidfile:
        return fail("no pidfile is configured, so there is no master to signal", EXIT_RUNTIME)
    pid = read_pid(config.pidfile)
    if pid is None:
        return fail(f"no pid in {config.pidfile}: is forkserver running?", EXIT_RUNTIME)
    if not process_alive(pid):
        return fail(f"no process {pid} (from {config.pidfile}): stale pidfile", EXIT_RUNTIME)
    try:
        os.kill(pid, SIGNAL_NAMES[name])
    except OSError as exc:
        return fail(f"cannot signal pid {pid}: {exc.strerror}", EXIT_RUNTIME)
    return EXIT_OK


def serve(config: Config, start: StartInfo) -> int:
    upgrading = UPGRADE_FROM_ENV in os.environ
    listeners: list[socket.socket] | None = inherited_listeners(os.environ)
    socket_activated = False
    if listeners is None:
        listeners = systemd_listeners(os.environ)
        socket_activated = listeners is not None
    if listeners is None:
        listeners = [bind_listener(config.host, config.port, config.backlog)]
    pidfile = Pidfile(config.pidfile) if config.pidfile else None
    if pidfile is not None and not upgrading:
        owner = pidfile.holder()
        if owner is not None:
            raise StartupError(
                f"pidfile {config.pidfile} is held by a running forkserver (pid {owner})"
            )
    try:
        master = Master(config, listeners, run_worker, start, pidfile, socket_activated)
    except OSError as exc:
        raise StartupError(f"cannot open log file {exc.filename}: {exc.strerror}") from None
    if config.daemon and not upgrading:
        if "-" in (config.error_log, config.access_log):
            print("forkserver: note: logs sent to stderr ('-') are discarded in daemon mode",
                  file=sys.stderr)
        daemonize(master.preserved_fds())
    if pidfile is not None and not upgrading:
        pidfile.acquire()
    return master.run()
