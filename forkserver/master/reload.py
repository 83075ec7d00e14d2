"""HUP: preparing the next generation from the file, or saying why not and changing nothing.

Owns reading and checking the configuration again (relative paths mean what they
meant at start-up), binding a changed address before anything else changes, opening
the new generation's log files, and the one-line summary of what changed. Must not
start workers or retire any (the pool does, once the supervisor makes the new
generation current): a refused reload leaves everything as it was.
"""

from __future__ import annotations

import socket
import traceback
from collections.abc import Callable

from forkserver.config import Config, environment_problems, load_config
from forkserver.config.listen import listen_entries
from forkserver.errors import ConfigError, StartupError
from forkserver.listeners import bind_entries, describe, same_address
from forkserver.logs import ErrorLog
from forkserver.master.generations import Generation, Generations
from forkserver.master.process import StartInfo
from forkserver.master.sockets import SocketFiles
from forkserver.tls.generation import certificate_problems, secure_fds


class RecordingErrorLog(ErrorLog):
    """Writes like the error log it stands in for, and keeps the error lines."""

    def __init__(self, original: ErrorLog) -> None:
        super().__init__(original.file)
        self.threshold = original.threshold
        self.original = original
        self.errors: list[str] = []

    def log(self, level: str, message: str) -> None:
        if level == "error":
            self.errors.append(message)
        super().log(level, message)


def describe_changes(old: Config, new: Config) -> str:
    """``workers 2→3, docroot /a→/b`` for the keys that differ."""
    changes = []
    for name in old.__dataclass_fields__:
        if name == "source":
            continue
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            changes.append(f"{name} {before}→{after}")
    return ", ".join(changes)


def reload_generation(
    source: str | None, *, start: StartInfo, generations: Generations,
    sockets: SocketFiles, socket_activated: bool,
    close_listener: Callable[[socket.socket], None],
) -> tuple[Generation | None, str]:
    """The next generation, not yet current; or None, and why not for `-s reload`.

    No reload may end the master: whatever a file or the system does to the loading
    and preparing (a bug of ours included) is an Exception logged as "reload failed",
    and the old generation goes on serving. Only what is not an Exception
    (SystemExit, KeyboardInterrupt) goes through. The error lines logged meanwhile
    are the reason; they are collected by lending the current generation a recording
    error log for the duration, so the steps themselves need no reporting code.
    """
    old = generations.current
    recorder = RecordingErrorLog(old.error_log)
    old.error_log = recorder
    try:
        try:
            generation = prepare_generation(
                source, start=start, generations=generations, sockets=sockets,
                socket_activated=socket_activated, close_listener=close_listener,
            )
        except Exception as exc:
            where = traceback.format_exc().rstrip().replace("\n", " | ")
            recorder.error(
                f"reload failed: unexpected {type(exc).__name__}: {exc}; still serving "
                f"generation {old.number} ({where})"
            )
            generation = None
    finally:
        old.error_log = recorder.original
    return generation, "; ".join(recorder.errors) or "reload failed (see the error log)"


def prepare_generation(
    source: str | None, *, start: StartInfo, generations: Generations,
    sockets: SocketFiles, socket_activated: bool,
    close_listener: Callable[[socket.socket], None],
) -> Generation | None:
    """The next generation, not yet current; None (with the reasons logged) if refused."""
    old = generations.current
    log = old.error_log
    try:
        # Relative command-line paths mean what they meant at start-up, even after
        # daemonizing changed the working directory to /.
        config = load_config(source, start.overrides, cwd=start.cwd)
        # What --check and start-up refuse (docroot unreadable, log directory
        # missing, unknown user) is refused by a reload too, before anything changes.
        # Certificates are read again: a renewed one is served by the new generation,
        # a broken one refuses the reload (SPEC §6).
        problems = environment_problems(config) + certificate_problems(config)
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        for problem in problems:
            log.error(f"reload: {problem}")
        log.error(f"reload failed; still serving generation {old.number}")
        return None
    listeners = old.listeners
    entries = listen_entries(config)
    if not socket_activated and not (len(entries) == len(old.listeners) and all(
        same_address(s, e.host, e.port) for s, e in zip(old.listeners, entries, strict=True)
    )):
        try:
            listeners, bound = bind_entries(entries, config.backlog, config.socket_mode,
                                            config.socket_owner, reuse=old.listeners)
        except StartupError as exc:
            log.error(f"reload: {exc}; still serving generation {old.number}")
            return None
        sockets.remember(bound)
        secure = secure_fds(config, listeners)
        for sock in bound:
            log.info(f"reload: now listening on {describe(sock, sock.fileno() in secure)}")
    elif config.socket_mode or config.socket_owner:
        sockets.update_permissions(old.listeners, config, log)
    try:
        generation = generations.make(old.number + 1, config, listeners)
    except BaseException as exc:
        # A listener bound for this reload serves nobody now: close it (and its
        # socket file), or the new port would stay bound with no worker behind it.
        for sock in listeners:
            if sock not in old.listeners:
                close_listener(sock)
        if not isinstance(exc, OSError):
            raise
        log.error(f"reload: cannot open log file: {exc.strerror}; still serving")
        return None
    changes = describe_changes(old.config, config)
    generation.error_log.info(  # the new generation's log: it may be another file
        f"reload: generation {generation.number} starting with {generation.target} "
        f"workers ({changes or 'no changes'}); generation {old.number} serves until it is ready"
    )
    return generation
