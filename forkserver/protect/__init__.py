"""Protection: per-client limits across workers, a minimum send rate, memory-capped workers.

Owns the shared per-client table (``clients``), the worker's admission decisions
(``admission``), the slow-reader tracker (``sendrate``), the worker memory policy
(``memory``) and the settings of SPEC §9 with their value checks (``settings``).
Must not touch sockets, signals or processes: the worker and the master call in
with the time, the client address and the numbers they read.
"""

from forkserver.protect.admission import Admission, ClientLimits
from forkserver.protect.clients import ClientTable, Exempt, client_key
from forkserver.protect.memory import MemoryPolicy, parse_size, resident_bytes
from forkserver.protect.sendrate import SendRate
from forkserver.protect.settings import Protection

__all__ = [
    "Admission", "ClientLimits", "ClientTable", "Exempt", "MemoryPolicy", "Protection",
    "SendRate", "client_key", "parse_size", "resident_bytes",
]
