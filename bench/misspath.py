"""CPU per real-traffic request through a real worker: ``python -m bench.misspath``.

Owns the in-process harness for the site-mix and cold cases (bench/hotpath.py's for
one hot file): a real ``Worker`` serves the generated ``site`` or ``cold`` tree
(bench/sitemix.py's store) over a loopback connection, one request at a time, every
head distinct as bench/wrk_site.lua makes them (cookie counter, rotating user agent,
languages, encodings). The site's monotonic clock advances ``--interval`` per request
instead of real time, so the open-file cache's one-second window sees the same hit
rate under callgrind (50x slower) as at full speed. Reports CPU microseconds per
request; under ``valgrind --tool=callgrind`` run it with two ``--requests`` counts and
divide the difference of the instruction totals by the difference of the counts.
It must not be used for the published comparison with other servers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from bench.hotpath import RECEIVE_BYTES, build_worker, connected_pair
from bench.sitemix import COLD_TREE, SITE_TREE, ZIPF_EXPONENT, default_store, ensure_tree
from forkserver.worker import Worker

AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
LANGUAGES = ("en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9,en;q=0.7")
ENCODINGS = ("gzip, deflate, br", "gzip, deflate, br, zstd", "gzip, deflate")
# Seconds of the site's clock per request: one worker of two at ~15k req/s each.
INTERVAL = 1 / 15_000
# The site's clock, carried from one run to the next (never reset to real time, so
# nothing expires between runs that would not expire at full speed).
_NOW = [time.monotonic()]


def head(counter: int, path: str) -> bytes:
    cookie = (
        f"session={counter:08x}{(counter * 2654435761) % 4294967296:08x}; "
        f"_ga=GA1.1.{100000 + counter % 899999}.1714000000; "
        f"theme={'dark' if counter % 3 == 0 else 'light'}; consent=1"
    )
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"User-Agent: {AGENTS[counter % len(AGENTS)]}\r\nAccept: */*\r\n"
        f"Accept-Language: {LANGUAGES[counter % len(LANGUAGES)]}\r\n"
        f"Accept-Encoding: {ENCODINGS[counter % len(ENCODINGS)]}\r\n"
        f"Referer: http://127.0.0.1/site/d01/\r\nCookie: {cookie}\r\n\r\n"
    ).encode()


def requests_for(urls: list[str], popularity: str, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    if popularity == "zipf":
        rng.shuffle(urls)
        weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, len(urls) + 1)]
        drawn = rng.choices(urls, weights, k=count)
    elif popularity == "sequential":  # the cold case: every request a different file
        drawn = [urls[index % len(urls)] for index in range(count)]
    else:
        drawn = rng.choices(urls, k=count)
    return [head(index + seed * count, path) for index, path in enumerate(drawn)]


def run(worker: Worker, requests: list[bytes], interval: float) -> float:
    """CPU microseconds per request (both ends of the connection are this process)."""
    now = _NOW

    def clock() -> float:
        return now[0]

    # The harness steers the window: the open-file cache's and the variant index's.
    worker.site._monotonic = clock
    variants = getattr(worker.site.docroot, "variants", None)
    if variants is not None:
        variants._monotonic = clock
    client, connection = connected_pair(worker)
    client.setblocking(False)
    on_readable = worker.reader.on_readable
    handlers = worker.handlers

    def receive() -> bytes:
        """What the client has; when nothing, the worker's turn (it may be writing)."""
        while True:
            try:
                return client.recv(RECEIVE_BYTES)
            except BlockingIOError:
                handlers[connection.phase](connection)

    try:
        started = time.process_time()
        for request in requests:
            now[0] += interval
            client.send(request)
            on_readable(connection)
            data = receive()
            while b"\r\n\r\n" not in data:
                data += receive()
            head_bytes, _, body = data.partition(b"\r\n\r\n")
            start = head_bytes.find(b"Content-Length: ") + 16
            length = int(head_bytes[start : head_bytes.index(b"\r\n", start)])
            received = len(body)
            while received < length:
                received += len(receive())
        return (time.process_time() - started) / len(requests) * 1e6
    finally:
        worker.responder.close(connection)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.misspath", description=__doc__)
    parser.add_argument("--tree", choices=("site", "cold"), default="site")
    parser.add_argument("--popularity", choices=("uniform", "zipf", "sequential"),
                        default=None, help="default: uniform for site, sequential for cold")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warm", type=int, default=5_000, help="requests before measuring")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=INTERVAL)
    parser.add_argument("--store", type=Path, default=default_store())
    options = parser.parse_args()
    spec = SITE_TREE if options.tree == "site" else COLD_TREE
    popularity = options.popularity or ("uniform" if options.tree == "site" else "sequential")
    tree, directory, _ = ensure_tree(spec, options.store)
    worker = build_worker(directory.parent, None)  # the store: /site/..., /cold/...
    urls = tree.urls()
    run(worker, requests_for(list(urls), popularity, options.warm, 0), options.interval)
    costs = [
        run(worker, requests_for(list(urls), popularity, options.requests, index + 1),
            options.interval)
        for index in range(options.rounds)
    ]
    print(
        f"{spec.name} {popularity}: median {statistics.median(costs):.2f} us CPU per "
        f"request (min {min(costs):.2f}, max {max(costs):.2f}, {options.rounds} rounds "
        f"of {options.requests})"
    )


if __name__ == "__main__":
    main()
