"""systemd's notification protocol: sd_notify(3) and the watchdog interval.

Owns talking to NOTIFY_SOCKET and reading WATCHDOG_USEC/WATCHDOG_PID. Must not decide
when to notify (the master does). Sockets passed by LISTEN_FDS are adopted by
listeners.py, which owns every way a listener comes to be.
"""

from __future__ import annotations

import os
import socket


def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's NOTIFY_SOCKET (sd_notify(3)); False when unset."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval(pid: int) -> float:
    """Half of systemd's WATCHDOG_USEC when the watchdog is meant for ``pid``, else 0.

    sd_watchdog_enabled(3): WATCHDOG_PID, when set, names the process that must ping.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    owner = os.environ.get("WATCHDOG_PID", str(pid))
    if not usec.isdigit() or int(usec) == 0 or owner != str(pid):
        return 0.0
    return int(usec) / 2_000_000
