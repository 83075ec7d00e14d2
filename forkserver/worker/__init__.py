"""The worker process: one epoll event loop that accepts, reads, answers and logs.

loop.py runs the cycle (signals, drain, sweep) and drives accepting.py (listeners,
descriptor reserve), reading.py (requests off a connection), connection.py (the
connection's state and the send path), proxyphase.py (the PROXY header) and
status.py (the status endpoint's plans). Must not know about other workers and
generations (the master does); the master never imports this package: cli.py hands
it ``run_worker``.
"""

from forkserver.worker.connection import Connection
from forkserver.worker.loop import SWEEP_SECONDS, Worker, run_worker
from forkserver.workerspec import WorkerSpec  # what run_worker takes; the master builds it

__all__ = ["SWEEP_SECONDS", "Connection", "Worker", "WorkerSpec", "run_worker"]
