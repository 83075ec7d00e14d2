"""Accepting connections: the listeners, the descriptor reserve, pausing when full.

Owns the worker's listening sockets from the moment it starts serving to the drain
(when it takes what waits in the accept queue and closes them), one accept per
wake-up, the spare descriptors given back when the table is full, and the pause
that keeps a full table from spinning the loop. Must not read from or answer a
connection: a new one goes into the connection table in READING (or the PROXY
phase) and the loop takes it from there.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import socket
from collections.abc import Callable

from forkserver.http.proxy import UNIX_CLIENT
from forkserver.logs import ErrorLog
from forkserver.worker.connection import Connection

# Accepts per wake-up. One: with EPOLLEXCLUSIVE the first idle worker is woken for
# every new connection, so a larger batch lets one worker take a whole burst while the
# other idles (measured: 50 wrk connections split 51/1 in half the trials with 64,
# halving throughput; with 1 they split evenly and 1 KiB keep-alive ran 29-38k req/s
# instead of 10-35k, while Connection: close throughput stayed within 3%).
ACCEPT_BATCH = 1
EMFILE_PAUSE_SECONDS = 0.5  # accept pause when the descriptor table is full
EMFILE_WARN_SECONDS = 60.0  # one "pausing accepts" warning per this long, not one per pause
# Descriptors held in reserve and given back when accept() finds the table full, so the
# connections already open can still open the files they ask for (a walk holds at most
# a directory and a file at once; a response in flight keeps its file until it is sent).
RESERVE_DESCRIPTORS = 8
# accept() errors that mean "no room for another connection" rather than "that client
# is gone": this process's descriptor table (EMFILE), the system's (ENFILE), or kernel
# memory for the socket (ENOMEM, ENOBUFS). The connection stays queued and the
# listener stays readable, so retrying at once fails the same way and level-triggered
# EPOLLIN spins the CPU: these pause accepting. Any other error (ECONNABORTED, EPROTO,
# EPERM from a firewall) concerns one client only; the next accept is tried as usual.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def client_address(address: object) -> str:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host[7:] if host.startswith("::ffff:") else host
    return UNIX_CLIENT  # AF_UNIX peers have no address


class Acceptor:
    """Accepts from the worker's listeners into its connection table.

    ``admit`` is the PROXY phase's gate when proxy_protocol is on, else None (then
    accepting costs one ``is not None`` more).
    """

    def __init__(
        self, listeners: list[socket.socket], epoll: select.epoll,
        connections: dict[int, Connection], header_seconds: float, error_log: ErrorLog,
        admit: Callable[[Connection, object], bool] | None, clock: Callable[[], float],
    ) -> None:
        self.listeners = {sock.fileno(): sock for sock in listeners}
        self.families = {sock: int(sock.family) for sock in listeners}
        self.epoll = epoll
        self.connections = connections
        self.header_seconds = header_seconds
        self.error_log = error_log
        self.admit = admit
        # TLS listeners (worker/tlsphase.py): their connections start with a handshake.
        self.tls_admit: Callable[[Connection], bool] | None = None
        self.secure: set[socket.socket] = set()
        self.clock = clock
        self.paused_until = 0.0  # 0.0: not paused
        self.warned_at = -EMFILE_WARN_SECONDS
        self.reserve: list[int] = []

    def start(self) -> None:
        for fd, sock in self.listeners.items():
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # Accepted sockets inherit it, which saves a setsockopt per connection.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # EPOLLEXCLUSIVE: one idle worker wakes per incoming connection, not all.
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self.fill_reserve()

    def stop(self) -> None:
        """Take what already waits in the accept queues, then close the listeners.

        When the last copy of a listening socket closes, the kernel resets the
        connections queued on it (they would see a RST for a request nobody refused).
        Taken, they are answered with Connection: close.
        """
        for fd, sock in self.listeners.items():
            while self.accept_batch(sock) == ACCEPT_BATCH:
                pass
            if not self.paused_until:
                self.epoll.unregister(fd)
            sock.close()
        self.listeners.clear()  # in place: the worker's loop holds this dict
        self.paused_until = 0.0

    def accept_batch(self, listener: socket.socket) -> int:
        """Accept up to ACCEPT_BATCH connections; return how many were accepted."""
        deadline = self.clock() + self.header_seconds
        for accepted in range(ACCEPT_BATCH):
            try:
                # The C-level accept (accept4 with SOCK_CLOEXEC) and a bare _socket
                # object: socket.socket.accept() converts family and type to enums and
                # runs a Python __init__ per connection (about 2 us, measured with
                # bench/hotpath.py --close); workers use nothing socket.socket adds.
                fd, address = listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return accepted
            except OSError as exc:
                if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                    self.pause(exc)
                # ECONNABORTED and friends: that client is gone; others may be waiting.
                return accepted
            sock = _socket.socket(self.families[listener], socket.SOCK_STREAM, 0, fd)
            sock.setblocking(False)  # O_NONBLOCK is not inherited; TCP_NODELAY is
            connection = Connection(sock, client_address(address), deadline)
            if self.admit is not None and not self.admit(connection, address):
                continue
            if listener in self.secure and not self.tls_admit(connection):  # type: ignore[misc]
                continue
            self.connections[connection.fd] = connection
            self.epoll.register(connection.fd, select.EPOLLIN)
        return ACCEPT_BATCH

    def pause(self, exc: OSError) -> None:
        """Stop accepting for a moment and give the reserve to the open connections."""
        # Level-triggered EPOLLIN would wake us again at once and spin the CPU; stop
        # listening for a moment and let connections finish and free descriptors. The
        # listener is unregistered, not modified: epoll refuses EPOLL_CTL_MOD on an
        # EPOLLEXCLUSIVE registration (EINVAL).
        now = self.clock()
        if not self.paused_until:
            for fd in self.listeners:
                self.epoll.unregister(fd)
        self.paused_until = now + EMFILE_PAUSE_SECONDS
        self.release_reserve()
        if now - self.warned_at >= EMFILE_WARN_SECONDS:
            self.warned_at = now
            self.error_log.warning(f"accept failed ({exc.strerror}); pausing accepts")

    def resume(self, now: float) -> None:
        # The reserve comes back first: if it cannot, the open connections are using
        # those descriptors, and accepting more would only take them away.
        if not self.fill_reserve():
            self.paused_until = now + EMFILE_PAUSE_SECONDS
            return
        self.paused_until = 0.0
        for fd in self.listeners:
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)

    def fill_reserve(self) -> bool:
        """Hold RESERVE_DESCRIPTORS spare descriptors; False if the table is too full."""
        try:
            while len(self.reserve) < RESERVE_DESCRIPTORS:
                # A copy of the epoll descriptor: needs no file, and nothing waits on it.
                self.reserve.append(os.dup(self.epoll.fileno()))
        except OSError:
            return False
        return True

    def release_reserve(self) -> None:
        for fd in self.reserve:
            os.close(fd)
        self.reserve.clear()
