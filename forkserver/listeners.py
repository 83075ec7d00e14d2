"""Listening sockets: bind them, adopt them from systemd, or inherit them on upgrade.

Owns socket creation (TCP, and unix domain sockets with their file: stale-socket
replacement, mode, owner, removal) and the environment variables that carry listening
fds across exec (``LISTEN_FDS``/``LISTEN_PID`` from systemd, ``FORKSERVER_FDS`` from an
upgrading master). Must not accept connections or know about HTTP, workers or
signals; when a socket file is removed is the master's decision.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import pwd
import socket
import stat
from collections.abc import MutableMapping, Sequence

from forkserver.config import UNIX_PREFIX
from forkserver.config.model import ListenEntry
from forkserver.errors import StartupError

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed descriptors start at fd 3
INHERIT_ENV = "FORKSERVER_FDS"  # comma-separated fd numbers handed to an upgraded master


def describe(sock: socket.socket, tls: bool = False) -> str:
    """``http://HOST:PORT`` (``https://`` for a TLS listener; IPv6 hosts in brackets)."""
    address = sock.getsockname()
    scheme = "https" if tls else "http"
    if sock.family == socket.AF_INET6:
        return f"{scheme}://[{address[0]}]:{address[1]}"
    if sock.family == socket.AF_INET:
        return f"{scheme}://{address[0]}:{address[1]}"
    return f"unix:{address}" + (" (https)" if tls else "")


def bind_entries(
    entries: Sequence[ListenEntry], backlog: int, mode: str | None = None,
    owner: str | None = None, reuse: Sequence[socket.socket] = (),
) -> tuple[list[socket.socket], list[socket.socket]]:
    """(the listeners for ``entries``, in order; those of them bound now).

    A socket of ``reuse`` that already listens where an entry asks is taken as it is
    (a reload keeps its sockets); the others are bound. On failure every socket bound
    here is closed again and StartupError says why.
    """
    listeners: list[socket.socket] = []
    bound: list[socket.socket] = []
    spare = list(reuse)
    try:
        for entry in entries:
            found = next((s for s in spare if same_address(s, entry.host, entry.port)), None)
            if found is not None:
                spare.remove(found)
                listeners.append(found)
                continue
            sock = bind_listener(entry.host, entry.port, backlog, mode, owner)
            bound.append(sock)
            listeners.append(sock)
    except StartupError:
        for sock in bound:
            path = unix_socket_path(sock)
            sock.close()
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # ours, created a moment ago
        raise
    return listeners, bound


def bind_listener(
    host: str, port: int, backlog: int, mode: str | None = None, owner: str | None = None
) -> socket.socket:
    """Bind and listen on host:port or ``unix:PATH``. Raises StartupError with a reason.

    ``mode`` (octal text) and ``owner`` (``user:group``) apply to a unix socket's file.
    """
    if host.startswith(UNIX_PREFIX):
        return bind_unix_listener(host[len(UNIX_PREFIX) :], backlog, mode, owner)
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


# Linux lists the machine's addresses here (per network namespace); elsewhere, or
# without /proc, the locality check is skipped and bind(2) has the last word.
IPV4_LOCAL_TABLE = "/proc/net/fib_trie"
IPV6_ADDRESSES = "/proc/net/if_inet6"
NONLOCAL_BIND = {4: "/proc/sys/net/ipv4/ip_nonlocal_bind", 6: "/proc/sys/net/ipv6/ip_nonlocal_bind"}


def host_problems(host: str, port: int) -> list[str]:
    """The host must resolve (as bind_listener resolves it) to an address of this machine.

    For --check and start-up (a unix: host is config.environment_problems' to check).
    Otherwise --check would pass a configuration whose start-up fails with exit 1,
    which systemd's Restart=on-failure turns into a restart loop. Resolving a name
    here is what the bind at start-up does anyway; a port already in use is still
    found only at start-up.
    """
    if host.startswith(UNIX_PREFIX):
        return []
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        return [f"host: {host!r} does not resolve: {exc.strerror}"]
    address = str(infos[0][4][0])  # the one bind_listener binds
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return []
    reason = nonlocal_reason(ip)
    if reason is None:
        return []
    literal = host.partition("%")[0] == address
    named = "" if literal else f" (resolves to {address})"
    return [f"host: {host!r}{named} {reason}"]


def nonlocal_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why bind(2) would refuse ``ip`` on this machine (EADDRNOTAVAIL), or None."""
    if ip.version == 6 and not os.path.exists(IPV6_ADDRESSES) and os.path.isdir("/proc/net"):
        return "is an IPv6 address, and IPv6 is off on this machine"
    if ip.is_unspecified or read_flag(NONLOCAL_BIND[ip.version]):
        return None
    local = local_networks(ip.version)
    if local is None or any(ip in network for network in local):
        return None
    return "is not an address of this machine (see ip address)"


def read_flag(path: str) -> bool:
    try:
        with open(path) as stream:
            return stream.read().strip() not in ("", "0")
    except OSError:
        return False


def local_networks(version: int) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    """The networks bind(2) accepts for IP ``version``, or None if they cannot be read."""
    try:
        with open(IPV6_ADDRESSES if version == 6 else IPV4_LOCAL_TABLE) as stream:
            text = stream.read()
    except OSError:
        return None
    if version == 6:  # "00000000000000000000000000000001 01 80 10 80 lo" per address
        return [
            ipaddress.IPv6Network(int(line.split()[0], 16))
            for line in text.splitlines() if line.strip()
        ]
    # The trie lists each prefix as "|-- 127.0.0.0" followed by "/8 host LOCAL" lines;
    # "host LOCAL" entries are the machine's own (127.0.0.0/8 included whole).
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    prefix = ""
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["|--"] and len(words) == 2:
            prefix = words[1]
        elif words[:1] and words[0].startswith("/") and words[1:3] == ["host", "LOCAL"]:
            networks.append(ipaddress.IPv4Network(f"{prefix}{words[0]}", strict=False))
    return networks


# How long a connect() to an existing socket file may take to tell a live server from
# a stale file. A live server whose backlog is full does not answer in time either.
PROBE_SECONDS = 2.0


def bind_unix_listener(
    path: str, backlog: int, mode: str | None, owner: str | None
) -> socket.socket:
    """Listen on a unix domain socket at ``path``, replacing a stale socket file.

    The file is created with mode 0600 (umask 0177 around bind) and only then given
    its owner and mode, so it is never reachable by more clients than configured.
    Without ``mode`` it gets what bind(2) gives under the process umask.
    """
    where = f"unix:{path}"
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {where}: {exc.strerror}") from None
    finally:
        os.umask(umask)
    try:
        set_socket_permissions(path, mode or f"{0o777 & ~umask:04o}", owner)
        sock.listen(backlog)
    except (OSError, StartupError) as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise StartupError(f"cannot listen on {where}: {reason}") from None
    return sock


def remove_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live one or a non-socket."""
    where = f"unix:{path}"
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"cannot listen on {where}: {exc.strerror}") from None
    if not stat.S_ISSOCK(status.st_mode):
        raise StartupError(f"cannot listen on {where}: the file exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_SECONDS)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        pass  # a file without a listener: left behind by a server that died
    except TimeoutError:
        raise StartupError(
            f"cannot listen on {where}: a server listens there (its queue is full)"
        ) from None
    except OSError as exc:
        raise StartupError(f"cannot listen on {where}: {exc.strerror}") from None
    else:
        raise StartupError(f"cannot listen on {where}: another server is listening there")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # someone else cleaned up first
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {where}: cannot remove the stale socket: {exc.strerror}"
        ) from None


def set_socket_permissions(path: str, mode: str | None, owner: str | None) -> None:
    """chown to ``owner`` (``user``, ``user:group``, ``:group``), then chmod to ``mode``.

    None leaves that part as it is.
    """
    if owner:
        user, _, group = owner.partition(":")
        try:
            uid = pwd.getpwnam(user).pw_uid if user else -1
            gid = grp.getgrnam(group).gr_gid if group else -1
        except KeyError:
            raise StartupError(f"socket_owner {owner!r}: no such user or group") from None
        os.chown(path, uid, gid)
    if mode:
        os.chmod(path, int(mode, 8))


def unix_socket_path(sock: socket.socket) -> str | None:
    """The file a listening unix socket is bound to; None for TCP or an abstract name."""
    if sock.family != socket.AF_UNIX or sock.fileno() < 0:
        return None
    try:
        name = sock.getsockname()
    except OSError:
        return None
    return name if isinstance(name, str) and name.startswith("/") else None


FileIdentity = tuple[int, int]  # (st_dev, st_ino) of a socket file


def socket_file_identity(path: str) -> FileIdentity | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def remove_socket_file(path: str, identity: FileIdentity) -> bool:
    """Unlink ``path`` if it is still the file we created (another server may own it now)."""
    if socket_file_identity(path) != identity:
        return False
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


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
    if host.startswith(UNIX_PREFIX):
        return unix_socket_path(sock) == host[len(UNIX_PREFIX) :]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    want = infos[0][4]
    have = sock.getsockname()
    if sock.family != infos[0][0]:
        return False
    return bool(have[0] == want[0] and (port == 0 or have[1] == want[1]))
