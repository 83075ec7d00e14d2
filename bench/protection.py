"""forkserver's protection (issue 18) against itself: what limits cost when no client
reaches them, and what a refused request costs next to a served one.

Owns two experiments, each with its own pair of forkservers taking turns (as the
access-log experiment does, bench/extras.py):

- overhead: the site mix (uniform popularity) against a forkserver with every
  per-client limit and the minimum send rate configured far above what wrk does,
  and one without; the drop in req/s (target: under 5%);
- refusal cost: 1 KiB keep-alive requests against a forkserver that refuses nearly
  all of them (``limits.requests_per_second`` far below wrk's rate: 429) and against
  one that serves them; the workers' CPU per request of each (target: a refused
  request costs less than a served one).

Starts and stops its own servers; knows nothing of the report's layout.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import tree_cpu, worker_cpu_split
from bench.docroot import SMALL_FILE
from bench.load import LoadCase, WrkResult, run_wrk, run_wrk_command
from bench.servers import FORKSERVER, RunningServer, StartContext, start_forkserver, start_server
from bench.sitecases import ALL_SITE_CASES, SITE_UNIFORM, prepare_site, site_wrk_command

PROTECTION = "protection"  # the case name for --cases
ROUNDS = 6  # short rounds in turns: the spread between rounds is larger than the effect
ROUND_SECONDS = 2
MICROSECONDS = 1_000_000
OVERHEAD_TARGET_PERCENT = 5.0
# Configured, never reached by wrk from one address: 50 connections, tens of thousands
# of requests a second, responses read at full speed.
UNREACHED_LIMITS = (
    "limits:\n"
    "  connections_per_client: 10000\n"
    "  requests_per_second: 1000000\n"
    "  burst: 1000000\n"
    "  min_send_rate: 1\n"
)
# One request every 1000 s per client: everything after the first is refused (429).
REFUSING_LIMITS = "limits:\n  requests_per_second: 0.001\n"


class ProtectionFailure(RuntimeError):
    """An experiment could not produce numbers; the message says why."""


@dataclass(frozen=True)
class OverheadResult:
    plain_rounds: list[float]  # site-mix req/s per round, no limits
    limited_rounds: list[float]  # the same with the limits configured, not reached

    @property
    def drop_percent(self) -> float:
        plain = statistics.median(self.plain_rounds)
        return (1 - statistics.median(self.limited_rounds) / plain) * 100


@dataclass(frozen=True)
class RefusalResult:
    served_cpu_us: list[float]  # workers' CPU per 1 KiB request served, per round
    refused_cpu_us: list[float]  # workers' CPU per request refused with 429, per round
    refused_share: float  # of the refusing server's responses, the share that were 4xx

    @property
    def served_us(self) -> float:
        return statistics.median(self.served_cpu_us)

    @property
    def refused_us(self) -> float:
        return statistics.median(self.refused_cpu_us)


@dataclass(frozen=True)
class ProtectionResult:
    overhead: OverheadResult
    refusal: RefusalResult


def pair(context: StartContext, name: str) -> StartContext:
    return StartContext(context.workdir / name, context.docroot, context.workers,
                        context.programs, context.repo_root, context.probe_path)


def start_pair(context: StartContext, plain_name: str, limited_name: str,
               limited_yaml: str) -> list[RunningServer]:
    servers = [start_server(FORKSERVER, pair(context, plain_name))]
    try:
        servers.append(start_server(
            FORKSERVER, pair(context, limited_name),
            functools.partial(start_forkserver, extra_yaml=limited_yaml)))
    except BaseException:
        servers[0].stop()
        raise
    return servers


def measure_overhead(context: StartContext, wrk: str, store: Path, connections: int,
                     site_workdir: Path) -> OverheadResult:
    """The site mix against limits configured but not reached, and against none.

    ``site_workdir`` holds the site cases' request sequences when they ran; otherwise
    the tree is linked into the docroot and the sequence written here.
    """
    case = next(case for case in ALL_SITE_CASES if case.key == SITE_UNIFORM)
    paths = case.paths_file(site_workdir)
    if not paths.exists():
        prepare_site((case,), store, context.docroot, site_workdir)
    servers = start_pair(context, "plain-site", "limited-site", UNREACHED_LIMITS)
    rates: dict[int, list[float]] = {0: [], 1: []}
    try:
        for _ in range(ROUNDS):
            for index, server in enumerate(servers):
                command = site_wrk_command(wrk, server.url("/"), connections, ROUND_SECONDS,
                                           paths)
                outcome = run_wrk_command(command, ROUND_SECONDS)
                if not isinstance(outcome, WrkResult):
                    raise ProtectionFailure(f"overhead, server {index}: {outcome.reason}")
                if outcome.status_errors:
                    raise ProtectionFailure(
                        f"overhead: {outcome.status_errors} error statuses with limits that "
                        "should not be reached")
                rates[index].append(outcome.requests_per_second)
    finally:
        for server in servers:
            server.stop()
    return OverheadResult(rates[0], rates[1])


def cpu_per_request(server: RunningServer, wrk: str, case: LoadCase
                    ) -> tuple[float, WrkResult]:
    before = tree_cpu(server.pid)
    outcome = run_wrk(wrk, server.url("/" + SMALL_FILE), case, ROUND_SECONDS)
    after = tree_cpu(server.pid)
    if not isinstance(outcome, WrkResult) or not outcome.requests:
        reason = outcome.reason if not isinstance(outcome, WrkResult) else "no requests"
        raise ProtectionFailure(f"refusal cost: {reason}")
    used = sum(worker_cpu_split(before, after, server.pid))
    return used / outcome.requests * MICROSECONDS, outcome


def measure_refusal(context: StartContext, wrk: str, case: LoadCase) -> RefusalResult:
    """CPU per 1 KiB request served, and per request refused with 429."""
    servers = start_pair(context, "plain-1k", "refusing-1k", REFUSING_LIMITS)
    served: list[float] = []
    refused: list[float] = []
    statuses = requests = 0
    try:
        for _ in range(ROUNDS):
            cost, _ = cpu_per_request(servers[0], wrk, case)
            served.append(cost)
            cost, outcome = cpu_per_request(servers[1], wrk, case)
            refused.append(cost)
            statuses += outcome.status_errors
            requests += outcome.requests
    finally:
        for server in servers:
            server.stop()
    return RefusalResult(served, refused, statuses / requests if requests else 0.0)


def measure_protection(context: StartContext, wrk: str, case: LoadCase, store: Path,
                       site_workdir: Path) -> ProtectionResult:
    """Both experiments; ``case`` is the 1 KiB keep-alive case (its connections too)."""
    overhead = measure_overhead(context, wrk, store, case.connections, site_workdir)
    print(f"bench: limits configured, not reached: site mix {overhead.drop_percent:+.1f}% "
          f"fewer req/s than without (target < {OVERHEAD_TARGET_PERCENT:g}%)", flush=True)
    refusal = measure_refusal(context, wrk, case)
    print(f"bench: CPU per request: refused (429) {refusal.refused_us:.1f} us, served "
          f"1 KiB {refusal.served_us:.1f} us ({refusal.refused_share:.1%} refused)",
          flush=True)
    return ProtectionResult(overhead, refusal)
