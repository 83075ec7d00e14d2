"""A soak load: many requests of every kind the server answers, every byte checked.

``build_site`` writes a docroot whose content this module knows; ``run_client`` sends
``count`` requests drawn (with a seed) from a weighted mix — cached small files,
64 KiB and larger sendfile bodies, 404s, HEAD, single, suffix and multipart ranges,
conditional requests (304 and 200), refused methods (405, 501), directory redirects
— on keep-alive connections that are closed and reopened every 1-100 requests,
with some requests pipelined and some asking ``Connection: close``, and now and
then a download of the large file abandoned after its first bytes. Every response is
checked: status, Content-Length against the body actually framed, and the body
bytes. Any difference, reset, timeout or unexpected close is a failure.

Run as ``python -m tests.soak PORT COUNT SEED`` it prints its tally as JSON, so a
test can run several clients as separate processes (one Python thread cannot keep
two workers busy).
"""

from __future__ import annotations

import json
import random
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.load import IdleClosed, Response, read_message

SMALL = {f"/s{i}.txt": bytes([97 + i]) * 1024 for i in range(3)}  # in the open-file cache
EDGE = "/edge.bin"  # exactly 64 KiB: the largest cached size
MEDIUM = "/medium.bin"  # 100 KiB: sendfile
LARGE = "/large.bin"  # 1 MiB: several sendfile calls
SUB_INDEX = b"<p>sub</p>\n"
ABANDON_RATE = 0.002  # per request: a separate download abandoned mid-body


def site_files() -> dict[str, bytes]:
    generator = random.Random(8)
    return {
        **SMALL,
        EDGE: generator.randbytes(64 * 1024),
        MEDIUM: generator.randbytes(100 * 1024),
        LARGE: generator.randbytes(1024 * 1024),
        "/sub/index.html": SUB_INDEX,
    }


def build_site(root: Path) -> Path:
    for path, content in site_files().items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


@dataclass
class Case:
    """One kind of request and what its answer must be."""

    method: str
    path: str
    status: int
    body: bytes | None = None  # None: any body whose length matches Content-Length
    fields: dict[str, str] = field(default_factory=dict)
    parts: list[bytes] = field(default_factory=list)  # multipart: each must be in the body
    close: bool = False

    def raw(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", "Host: soak"]
        lines += [f"{name}: {value}" for name, value in self.fields.items()]
        if self.close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def check(self, response: Response) -> str | None:
        """What is wrong with ``response``, or None."""
        if response.status != self.status:
            return f"{self.method} {self.path}: status {response.status}, not {self.status}"
        if self.body is not None and response.body != self.body:
            return f"{self.method} {self.path}: {len(response.body)} wrong body bytes"
        for part in self.parts:
            if part not in response.body:
                return f"{self.method} {self.path}: a multipart part is missing"
        if self.method == "HEAD" and self.body is None and response.body:
            return f"HEAD {self.path}: a body"
        if self.close and not response.closes:
            return f"{self.method} {self.path}: no Connection: close"
        return None


def cases(validators: dict[str, tuple[str, str]]) -> list[tuple[int, Case]]:
    """(weight, case) for the whole mix; ``validators`` maps path → (ETag, Last-Modified)."""
    files = site_files()
    medium, large = files[MEDIUM], files[LARGE]
    mix: list[tuple[int, Case]] = []
    for path, content in SMALL.items():
        mix.append((10, Case("GET", path, 200, content)))
        mix.append((3, Case("HEAD", path, 200, b"")))
    mix += [
        (5, Case("GET", EDGE, 200, files[EDGE])),
        (8, Case("GET", MEDIUM, 200, medium)),
        (2, Case("GET", LARGE, 200, large)),
        (2, Case("HEAD", LARGE, 200, b"")),
        (8, Case("GET", "/missing.html", 404)),
        (2, Case("GET", "/sub/../../etc/passwd", 400)),
        (6, Case("GET", MEDIUM, 206, medium[1000:5000], {"Range": "bytes=1000-4999"})),
        (3, Case("GET", LARGE, 206, large[-4096:], {"Range": "bytes=-4096"})),
        (3, Case("GET", MEDIUM, 206, None, {"Range": "bytes=0-99,50000-50199"},
                 parts=[medium[0:100], medium[50000:50200]])),
        (2, Case("GET", "/s0.txt", 416, None, {"Range": "bytes=5000-6000"})),
        (3, Case("POST", "/s0.txt", 405)),
        (1, Case("BREW", "/s0.txt", 501)),
        (2, Case("GET", "/sub", 301)),
        (2, Case("GET", "/sub/", 200, SUB_INDEX)),
        (3, Case("GET", "/s1.txt", 200, SMALL["/s1.txt"], close=True)),
    ]
    for path in ("/s2.txt", MEDIUM, LARGE):
        tag, modified = validators[path]
        mix += [
            (4, Case("GET", path, 304, b"", {"If-None-Match": tag})),
            (2, Case("GET", path, 304, b"", {"If-Modified-Since": modified})),
            (1, Case("GET", path, 200, files[path], {"If-None-Match": '"other"'})),
            (1, Case("GET", path, 412, None, {"If-Match": '"other"'})),
        ]
    return mix


@dataclass
class Tally:
    requests: int = 0
    connections: int = 0
    abandoned: int = 0  # downloads the client walked away from mid-body
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)


def learn_validators(port: int) -> dict[str, tuple[str, str]]:
    found = {}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buffer = bytearray()
        for path in ("/s2.txt", MEDIUM, LARGE):
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
            response = read_message(sock, buffer, head_only=True)
            found[path] = (response.headers["etag"], response.headers["last-modified"])
    return found


def abandon_download(port: int) -> None:
    """Ask for the large file, read a little of it and hang up: the server must let go."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {LARGE} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
        sock.recv(4096)


def run_client(port: int, count: int, seed: int, deadline: float = 600.0) -> Tally:
    """Send ``count`` requests (plus 3 HEADs to learn validators); stop at ``deadline`` s."""
    generator = random.Random(seed)
    tally = Tally(requests=3)
    mix = cases(learn_validators(port))
    weights = [weight for weight, _ in mix]
    choices = [case for _, case in mix]
    stop_at = time.monotonic() + deadline
    sock: socket.socket | None = None
    buffer = bytearray()
    left_on_connection = 0
    sent = 0
    while sent < count and time.monotonic() < stop_at:
        if generator.random() < ABANDON_RATE:
            abandon_download(port)
            tally.abandoned += 1
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            buffer.clear()
            tally.connections += 1
            left_on_connection = generator.randint(1, 100)
        batch = generator.choices(choices, weights, k=3 if generator.random() < 0.1 else 1)
        batch = batch[: count - sent]
        for position, case in enumerate(batch):
            if case.close:  # nothing is pipelined behind a request that ends the connection
                batch = batch[: position + 1]
                break
        try:
            sock.sendall(b"".join(case.raw() for case in batch))
            closed = False
            for case in batch:
                if closed:
                    tally.fail(f"{case.method} {case.path}: pipelined after a close")
                    break
                response = read_message(sock, buffer, head_only=case.method == "HEAD")
                tally.requests += 1
                problem = case.check(response)
                if problem:
                    tally.fail(problem)
                closed = response.closes
        except (OSError, ConnectionError, IdleClosed, ValueError, KeyError) as exc:
            tally.fail(f"{type(exc).__name__}: {exc}")
            closed = True
        sent += len(batch)
        left_on_connection -= len(batch)
        if closed or left_on_connection <= 0:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return tally


def main(argv: list[str]) -> int:
    port, count, seed = (int(value) for value in argv)
    tally = run_client(port, count, seed)
    json.dump({"requests": tally.requests, "connections": tally.connections,
               "abandoned": tally.abandoned,
               "failures": len(tally.failures), "first_failures": tally.failures[:20]},
              sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
