"""Listening sockets: bind them, adopt them from systemd, or inherit them on upgrade.

Owns socket creation and the environment variables that carry listening fds across
exec (``LISTEN_FDS``/``LISTEN_PID`` from systemd, ``FORKSERVER_FDS`` from an upgrading
master). Must not accept connections or know about HTTP, workers or signals.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

from forkserver.errors import StartupError

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed descriptors start at fd 3
INHERIT_ENV = "FORKSERVER_FDS"  # comma-separated fd numbers handed to an upgraded master


def describe(sock: socket.socket) -> str:
    """``http://HOST:PORT`` for a listening socket (IPv6 hosts in brackets)."""
    address = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"http://[{address[0]}]:{address[1]}"
    if sock.family == socket.AF_INET:
        return f"http://{address[0]}:{address[1]}"
    return f"unix:{address}"


def bind_listener(host: str, port: int, backlog: int) -> socket.socket:
    """Bind and listen on host:port. Raises StartupError with a one-line reason."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            # Dual-stack where the OS allows: "::" also accepts IPv4-mapped peers.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise StartupError(f"cannot listen on {where}: {exc.strerror}") from None
    return sock


def _sockets_from_fds(fds: list[int]) -> list[socket.socket]:
    sockets = []
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise StartupError(f"inherited fd {fd} is not a socket: {exc.strerror}") from None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 1:
            raise StartupError(f"inherited fd {fd} is not a listening socket")
        sock.set_inheritable(False)
        sockets.append(sock)
    return sockets


def inherited_listeners(environ: MutableMapping[str, str]) -> list[socket.socket] | None:
    """Sockets handed over by an upgrading master (USR2), or None."""
    inherited = environ.pop(INHERIT_ENV, None)
    if not inherited:
        return None
    fds = []
    for text in inherited.split(","):
        if not text.isdigit():
            raise StartupError(f"{INHERIT_ENV}={inherited!r} is not a list of fd numbers")
        fds.append(int(text))
    return _sockets_from_fds(fds)


def systemd_listeners(environ: MutableMapping[str, str]) -> list[socket.socket] | None:
    """Sockets passed by systemd socket activation (sd_listen_fds(3)), or None.

    The variables are honoured only when LISTEN_PID is our pid (they may have leaked
    from a parent), and are removed so our children do not see them.
    """
    listen_pid = environ.get("LISTEN_PID")
    listen_fds = environ.get("LISTEN_FDS")
    if listen_pid is None or listen_fds is None:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    if not listen_pid.isdigit() or int(listen_pid) != os.getpid():
        return None
    if not listen_fds.isdigit() or int(listen_fds) < 1:
        return None
    count = int(listen_fds)
    return _sockets_from_fds(list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)))


def same_address(sock: socket.socket, host: str, port: int) -> bool:
    """Whether ``sock`` already listens where host:port asks (port 0 matches any)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    want = infos[0][4]
    have = sock.getsockname()
    if sock.family != infos[0][0]:
        return False
    return bool(have[0] == want[0] and (port == 0 or have[1] == want[1]))
