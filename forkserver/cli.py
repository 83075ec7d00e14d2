"""The command line: parse arguments, load configuration, and start or signal a master.

Owns argument parsing, exit statuses, the start-up order (pidfile, sockets, logs,
detach, capabilities, serve) and the wiring of the other modules (it is the only
module allowed to import both the master and the worker). Prints one line per
problem on stderr; never lets a traceback reach the user. Must not serve, supervise
or parse HTTP itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from forkserver import __version__
from forkserver.config import Config, environment_problems, load_config
from forkserver.config.listen import listen_entries
from forkserver.errors import ConfigError, StartupError
from forkserver.listeners import (
    bind_entries,
    host_problems,
    inherited_listeners,
    systemd_listeners,
    unix_socket_path,
)
from forkserver.logs import STDERR
from forkserver.master import SOCKET_ACTIVATED_ENV, UPGRADE_FROM_ENV, Master, StartInfo
from forkserver.service import (
    MASTER_CAPABILITIES,
    DaemonLink,
    Pidfile,
    daemonize,
    limit_capabilities,
    root_workers_warning,
    switches_user,
)
from forkserver.signalcommand import (
    EXIT_OK,
    EXIT_RUNTIME,
    LENIENT_SIGNALS,
    SIGNAL_NAMES,
    fail,
    send_signal,
    signal_despite_invalid_file,
)
from forkserver.tls.generation import certificate_problems, check_report
from forkserver.worker import run_worker

EXIT_USAGE = 2


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
        if args.signal in LENIENT_SIGNALS:
            return signal_despite_invalid_file(args, exc.problems)
        for problem in exc.problems:
            print(f"forkserver: {problem}", file=sys.stderr)
        if args.signal:
            print(f"forkserver: {args.signal}: nothing sent; the master goes on with "
                  f"the configuration it has", file=sys.stderr)
        return EXIT_USAGE
    if args.signal:
        return send_signal(config, args.signal)
    problems = (
        environment_problems(config)
        + [p for e in listen_entries(config) for p in host_problems(e.host, e.port)]
        + daemon_problems(config) + certificate_problems(config)
    )
    for problem in problems:
        print(f"forkserver: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    note = identity_note(config)
    if args.check:
        if note:
            print(f"forkserver: note: {note}", file=sys.stderr)
        root_warning = root_workers_warning(config.user)
        if root_warning:
            print(f"forkserver: warning: {root_warning}", file=sys.stderr)
        certificates, soon = check_report(config)  # names and expiry; warn within 14 days
        for line in [f"certificate {c}" for c in certificates] + [f"warning: {w}" for w in soon]:
            print(f"forkserver: {line}", file=sys.stderr if line[0] == "w" else sys.stdout)
        print(f"forkserver: configuration {args.config or '(defaults)'} is valid")
        return EXIT_OK
    try:
        return serve(config, StartInfo(arguments, os.getcwd(), overrides))
    except StartupError as exc:
        return fail(str(exc), EXIT_RUNTIME)


def daemon_problems(config: Config) -> list[str]:
    """Daemon mode has no stderr once detached: logs must go to files (or be off)."""
    if not config.daemon:
        return []
    problems = []
    if config.error_log == STDERR:
        problems.append(
            "error_log: '-' (stderr) goes nowhere once detached; "
            "set error_log to a file for daemon mode"
        )
    if config.access_log == STDERR:
        problems.append(
            "access_log: '-' (stderr) goes nowhere once detached; "
            "set access_log to a file, or to null to turn it off, for daemon mode"
        )
    return problems


def identity_note(config: Config) -> str | None:
    if (config.user or config.group) and os.geteuid() != 0:
        who = ":".join(x for x in (config.user, config.group) if x)
        return f"user/group {who} ignored: workers change user only when started as root"
    return None


def serve(config: Config, start: StartInfo) -> int:
    """Start a master: everything that can fail is done before detaching.

    Order: pidfile (a running instance is the likeliest reason for what follows to
    fail, and the clearest to report), listening sockets, log files; then detach;
    then serve.
    """
    upgrading = UPGRADE_FROM_ENV in os.environ
    pidfile = Pidfile(config.pidfile) if config.pidfile else None
    if pidfile is not None and not upgrading:
        pidfile.acquire()  # StartupError if a live master holds it; takes over a stale one
    try:
        master = start_master(config, start, pidfile)
    except BaseException:
        if pidfile is not None and not upgrading:
            pidfile.release()
        raise
    note = identity_note(config)
    if note:
        master.log.warning(note)
    root_warning = root_workers_warning(config.user)
    if root_warning:
        master.log.warning(root_warning)  # once per master, not per worker spawned
    link: DaemonLink | None = None
    if config.daemon and not upgrading:
        preserved = master.preserved_fds() + ([pidfile.fd] if pidfile is not None else [])
        log_offset = file_size(config.error_log)
        link = daemonize(preserved)
        if link.is_launcher:
            return launcher_exit(link, config, log_offset)
        master.on_ready = link.ready
    try:
        if link is not None and pidfile is not None:
            pidfile.write(os.getpid())  # the daemon's pid, not the launcher's
        if switches_user(config.user, config.group):
            limit_capabilities(MASTER_CAPABILITIES)
    except StartupError as exc:
        if link is None:
            raise
        link.failed(str(exc))
        master.log.error(str(exc))
        return EXIT_RUNTIME
    return master.run()


def start_master(config: Config, start: StartInfo, pidfile: Pidfile | None) -> Master:
    """Listening sockets (inherited on upgrade, from systemd, or bound) and the master."""
    activated = os.environ.pop(SOCKET_ACTIVATED_ENV, "") == "1"  # set by an upgrading master
    listeners = inherited_listeners(os.environ)
    socket_activated = listeners is not None and activated
    if listeners is None:
        listeners = systemd_listeners(os.environ)
        socket_activated = listeners is not None
    bound = listeners is None
    if listeners is None:
        listeners, _ = bind_entries(listen_entries(config), config.backlog,
                                    config.socket_mode, config.socket_owner)
    try:
        return Master(config, listeners, run_worker, start, pidfile, socket_activated)
    except OSError as exc:
        for sock in listeners:
            path = unix_socket_path(sock) if bound else None
            sock.close()
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # ours, created a moment ago
        raise StartupError(f"cannot open log file {exc.filename}: {exc.strerror}") from None


def launcher_exit(link: DaemonLink, config: Config, log_offset: int) -> int:
    """In the launcher: exit 0 once the daemon serves, else 1 with the reason."""
    status, detail = link.wait()
    if status == EXIT_OK:
        if not config.pidfile:
            print(f"forkserver: daemon started, pid {detail} (no pidfile: "
                  f"forkserver -s cannot find it)", file=sys.stderr)
        return EXIT_OK
    last = last_error_line(config.error_log, log_offset)
    where = f": last error: {last}" if last else f"; see {config.error_log}"
    return fail(f"{detail}{where}", EXIT_RUNTIME)


def file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def last_error_line(path: str, offset: int) -> str | None:
    """The message of the last ``[error]`` line written to the error log after ``offset``."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(offset, file_size(path) - 64 * 1024))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if "] [error] [" in line:
            return line.split("] ", 3)[-1]
    return None
