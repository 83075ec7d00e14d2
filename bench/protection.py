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
from bench.docroot import SMALL_FILE, build_docroot
from bench.load import SMALL_KEEPALIVE, LoadCase, WrkResult, build_cases, run_wrk, run_wrk_command
from bench.prerequisites import Programs
from bench.serverprocess import ServerStartError
from bench.servers import FORKSERVER, RunningServer, StartContext, start_forkserver, start_server
from bench.sitecases import ALL_SITE_CASES, SITE_UNIFORM, prepare_site, site_wrk_command

PROTECTION = "protection"  # the case name for --cases
PROTECTION_CASES = (PROTECTION,)
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
    plain_cpu_us: list[float]  # workers' CPU per request, per round
    limited_cpu_us: list[float]

    @property
    def drop_percent(self) -> float:
        plain = statistics.median(self.plain_rounds)
        return (1 - statistics.median(self.limited_rounds) / plain) * 100

    @property
    def cpu_percent(self) -> float:
        """How much more CPU a request costs with the limits (steadier than req/s on a
        busy machine: another process's load moves req/s, not CPU per request)."""
        plain = statistics.median(self.plain_cpu_us)
        return (statistics.median(self.limited_cpu_us) / plain - 1) * 100


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
    overhead: OverheadResult | None
    refusal: RefusalResult | None
    failure: str = ""  # why there are no numbers (a server did not start, wrk failed)


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
    cpu: dict[int, list[float]] = {0: [], 1: []}
    try:
        for _ in range(ROUNDS):
            for index, server in enumerate(servers):
                command = site_wrk_command(wrk, server.url("/"), connections, ROUND_SECONDS,
                                           paths)
                before = tree_cpu(server.pid)
                outcome = run_wrk_command(command, ROUND_SECONDS)
                after = tree_cpu(server.pid)
                if not isinstance(outcome, WrkResult):
                    raise ProtectionFailure(f"overhead, server {index}: {outcome.reason}")
                if outcome.status_errors:
                    raise ProtectionFailure(
                        f"overhead: {outcome.status_errors} error statuses with limits that "
                        "should not be reached")
                rates[index].append(outcome.requests_per_second)
                used = sum(worker_cpu_split(before, after, server.pid))
                cpu[index].append(used / max(outcome.requests, 1) * MICROSECONDS)
    finally:
        for server in servers:
            server.stop()
    return OverheadResult(rates[0], rates[1], cpu[0], cpu[1])


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
    print(f"bench: limits configured, not reached: site mix {overhead.drop_percent:.1f}% "
          f"fewer req/s than without, {overhead.cpu_percent:+.1f}% CPU per request "
          f"(target < {OVERHEAD_TARGET_PERCENT:g}%)", flush=True)
    refusal = measure_refusal(context, wrk, case)
    print(f"bench: CPU per request: refused (429) {refusal.refused_us:.1f} us, served "
          f"1 KiB {refusal.served_us:.1f} us ({refusal.refused_share:.1%} refused)",
          flush=True)
    return ProtectionResult(overhead, refusal)


def run_protection(programs: Programs, workdir: Path, repo_root: Path, store: Path,
                   workers: int, connections: int) -> ProtectionResult:
    """The protection case for the runner: its own docroot, servers and numbers."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    build_docroot(workdir / "docroot")
    context = StartContext(workdir / "servers", workdir / "docroot", workers, programs,
                           repo_root, "/" + SMALL_FILE)
    case = next(c for c in build_cases(connections, 1) if c.key == SMALL_KEEPALIVE)
    try:
        return measure_protection(context, programs.wrk, case, store, workdir)
    except (ProtectionFailure, ServerStartError, OSError) as error:
        print(f"bench: protection case failed: {error}", flush=True)
        return ProtectionResult(None, None, str(error))


def protection_section(result: ProtectionResult) -> list[str]:
    """The report's lines for the protection case (issue 18's targets)."""
    lines = ["## Protection (forkserver against itself)", ""]
    if result.overhead is None or result.refusal is None:
        return [*lines, f"No numbers: {result.failure}", ""]
    overhead, refusal = result.overhead, result.refusal
    met = "met" if overhead.drop_percent < OVERHEAD_TARGET_PERCENT else "NOT met"
    plain_cpu = statistics.median(overhead.plain_cpu_us)
    limited_cpu = statistics.median(overhead.limited_cpu_us)
    cheaper = "met" if refusal.refused_us < refusal.served_us else "NOT met"
    return [
        *lines,
        f"- Limits configured but not reached (every per-client limit and min_send_rate "
        f"set far above what wrk does), site mix: {overhead.drop_percent:.1f}% fewer "
        f"req/s than without (median of {len(overhead.plain_rounds)} rounds of "
        f"{ROUND_SECONDS} s each, in turns; a negative figure is more); target under "
        f"{OVERHEAD_TARGET_PERCENT:g}%: {met}. Workers' CPU per request {limited_cpu:.1f} us "
        f"against {plain_cpu:.1f} us ({overhead.cpu_percent:+.1f}%).",
        f"- Workers' CPU per request refused with 429: {refusal.refused_us:.1f} us; per "
        f"1 KiB request served: {refusal.served_us:.1f} us ({refusal.refused_share:.1%} of "
        f"the refusing server's answers were refusals); target refused < served: "
        f"{cheaper}.",
        "",
    ]
