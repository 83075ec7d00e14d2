"""Issue 13 end to end: a 100-byte request must not tie up a worker.

One worker, so the next client can only be served if the hostile request left it
free; its pid must not change (the master did not have to replace a hung worker).
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support import cpu_seconds, get, running, status_of, wait_for

BODY = b"any file\n"
# The request of issue 13: each comma once doubled the time If-None-Match took.
HOSTILE = (
    b"GET /any-existing-file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b'If-None-Match: "a",' + b"," * 30 + b"x\r\n\r\n"
)


def test_comma_flood_in_if_none_match_leaves_the_worker_serving(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "any-existing-file").write_bytes(BODY)
    with running(tmp_path, {"docroot": str(root), "workers": 1}) as server:
        [worker] = server.workers()
        cpu_before = cpu_seconds(worker)
        hostile = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with hostile:
            hostile.sendall(HOSTILE)
            answer = bytearray()

            def answered() -> bool:
                chunk = hostile.recv(65536)
                answer.extend(chunk)
                return not chunk  # Connection: close, so the answer ends with EOF

            wait_for(answered, timeout=5, what="the answer to the hostile request")
        # A list that is not valid matches nothing: If-None-Match holds, 200 in full.
        assert status_of(bytes(answer)) == 200
        assert answer.endswith(BODY)

        second = wait_for(lambda: get(server.port, "/any-existing-file"), timeout=5,
                          what="a second client served")
        assert status_of(second) == 200
        assert server.workers() == [worker]
        assert cpu_seconds(worker) - cpu_before < 1.0
