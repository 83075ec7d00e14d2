"""Daemon mode: detaching with python-daemon, and the launcher's wait for readiness.

Owns DaemonLink (the pipe between launcher and daemon) and daemonize(). Must not
check anything that can fail: everything is checked before detaching (cli.py).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Iterable

from forkserver.service.pidfile import process_alive

# -- daemon mode ----------------------------------------------------------------------
DAEMON_READY_SECONDS = 30.0  # how long the launcher waits for the daemon to serve
LAUNCHER_POLL_SECONDS = 0.1  # how often the launcher looks at the daemon while waiting

# python-daemon's default map turns TERM into SystemExit and leaves HUP fatal. Ours is
# explicit: job-control signals and HUP/USR1/USR2/TTIN/TTOU are ignored in the moment
# between detaching and the master's loop, which then installs its own handlers for
# all of them; TERM, INT and QUIT keep their default (end the process) meanwhile.
DAEMON_SIGNAL_MAP: dict[int, None] = {
    signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None,
    signal.SIGHUP: None, signal.SIGUSR1: None, signal.SIGUSR2: None,
}


class DaemonLink:
    """The pipe between the launcher and the daemon it started.

    The launcher (``is_launcher``) waits on it; the daemon writes ``pid N``, then
    ``ready`` once its workers serve, or ``error MESSAGE``. So the launcher exits 0
    only when the daemon serves, and non-zero with the reason when it cannot
    (daemon(7): "the original process should exit only once the daemon is ready").
    """

    def __init__(self, fd: int, is_launcher: bool, child: int = 0) -> None:
        self.fd = fd
        self.is_launcher = is_launcher
        self.child = child  # launcher: the pid it forked (which forks the daemon)

    # -- daemon side --------------------------------------------------------------
    def _send(self, line: str) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, (line.replace("\n", " ") + "\n").encode())
        except OSError:
            self.close()  # the launcher is gone (killed, interrupted): nobody to tell

    def started(self) -> None:
        self._send(f"pid {os.getpid()}")

    def ready(self) -> None:
        self._send("ready")
        self.close()

    def failed(self, message: str) -> None:
        self._send(f"error {message}")
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- launcher side ------------------------------------------------------------
    def wait(self, timeout: float = DAEMON_READY_SECONDS) -> tuple[int, str]:
        """Wait until the daemon serves: (0, pid) or (1, reason)."""
        deadline = time.monotonic() + timeout
        pending = b""
        daemon = 0
        try:
            while True:
                self._reap_child()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return 1, f"the daemon (pid {daemon}) is not serving after {timeout:g}s"
                ready, _, _ = select.select([self.fd], [], [], min(remaining,
                                                                  LAUNCHER_POLL_SECONDS))
                if ready:
                    chunk = os.read(self.fd, 4096)
                    if not chunk:
                        return 1, "the daemon exited before it was ready"
                    pending += chunk
                    while b"\n" in pending:
                        line, _, pending = pending.partition(b"\n")
                        word, _, rest = line.decode(errors="replace").partition(" ")
                        if word == "pid" and rest.isdigit():
                            daemon = int(rest)
                        elif word == "ready":
                            return 0, str(daemon)
                        elif word == "error":
                            return 1, rest
                elif daemon and not process_alive(daemon):
                    return 1, f"the daemon (pid {daemon}) exited before it was ready"
        finally:
            self.close()

    def _reap_child(self) -> None:
        if self.child:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(self.child, os.WNOHANG)[0]:
                    self.child = 0


def daemonize(preserve: Iterable[int]) -> DaemonLink:
    """Detach from the terminal with python-daemon, keeping ``preserve`` fds open.

    Returns twice, like fork: in the launcher (``link.is_launcher``; it should
    ``wait`` and exit with the result) and in the daemon, a grandchild in a new
    session with no controlling terminal, stdin/stdout/stderr on /dev/null, cwd ``/``
    and umask 022. Everything that can fail must have been checked before.

    The launcher's own fork gives it a pipe to wait on (python-daemon's parent
    exits at once); then python-daemon forks twice with setsid in between. Its
    settings are explicit because its defaults bite: ``detach_process``
    auto-detection is wrong under systemd and in containers, the default umask is 0,
    and the default signal map ends the process on TERM and leaves HUP fatal.
    """
    import daemon  # imported here: only daemon mode pays for it

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    kept = [*preserve, write_end]
    child = os.fork()
    if child:
        os.close(write_end)
        return DaemonLink(read_end, True, child)
    os.close(read_end)
    link = DaemonLink(write_end, False)
    try:
        context = daemon.DaemonContext(
            detach_process=True,
            working_directory="/",
            umask=0o022,
            files_preserve=kept,
            signal_map=dict(DAEMON_SIGNAL_MAP),
            prevent_core=True,
        )
        context.open()  # forks twice; only the final daemon returns
    except BaseException as exc:  # in the first child: tell the launcher, never return
        link.failed(f"cannot daemonize: {exc}")
        os._exit(1)
    link.started()
    return link
