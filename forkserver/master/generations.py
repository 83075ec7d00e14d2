"""Generations: a configuration, its listeners and log files, and how many workers it wants.

Owns the list of live generations (the current one is the newest), making one
(opening its log files and handing them to the workers' user), the log files they
share (reopened on USR1), and forgetting a generation once its last worker has gone.
Must not fork, signal or decide when a generation is ready (pool.py, supervisor.py).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from forkserver.config import Config
from forkserver.errors import StartupError
from forkserver.logs import AccessLog, ErrorLog, LogFile
from forkserver.service import hand_over_logs
from forkserver.tls.generation import GenerationTls, prepare


@dataclass(eq=False)
class Generation:
    number: int
    config: Config
    listeners: list[socket.socket]
    error_log: ErrorLog
    access_log: AccessLog
    target: int  # workers wanted (TTIN/TTOU move it; HUP resets it)
    ready: bool = False  # every wanted worker has reached SERVING once
    restarts: dict[int, int] = field(default_factory=dict)  # worker number → times replaced
    # Contexts built here, before fork, so every worker shares the session-ticket keys.
    tls: GenerationTls | None = None


class Generations:
    """The live generations, oldest first; the last is the current one."""

    def __init__(self) -> None:
        self.all: list[Generation] = []
        self.log_files: dict[str, LogFile] = {}

    @property
    def current(self) -> Generation:
        return self.all[-1]

    def log_file(self, path: str) -> LogFile:
        if path not in self.log_files:
            self.log_files[path] = LogFile(path)
        return self.log_files[path]

    def make(self, number: int, config: Config, listeners: list[socket.socket]) -> Generation:
        """A generation with its log files open; not yet current (see ``add``).

        Raises CertificateError when a certificate cannot be loaded (reload and
        start-up check them first, so that is a file changed in between).
        """
        tls = prepare(config, listeners)
        error_log = ErrorLog(self.log_file(config.error_log), config.log_level)
        access_file = self.log_file(config.access_log) if config.access_log else None
        # A root master's workers run as config.user: they must be able to reopen.
        hand_over_logs([error_log.file.fd, access_file.fd if access_file else -1],
                       config.user, config.group)
        return Generation(
            number, config, listeners, error_log,
            AccessLog(access_file, config.access_log_format, error_log), config.workers,
            tls=tls,
        )

    def add(self, generation: Generation) -> None:
        """Make ``generation`` the current one; the others serve until it is ready."""
        self.all.append(generation)

    def abandoned_listeners(self) -> list[socket.socket]:
        """Listeners of older generations that the current one no longer uses."""
        keep = {id(sock) for sock in self.current.listeners}
        return [sock for generation in self.all for sock in generation.listeners
                if id(sock) not in keep]

    def finished(self, has_workers: Callable[[Generation], bool]) -> list[Generation]:
        """Older generations whose last worker has gone."""
        return [old for old in self.all
                if old is not self.current and not has_workers(old)]

    def forget(self, old: Generation, close_listener: Callable[[socket.socket], None]) -> None:
        """Close what only a finished generation used: listeners and log files."""
        self.all.remove(old)
        in_use = {s.fileno() for g in self.all for s in g.listeners}
        for sock in old.listeners:
            if sock.fileno() not in in_use:
                close_listener(sock)
        paths = {g.config.error_log for g in self.all}
        paths |= {g.config.access_log for g in self.all if g.config.access_log}
        for path in list(self.log_files):
            if path not in paths:
                self.log_files.pop(path).close()

    def listeners(self) -> Iterable[socket.socket]:
        return [sock for generation in self.all for sock in generation.listeners]

    def reopen_logs(self, log: ErrorLog) -> None:
        """USR1 in the master: reopen every log file and hand it to the workers' user."""
        for log_file in self.log_files.values():
            try:
                log_file.reopen()
            except OSError as exc:
                log.error(f"cannot reopen {log_file.path}: {exc.strerror}")
        config = self.current.config
        try:
            hand_over_logs([f.fd for f in self.log_files.values()], config.user, config.group)
        except (OSError, StartupError) as exc:
            log.error(f"cannot hand the log files to {config.user}: {exc}")
