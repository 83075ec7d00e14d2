"""Protection: per-client limits across workers, a minimum send rate, memory-capped workers.

Owns the shared per-client table (``clients``), the worker's admission decisions
(``admission``), the slow-reader tracker (``sendrate``) and the worker memory policy
(``memory``) of SPEC §9; the keys and their checks are the config package's
(config/model.py, config/protection.py).
Must not touch sockets, signals or processes: the worker and the master call in
with the time, the client address and the numbers they read.
"""

from forkserver.protect.admission import Admission, ClientLimits
from forkserver.protect.clients import ClientTable, Exempt, client_key
from forkserver.protect.memory import MemoryPolicy, resident_bytes
from forkserver.protect.sendrate import SendRate

__all__ = [
    "Admission", "ClientLimits", "ClientTable", "Exempt", "MemoryPolicy", "SendRate",
    "client_key", "resident_bytes",
]
