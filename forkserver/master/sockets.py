"""Unix socket files the master created: when each one is removed.

Owns the identity (st_dev, st_ino) of every socket file this master bound or
adopted (never systemd's: the .socket unit owns those), closing a listener with its
file, and applying a reload's socket_mode/socket_owner. Must not bind (listeners.py)
or decide when a listener is given up (supervisor.py, generations.py).
"""

from __future__ import annotations

import socket

from forkserver.config import Config
from forkserver.errors import StartupError
from forkserver.listeners import (
    FileIdentity,
    remove_socket_file,
    set_socket_permissions,
    socket_file_identity,
    unix_socket_path,
)
from forkserver.logs import ErrorLog


class SocketFiles:
    def __init__(self) -> None:
        self.files: dict[str, FileIdentity] = {}

    def remember(self, listeners: list[socket.socket]) -> None:
        for sock in listeners:
            path = unix_socket_path(sock)
            identity = socket_file_identity(path) if path else None
            if path and identity:
                self.files[path] = identity

    def close(self, sock: socket.socket, keep_file: bool, log: ErrorLog) -> None:
        """Close our copy of a listener; a unix socket's file goes with it.

        Not when ``keep_file`` (an upgrade under way: the new master listens on the same
        socket and file, and removes the file when it stops). Only our own file is
        removed (a server started after we stopped listening may have replaced it).
        """
        path = unix_socket_path(sock)
        sock.close()
        identity = self.files.pop(path, None) if path else None
        if path and identity and not keep_file and remove_socket_file(path, identity):
            log.info(f"removed socket file {path}")

    def update_permissions(
        self, listeners: list[socket.socket], config: Config, log: ErrorLog
    ) -> None:
        """A reload that keeps a unix socket applies its (possibly new) mode and owner."""
        for sock in listeners:
            path = unix_socket_path(sock)
            if path is None or path not in self.files:
                continue
            try:
                set_socket_permissions(path, config.socket_mode, config.socket_owner)
            except (OSError, StartupError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                log.error(f"reload: cannot set the mode or owner of {path}: {reason}")
