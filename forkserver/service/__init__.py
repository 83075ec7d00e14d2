"""The operating system's service machinery, one module per job.

pidfile.py (the locked pidfile), outcome.py (how the last reload or upgrade ended,
for `-s`), systemd.py (sd_notify, the watchdog), privileges.py (dropping privileges,
capabilities, handing logs over), daemon.py (python-daemon and the launcher's wait),
titles.py (process titles). Must not know about HTTP, connections or the worker
pool's policy. This module re-exports what cli, master, worker and tests import.
"""

from forkserver.service.daemon import DAEMON_SIGNAL_MAP, DaemonLink, daemonize
from forkserver.service.outcome import (
    Outcome,
    outcome_path,
    read_outcome,
    remove_outcome,
    write_outcome,
)
from forkserver.service.pidfile import Pidfile, process_alive, read_pid
from forkserver.service.privileges import (
    MASTER_CAPABILITIES,
    drop_privileges,
    hand_over_logs,
    limit_capabilities,
    resolve_account,
    root_workers_warning,
    switches_user,
)
from forkserver.service.systemd import sd_notify, watchdog_interval
from forkserver.service.titles import set_title

__all__ = [
    "DAEMON_SIGNAL_MAP", "MASTER_CAPABILITIES", "DaemonLink", "Outcome", "Pidfile",
    "daemonize", "drop_privileges", "hand_over_logs", "limit_capabilities",
    "outcome_path", "process_alive", "read_outcome", "read_pid", "remove_outcome",
    "resolve_account", "root_workers_warning", "sd_notify", "set_title", "switches_user",
    "watchdog_interval", "write_outcome",
]
