"""How many workers the shared memory has room for: the one source of that number.

Owns the scoreboard's slot count and the worker cap derived from it. A core module
(no I/O, no imports of ours) so that both the configuration's check of ``workers``
(core) and the scoreboard and master (outer layers) can import it. Must not hold
any other limit: request and connection limits live with their owners.
"""

from __future__ import annotations

# Slots in the scoreboard's shared memory: one per running worker process. Part of
# the scoreboard's layout (the status endpoint and tests read it); do not change it.
SCOREBOARD_SLOTS = 1024

# During a reload the new generation boots while the old one still serves, each
# worker holding a slot: half the slots keeps a reload of a full pool possible. The
# configuration refuses a larger `workers`, and TTIN stops here.
MAX_WORKERS = SCOREBOARD_SLOTS // 2
