"""The master process: supervises generations of workers; never accepts or parses HTTP.

supervisor.py (the loop, signals, the named State), pool.py (spawn, retire, reap,
back-off, heartbeats), restarts.py (why a worker ended: the table), generations.py
(generations and their log files), reload.py (HUP), upgrade.py (USR2 hand-off),
sockets.py (unix socket files), outcome.py (what `-s reload|upgrade` is told),
process.py (StartInfo, the fork/kill/waitpid/clock seam). Never imports the worker
package: cli.py hands the worker's entry function in (workerspec.WorkerMain).
"""

from forkserver.master.process import SYSTEM, ProcessOps, StartInfo, describe_status
from forkserver.master.supervisor import Master, State
from forkserver.master.upgrade import SOCKET_ACTIVATED_ENV, UPGRADE_FROM_ENV, Upgrade

__all__ = [
    "SOCKET_ACTIVATED_ENV", "SYSTEM", "UPGRADE_FROM_ENV", "Master", "ProcessOps", "StartInfo",
    "State", "Upgrade", "describe_status",
]
