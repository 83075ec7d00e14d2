"""The result model of one benchmark run: what was measured about each server.

Owns ``ServerReport`` and ``BenchmarkRun``, and the two numbers every part of the
report reads from them (a case's headline number, the 1 KiB latency). Runs nothing
and measures nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bench.compression import CompressionRun
from bench.extras import AccessLogResult, IdleResult
from bench.https import HttpsRounds
from bench.load import SMALL_KEEPALIVE, CaseOutcome, LoadCase, LoadFailure, WrkResult
from bench.machine import Machine
from bench.protection import ProtectionResult
from bench.sitecases import SiteRun
from bench.sites import SitesRun


@dataclass
class ServerReport:
    """Everything measured or observed about one server in one run."""

    name: str
    note: str
    # Every round's outcome, by LoadCase.key; the tables show the median round.
    rounds: dict[str, list[CaseOutcome]] = field(default_factory=dict)
    peak_pss_mib: float | None = None
    peak_process_count: int = 0
    not_benchmarked: str | None = None  # why it was not loaded (start or check failed)
    incidents: list[str] = field(default_factory=list)  # crashes, respawns, log problems
    cpu_by_process: str = ""  # CPU seconds of master and each worker over the load phase
    # CPU seconds of each worker (busiest first) in each round of each case, by LoadCase.key
    worker_cpu: dict[str, list[tuple[float, ...]]] = field(default_factory=dict)
    # forkserver only (bench/extras.py): against itself, not against nginx.
    access_log: AccessLogResult | None = None
    idle: IdleResult | None = None

    def outcome(self, case_key: str) -> CaseOutcome | None:
        """The median round (by requests/s) of the case, a failure if no round
        produced numbers, None if it never ran."""
        outcomes = self.rounds.get(case_key, [])
        results = sorted((outcome for outcome in outcomes if isinstance(outcome, WrkResult)),
                         key=lambda result: result.requests_per_second)
        if results:
            return results[len(results) // 2]
        return outcomes[0] if outcomes else None

    def result(self, case_key: str) -> WrkResult | None:
        outcome = self.outcome(case_key)
        return outcome if isinstance(outcome, WrkResult) else None

    def failed_anywhere(self) -> bool:
        return any(isinstance(outcome, LoadFailure)
                   for outcomes in self.rounds.values() for outcome in outcomes)

@dataclass
class BenchmarkRun:
    command: str
    started_at: datetime
    elapsed_seconds: float
    seconds_per_case: int
    rounds: int
    workers: int
    cases: tuple[LoadCase, ...]
    machine: Machine
    servers: list[ServerReport]
    others_cpu_percent: float | None  # CPU share used outside the benchmark meanwhile
    steal_cpu_percent: float | None  # CPU share the hypervisor gave other guests meanwhile
    extras_failures: list[str] = field(default_factory=list)  # why an extra has no numbers
    site: SiteRun | None = None  # the real-traffic cases, when any ran
    compression: CompressionRun | None = None  # bench/compression.py, when it ran
    https: dict[str, HttpsRounds] | None = None  # bench/https.py, when it ran
    protection: ProtectionResult | None = None  # bench/protection.py, when it ran
    sites: SitesRun | None = None  # bench/sites.py (issue 17), when it ran

    def server(self, name: str) -> ServerReport | None:
        return next((server for server in self.servers if server.name == name), None)

    def case(self, key: str) -> LoadCase | None:
        return next((case for case in self.cases if case.key == key), None)

def headline(server: ServerReport, case: LoadCase) -> float | None:
    result = server.result(case.key)
    return result.headline(case) if result else None

def small_latency(server: ServerReport, percentile: str) -> float | None:
    result = server.result(SMALL_KEEPALIVE)
    if result is None:
        return None
    return result.latency_p50_seconds if percentile == "p50" else result.latency_p99_seconds
