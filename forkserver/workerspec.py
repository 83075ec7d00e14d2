"""WorkerSpec: the one record a freshly forked worker is handed by the master.

Owns the list of what a worker starts from, and nothing else: the master builds it
(master/pool.py) and the worker's entry function takes it (``run_worker(spec)``), so
neither imports the other. Must not grow behaviour: it is a value.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from forkserver.config import Config
from forkserver.logs import AccessLog, ErrorLog
from forkserver.protect.clients import ClientTable
from forkserver.scoreboard import Scoreboard
from forkserver.tls.generation import GenerationTls


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the master hands a freshly forked worker."""

    number: int  # 1-based position in its generation, for the process title
    generation: int
    slot: int  # its scoreboard slot, claimed by the master before fork
    config: Config
    listeners: list[socket.socket]  # the generation's listeners (shared, never rebound)
    scoreboard: Scoreboard
    master_pid: int
    error_log: ErrorLog
    access_log: AccessLog
    max_requests: int  # 0 = never recycle; jitter already added by the master
    tls: GenerationTls | None = None  # the generation's TLS contexts and TLS listeners
    # The per-client table shared by every worker (forkserver/protect/clients.py),
    # made by the master before the first fork; the worker's column is found by slot.
    clients: ClientTable | None = None


# The worker's entry point as the master sees it: runs in the forked child and
# returns the exit status for os._exit. cli.py hands worker.run_worker in.
WorkerMain = Callable[[WorkerSpec], int]
