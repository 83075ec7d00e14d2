"""Soak: 200,000 mixed requests against two workers leak neither memory nor descriptors.

tests/soak.py is the client: four processes, each on keep-alive connections it
closes and reopens, with pipelining, Connection: close, abandoned downloads and
every kind of answer (cached and sendfile bodies, HEAD, 404, 400, ranges, 304, 412,
405, 501, 301), every byte checked. After a warm-up of 20,000 requests the workers'
resident memory and every process's descriptor table are measured idle; after the
remaining 180,000 they are measured idle again. About 30-60 s on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from forkserver.static import CACHE_RECHECK_SECONDS
from forkserver.worker import SWEEP_SECONDS
from tests.soak import build_site
from tests.support import Server, running, wait_for

CLIENTS = 4
WARM_UP = 20_000
TOTAL = 200_000
RSS_GROWTH_LIMIT_KIB = 2 * 1024
CLIENT_DEADLINE_SECONDS = 300  # a hung client fails the test instead of hanging CI


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def load(server: Server, requests: int, seed: int) -> dict[str, int]:
    """``requests`` spread over CLIENTS processes; fails on any client failure."""
    share = requests // CLIENTS
    clients = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.soak", str(server.port), str(share), str(seed + i)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for i in range(CLIENTS)
    ]
    totals = {"requests": 0, "connections": 0, "abandoned": 0, "failures": 0}
    problems: list[str] = []
    try:
        for client in clients:
            out, err = client.communicate(timeout=CLIENT_DEADLINE_SECONDS)
            assert client.returncode == 0, err.decode(errors="replace")
            tally = json.loads(out)
            for key in totals:
                totals[key] += tally[key]
            problems += tally["first_failures"]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    assert totals["failures"] == 0, f"{totals}: {problems[:10]}"
    assert totals["requests"] >= requests  # plus 3 validator HEADs per client
    return totals


def idle(server: Server) -> dict[int, tuple[int, int]]:
    """pid → (RSS KiB, descriptors) for the master and each worker, once all is idle."""
    pids = [server.pid, *server.workers()]
    # The open-file cache holds descriptors of recently served files for about a
    # second (its revalidation window, then the next sweep drops them): let them go.
    time.sleep(CACHE_RECHECK_SECONDS + SWEEP_SECONDS + 0.25)
    # Closed client connections finish lingering within 2 s; wait until every
    # process's descriptor count has been stable for a moment.
    previous: list[int] = []

    def settled() -> bool:
        nonlocal previous
        counts = [descriptors(pid) for pid in pids]
        stable, previous = counts == previous, counts
        return stable

    wait_for(settled, timeout=10, interval=0.5, what="descriptor counts to settle")
    return {pid: (rss_kib(pid), descriptors(pid)) for pid in pids}


def test_two_hundred_thousand_mixed_requests_leak_nothing(tmp_path: Path) -> None:
    docroot = build_site(tmp_path / "www")
    settings = {"docroot": str(docroot), "workers": 2, "log_level": "info"}
    with running(tmp_path, settings) as server:
        workers = server.workers()
        started = time.monotonic()
        warm = load(server, WARM_UP, seed=1)
        before = idle(server)

        rest = load(server, TOTAL - WARM_UP, seed=100)
        after = idle(server)
        elapsed = time.monotonic() - started

        assert server.workers() == workers, "a worker died or was replaced"
        assert set(after) == set(before)
        for pid, (rss, fds) in after.items():
            rss_before, fds_before = before[pid]
            assert fds == fds_before, f"pid {pid}: {fds_before} → {fds} descriptors"
            if pid != server.pid:
                growth = rss - rss_before
                assert growth <= RSS_GROWTH_LIMIT_KIB, (
                    f"worker {pid} grew {growth} KiB ({rss_before} → {rss} KiB)"
                )
        served = warm["requests"] + rest["requests"]
        assert served >= TOTAL
        # Every request reached the access log; abandoned downloads may add a line.
        wait_for(lambda: server.access_log.count("\n") >= served, timeout=5,
                 what=f"{served} access lines")
        # The tests run as root without user: that start-up warning is expected.
        complaints = [line for line in server.error_log.splitlines()
                      if ("[error]" in line or "[warning]" in line)
                      and "started as root without user" not in line]
        assert not complaints, complaints[:5]
        print(f"soak: {served} requests, {warm['connections'] + rest['connections']} "
              f"connections, {warm['abandoned'] + rest['abandoned']} abandoned downloads in "
              f"{elapsed:.0f}s; idle RSS/fds before {before}, after {after}")
