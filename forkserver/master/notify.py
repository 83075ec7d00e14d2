"""What the master tells systemd: READY, RELOADING, STOPPING, STATUS and the watchdog.

Owns the timing of WATCHDOG=1 and STATUS= (service.sd_notify sends them). Must not
decide the master's state: the supervisor calls it at each transition.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from forkserver.service import sd_notify, watchdog_interval

STATUS_SECONDS = 5.0  # how often systemd's STATUS= is refreshed while serving


class Notifier:
    def __init__(self, pid: int, status_line: Callable[[], str]) -> None:
        self.status_line = status_line
        self.watchdog_interval = watchdog_interval(pid)
        self.next_watchdog = 0.0
        self.next_status = 0.0

    def started(self, pid: int) -> None:
        """Daemonizing changes our pid; the watchdog may be meant for the new one."""
        self.watchdog_interval = watchdog_interval(pid)

    def ready(self, now: float) -> None:
        sd_notify("READY=1\n" + self.status_line())
        self.next_status = now + STATUS_SECONDS

    def reload_done(self) -> None:
        sd_notify("READY=1\n" + self.status_line())

    def reloading(self) -> None:
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        sd_notify("STOPPING=1")

    def ping(self, now: float, healthy: Callable[[float], bool]) -> None:
        """WATCHDOG=1 while healthy (STATUS= rides along), and STATUS= every few seconds.

        Healthy: some generation serves, and a worker has beaten its heartbeat lately. A
        pool stuck in a crash loop or wedged as a whole stops the pings, so systemd's
        WatchdogSec= restarts the service; a hung master stops them by itself.
        """
        if self.watchdog_interval and now >= self.next_watchdog and healthy(now):
            sd_notify("WATCHDOG=1\n" + self.status_line())
            self.next_watchdog = now + self.watchdog_interval
            self.next_status = now + STATUS_SECONDS
        elif now >= self.next_status:
            sd_notify(self.status_line())
            self.next_status = now + STATUS_SECONDS
