"""USR2: handing the listening sockets to a new master started from the installed code.

Owns both sides of the hand-off and its named state (Upgrade): the old master forks
and execs ``python -m forkserver`` with the same arguments, the listening fds in
FORKSERVER_FDS and its pid in FORKSERVER_UPGRADE_FROM (UPGRADING until the successor
exits or sends TERM); the new master, once its workers serve, rewrites the pidfile,
tells systemd MAINPID= and asks the old master to retire (TAKING_OVER until then).
Must not touch the pool: the old master keeps serving throughout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from enum import Enum

from forkserver.errors import StartupError
from forkserver.listeners import INHERIT_ENV
from forkserver.logs import ErrorLog
from forkserver.master.outcome import Outcomes
from forkserver.master.process import ProcessOps, StartInfo, describe_status
from forkserver.service import Pidfile, sd_notify

UPGRADE_FROM_ENV = "FORKSERVER_UPGRADE_FROM"  # pid of the master we are replacing
SOCKET_ACTIVATED_ENV = "FORKSERVER_SOCKET_ACTIVATED"  # "1": inherited fds came from systemd


class Upgrade(Enum):
    NONE = "none"
    UPGRADING = "upgrading"  # USR2: our successor boots on our sockets; we serve on
    TAKING_OVER = "taking_over"  # we are the successor: once we serve, the old one goes


class Handoff:
    """One master's part in an upgrade: the successor it started, or the predecessor
    it replaces (a master started by USR2 cannot start another before it serves)."""

    def __init__(self, processes: ProcessOps, predecessor: int = 0) -> None:
        self.processes = processes
        self.predecessor = predecessor  # the old master, until we serve
        self.successor = 0  # the new master we forked, until it exits

    @property
    def state(self) -> Upgrade:
        if self.successor:
            return Upgrade.UPGRADING
        if self.predecessor:
            return Upgrade.TAKING_OVER
        return Upgrade.NONE

    # -- the old master ---------------------------------------------------------------
    def begin(self, listeners: list[socket.socket], start: StartInfo, master_pid: int,
              socket_activated: bool) -> int:
        """Fork and exec the successor with our listeners; its pid (OSError if no fork)."""
        for sock in listeners:
            sock.set_inheritable(True)
        env = dict(os.environ)
        env[INHERIT_ENV] = ",".join(str(s.fileno()) for s in listeners)
        env[UPGRADE_FROM_ENV] = str(master_pid)
        if socket_activated:
            env[SOCKET_ACTIVATED_ENV] = "1"
        argv = [sys.executable, "-m", "forkserver", *start.argv]
        try:
            pid = self.processes.fork()
        except OSError:
            for sock in listeners:
                sock.set_inheritable(False)
            raise
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                os.chdir(start.cwd)
                if "WATCHDOG_PID" in env:  # the watchdog follows MAINPID to the new master
                    env["WATCHDOG_PID"] = str(os.getpid())
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(1)
        for sock in listeners:
            sock.set_inheritable(False)
        self.successor = pid
        return pid

    def successor_exited(self, status: int, log: ErrorLog, outcomes: Outcomes) -> None:
        """The new master ended before it took over: we go on serving."""
        pid, self.successor = self.successor, 0
        log.error(f"upgrade failed: new master {pid} {describe_status(status)}; still serving")
        outcomes.report("upgrade", False, f"new master {pid} {describe_status(status)} "
                        f"(its error log says why); still serving")

    # -- the new master ---------------------------------------------------------------
    def take_over(self, pid: int, pidfile: Pidfile | None, log: ErrorLog,
                  outcomes: Outcomes) -> None:
        """Our workers serve: the pidfile and systemd name us, and the old master goes."""
        if pidfile is not None:
            try:
                pidfile.write(pid)
            except StartupError as exc:
                log.error(str(exc))
        sd_notify(f"MAINPID={pid}")
        outcomes.report("upgrade", True, f"new master {pid} serving")
        with contextlib.suppress(ProcessLookupError):
            self.processes.kill(self.predecessor, signal.SIGTERM)
        log.info(f"upgrade: serving; asked the old master {self.predecessor} to retire")
        self.predecessor = 0
