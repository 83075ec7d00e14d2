"""Load generation with wrk: the cases, one run per (case, server), and its numbers.

Owns the case list (what is fetched, with how many connections, keep-alive or
not), the wrk command line (one thread, the JSON ``done()`` script in
``wrk_report.lua``), parsing its totals, and measuring wrk's own CPU time from
``RUSAGE_CHILDREN`` so a saturated load generator is visible. Knows nothing about
how the servers are started.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.docroot import LARGE_FILE, MEDIUM_FILE, MIB, SMALL_FILE

WRK_REPORT_SCRIPT = Path(__file__).with_name("wrk_report.lua")
JSON_MARKER = "BENCH_WRK_JSON "
# Slower responses count as wrk timeout errors (and are left out of its latency).
WRK_REQUEST_TIMEOUT_SECONDS = 5
# wrk is told how long to run; this is only the guard against it hanging.
WRK_EXTRA_WALL_SECONDS = 30
# Above this, wrk's single thread is the bottleneck: the server may do better.
WRK_SATURATED_CPU_PERCENT = 90.0
MICROSECONDS = 1_000_000
# Set by pin_wrk (--wrk-cpus): every wrk command runs under this prefix.
WRK_PREFIX: list[str] = []


@dataclass(frozen=True)
class LoadCase:
    key: str
    title: str  # column heading
    file_name: str
    connections: int
    close_each_connection: bool  # send "Connection: close": one request per connection
    measures_throughput: bool  # report MiB/s rather than requests/s

    @property
    def unit(self) -> str:
        return "MiB/s" if self.measures_throughput else "req/s"


SMALL_KEEPALIVE = "1k-keepalive"
SMALL_CLOSE = "1k-close"
MEDIUM_KEEPALIVE = "64k-keepalive"
LARGE_THROUGHPUT = "10m-throughput"


def build_cases(connections: int, large_file_connections: int) -> tuple[LoadCase, ...]:
    return (
        LoadCase(SMALL_KEEPALIVE, "1 KiB keep-alive", SMALL_FILE, connections, False, False),
        LoadCase(SMALL_CLOSE, "1 KiB close", SMALL_FILE, connections, True, False),
        LoadCase(MEDIUM_KEEPALIVE, "64 KiB keep-alive", MEDIUM_FILE, connections, False, False),
        LoadCase(LARGE_THROUGHPUT, "10 MiB", LARGE_FILE, large_file_connections, False, True),
    )


@dataclass(frozen=True)
class WrkResult:
    """wrk's totals for one run, plus the CPU time wrk itself used."""

    duration_seconds: float
    requests: int
    bytes_read: int
    connect_errors: int
    read_errors: int
    write_errors: int
    timeout_errors: int
    status_errors: int  # responses with status ≥ 400 (wrk's "Non-2xx or 3xx")
    latency_p50_seconds: float
    latency_p90_seconds: float
    latency_p99_seconds: float
    latency_max_seconds: float
    wrk_cpu_seconds: float
    wrk_wall_seconds: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration_seconds if self.duration_seconds else 0.0

    @property
    def mib_per_second(self) -> float:
        return self.bytes_read / MIB / self.duration_seconds if self.duration_seconds else 0.0

    def headline(self, case: LoadCase) -> float:
        return self.mib_per_second if case.measures_throughput else self.requests_per_second

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeout_errors

    @property
    def wrk_cpu_percent(self) -> float:
        return 100.0 * self.wrk_cpu_seconds / self.wrk_wall_seconds if self.wrk_wall_seconds \
            else 0.0

    @property
    def wrk_saturated(self) -> bool:
        return self.wrk_cpu_percent >= WRK_SATURATED_CPU_PERCENT

    def error_summary(self) -> str:
        """``connect 3, read 12, non-2xx 5`` (empty when there were none)."""
        counts = (("connect", self.connect_errors), ("read", self.read_errors),
                  ("write", self.write_errors), ("timeout", self.timeout_errors),
                  ("non-2xx", self.status_errors))
        return ", ".join(f"{name} {count}" for name, count in counts if count)


@dataclass(frozen=True)
class LoadFailure:
    """wrk could not produce numbers for this (case, server); ``reason`` says why."""

    reason: str


CaseOutcome = WrkResult | LoadFailure


def wrk_command(wrk: str, url: str, case: LoadCase, seconds: int) -> list[str]:
    command = [wrk, "-t1", f"-c{case.connections}", f"-d{seconds}s",
               f"--timeout={WRK_REQUEST_TIMEOUT_SECONDS}s", "-s", str(WRK_REPORT_SCRIPT)]
    if case.close_each_connection:
        command += ["-H", "Connection: close"]
    return [*command, url]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_wrk_output(stdout: str, cpu_seconds: float, wall_seconds: float) -> CaseOutcome:
    for line in reversed(stdout.splitlines()):
        if line.startswith(JSON_MARKER):
            totals = json.loads(line[len(JSON_MARKER):])
            return WrkResult(
                duration_seconds=totals["duration_us"] / MICROSECONDS,
                requests=totals["requests"],
                bytes_read=totals["bytes"],
                connect_errors=totals["connect_errors"],
                read_errors=totals["read_errors"],
                write_errors=totals["write_errors"],
                timeout_errors=totals["timeout_errors"],
                status_errors=totals["status_errors"],
                latency_p50_seconds=totals["latency_p50_us"] / MICROSECONDS,
                latency_p90_seconds=totals["latency_p90_us"] / MICROSECONDS,
                latency_p99_seconds=totals["latency_p99_us"] / MICROSECONDS,
                latency_max_seconds=totals["latency_max_us"] / MICROSECONDS,
                wrk_cpu_seconds=cpu_seconds,
                wrk_wall_seconds=wall_seconds,
            )
    last_lines = " | ".join(stdout.strip().splitlines()[-3:])
    return LoadFailure(f"wrk printed no totals: {last_lines or '(no output)'}")


def run_wrk(wrk: str, url: str, case: LoadCase, seconds: int) -> CaseOutcome:
    """Load ``url`` for ``seconds`` as ``case`` says; wrk's totals or why there are none.

    wrk's CPU time is the RUSAGE_CHILDREN delta around the run: the benchmark reaps
    no other child meanwhile (the servers are reaped only when stopped).
    """
    return run_wrk_command(wrk_command(wrk, url, case, seconds), seconds)


def pin_wrk(cpus: tuple[int, ...]) -> None:
    """Run wrk on ``cpus`` (``taskset -c``) and this process, and so the servers it
    starts afterwards, on the others."""
    others = set(os.sched_getaffinity(0)) - set(cpus)
    if not others:
        raise ValueError(f"--wrk-cpus {cpus} leaves no CPU for the servers")
    os.sched_setaffinity(0, others)
    WRK_PREFIX[:] = ["taskset", "-c", ",".join(map(str, cpus))]


def run_wrk_command(command: list[str], seconds: int) -> CaseOutcome:
    """Run a wrk command line whose script prints the JSON totals; see ``run_wrk``."""
    command = [*WRK_PREFIX, *command]
    cpu_before = children_cpu_seconds()
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=seconds + WRK_EXTRA_WALL_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        return LoadFailure(f"wrk did not finish within {seconds + WRK_EXTRA_WALL_SECONDS} s")
    wall_seconds = time.monotonic() - started
    cpu_seconds = children_cpu_seconds() - cpu_before
    outcome = parse_wrk_output(completed.stdout, cpu_seconds, wall_seconds)
    if isinstance(outcome, LoadFailure) and completed.stderr.strip():
        return LoadFailure(f"{outcome.reason}; stderr: {completed.stderr.strip()[:300]}")
    return outcome
