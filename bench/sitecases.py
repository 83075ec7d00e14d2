"""The real-traffic cases: site mix (uniform, Zipf-like) and cold, and how they scale.

Owns the cases (which generated tree, which popularity), running them against
servers already started (rounds in turns, as bench/runner.py does for the other
cases) and measuring per (server, worker count, case): wrk's req/s and latency, the
workers' CPU per request, the peak PSS of the whole tree while the case ran, and, in
one extra round with a counter attached (bench/syscalls.py), system calls per
request of forkserver's and nginx's workers. Also the scaling passes: forkserver and
nginx started again with other worker counts for these cases only.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import tree_cpu, worker_cpu_split
from bench.docroot import ServedFile
from bench.load import (
    WRK_REQUEST_TIMEOUT_SECONDS,
    CaseOutcome,
    LoadFailure,
    WrkResult,
    run_wrk_command,
)
from bench.memory import PssSampler
from bench.prerequisites import Programs
from bench.processes import process_tree
from bench.servers import (
    FORKSERVER,
    NGINX,
    RunningServer,
    ServerStartError,
    StartContext,
    docroot_problems,
    start_server,
)
from bench.sitemix import COLD_TREE, SITE_TREE, Tree, TreeSpec, prepare_tree, write_sequence
from bench.syscalls import SyscallCount, SyscallFailure, count_syscalls

SITE_SCRIPT = Path(__file__).with_name("wrk_site.lua")
SITE_UNIFORM = "site-mix-uniform"
SITE_ZIPF = "site-mix-zipf"
COLD = "cold"
SITE_MIX_CASES = (SITE_UNIFORM, SITE_ZIPF)
SITE_CASE_KEYS = (SITE_UNIFORM, SITE_ZIPF, COLD)
# Servers whose system calls are counted (a counting round per case each).
COUNTED_SERVERS = (FORKSERVER, NGINX)
# Servers started again for the scaling passes.
SCALING_SERVERS = (FORKSERVER, NGINX)
# Scaling passes run fewer rounds than the main pass, to keep `make bench` short.
SCALING_ROUNDS = 3
MICROSECONDS = 1_000_000


@dataclass(frozen=True)
class SiteCase:
    key: str
    title: str
    tree: TreeSpec
    popularity: str  # "uniform" or "zipf" (bench/sitemix.py)

    def paths_file(self, workdir: Path) -> Path:
        return workdir / f"{self.key}-paths.txt"


ALL_SITE_CASES = (
    SiteCase(SITE_UNIFORM, "site mix, uniform", SITE_TREE, "uniform"),
    SiteCase(SITE_ZIPF, "site mix, Zipf", SITE_TREE, "zipf"),
    SiteCase(COLD, "cold", COLD_TREE, "uniform"),
)


def site_cases(keys: tuple[str, ...]) -> tuple[SiteCase, ...]:
    return tuple(case for case in ALL_SITE_CASES if case.key in keys)


@dataclass
class SiteMeasurement:
    """One case against one server at one worker count."""

    rounds: list[CaseOutcome] = field(default_factory=list)
    worker_cpu: list[tuple[float, ...]] = field(default_factory=list)  # per WrkResult round
    cpu_per_request: list[float] = field(default_factory=list)  # µs, per WrkResult round
    peak_pss_mib: float | None = None
    peak_process_count: int = 0
    syscalls: SyscallCount | None = None
    syscall_failure: str | None = None

    def result(self) -> WrkResult | None:
        """The median round by req/s."""
        results = sorted((outcome for outcome in self.rounds if isinstance(outcome, WrkResult)),
                         key=lambda result: result.requests_per_second)
        return results[len(results) // 2] if results else None

    def cpu_us_per_request(self) -> float | None:
        return statistics.median(self.cpu_per_request) if self.cpu_per_request else None

    def failed(self) -> bool:
        return any(isinstance(outcome, LoadFailure) for outcome in self.rounds)


@dataclass
class SiteRun:
    """Everything the real-traffic cases measured in one benchmark run."""

    cases: tuple[SiteCase, ...]
    main_workers: int  # the pass with every server
    worker_counts: tuple[int, ...]  # every count run, ascending
    connections: int
    rounds: int
    scaling_rounds: int
    trees: dict[str, Tree] = field(default_factory=dict)
    measurements: dict[tuple[str, int, str], SiteMeasurement] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)

    def get(self, server: str, workers: int, case_key: str) -> SiteMeasurement | None:
        return self.measurements.get((server, workers, case_key))

    def measurement(self, server: str, workers: int, case_key: str) -> SiteMeasurement:
        return self.measurements.setdefault((server, workers, case_key), SiteMeasurement())

    def servers_at(self, workers: int) -> list[str]:
        names: list[str] = []
        for name, count, _ in self.measurements:
            if count == workers and name not in names:
                names.append(name)
        return names

    def failed(self, server: str) -> bool:
        return any(measurement.failed() for (name, _, _), measurement
                   in self.measurements.items() if name == server)


def prepare_site(cases: tuple[SiteCase, ...], store: Path, docroot: Path, workdir: Path
                 ) -> tuple[dict[str, Tree], dict[str, ServedFile]]:
    """Link every tree the cases need into the docroot and write each case's request
    sequence; the trees by name, and the files to check byte-exact."""
    trees: dict[str, Tree] = {}
    samples: dict[str, ServedFile] = {}
    for case in cases:
        if case.tree.name not in trees:
            trees[case.tree.name] = prepare_tree(case.tree, store, docroot)
            samples.update(trees[case.tree.name].sample())
        write_sequence(trees[case.tree.name], case.popularity, case.paths_file(workdir))
    return trees, samples


def site_wrk_command(wrk: str, url: str, connections: int, seconds: int, paths: Path
                     ) -> list[str]:
    return [wrk, "-t1", f"-c{connections}", f"-d{seconds}s",
            f"--timeout={WRK_REQUEST_TIMEOUT_SECONDS}s", "-s", str(SITE_SCRIPT), url, "--",
            str(paths)]


@dataclass(frozen=True)
class SiteLoad:
    """How to load: the same for every case and server of one pass."""

    wrk: str
    workdir: Path  # where the request sequences are
    connections: int
    seconds: int
    rounds: int
    workers: int


def progress(case: SiteCase, server: RunningServer, workers: int, outcome: CaseOutcome,
             cpu_us: float | None) -> str:
    prefix = f"bench: {case.title:<18} {server.name:<11} {workers}w"
    if isinstance(outcome, LoadFailure):
        return f"{prefix} FAILED: {outcome.reason}"
    cpu = f"  server CPU {cpu_us:.0f} us/req" if cpu_us is not None else ""
    return (f"{prefix} {outcome.requests_per_second:>10,.0f} req/s  "
            f"p99 {outcome.latency_p99_seconds * 1000:.2f} ms  "
            f"wrk CPU {outcome.wrk_cpu_percent:.0f}%{cpu}  "
            f"{outcome.error_summary() or 'no errors'}")


def site_round(load: SiteLoad, case: SiteCase, server: RunningServer,
               measurement: SiteMeasurement) -> None:
    command = site_wrk_command(load.wrk, server.url("/"), load.connections, load.seconds,
                               case.paths_file(load.workdir))
    if not server.is_running():
        outcome: CaseOutcome = LoadFailure(
            f"server had exited with status {server.process.returncode}")
        cpu_us = None
    else:
        before = tree_cpu(server.pid)
        outcome = run_wrk_command(command, load.seconds)
        after = tree_cpu(server.pid)
        # A server of one process (http.server) serves from its master.
        split = worker_cpu_split(before, after, server.pid) or (
            after.get(server.pid, 0.0) - before.get(server.pid, 0.0),)
        cpu_us = None
        if isinstance(outcome, WrkResult) and outcome.requests:
            cpu_us = sum(split) / outcome.requests * MICROSECONDS
            measurement.worker_cpu.append(split)
            measurement.cpu_per_request.append(cpu_us)
    measurement.rounds.append(outcome)
    print(progress(case, server, load.workers, outcome, cpu_us), flush=True)


def count_round(load: SiteLoad, case: SiteCase, server: RunningServer,
                measurement: SiteMeasurement) -> None:
    """One more round with a syscall counter on the workers; only the count is kept."""
    workers = [pid for pid in process_tree(server.pid) if pid != server.pid]
    command = site_wrk_command(load.wrk, server.url("/"), load.connections, load.seconds,
                               case.paths_file(load.workdir))

    def run_load() -> int:
        outcome = run_wrk_command(command, load.seconds)
        if isinstance(outcome, LoadFailure):
            raise SyscallFailure(f"wrk: {outcome.reason}")
        return outcome.requests

    try:
        counted = count_syscalls(workers, run_load)
    except (SyscallFailure, OSError) as error:
        measurement.syscall_failure = str(error)
        print(f"bench: {case.title:<18} {server.name:<11} syscalls not counted: {error}",
              flush=True)
        return
    measurement.syscalls = counted
    print(f"bench: {case.title:<18} {server.name:<11} {load.workers}w "
          f"{counted.per_request:.2f} syscalls/req ({counted.method}): {counted.top()}",
          flush=True)


def load_site_cases(site: SiteRun, load: SiteLoad, servers: list[RunningServer]) -> None:
    """Every case against every server in turns, then the counting rounds."""
    if not servers:
        return
    for case in site.cases:
        trees_before = {server.name: set(process_tree(server.pid)) for server in servers}
        with PssSampler({server.name: server.pid for server in servers}) as sampler:
            for _ in range(load.rounds):
                for server in servers:
                    site_round(load, case, server,
                               site.measurement(server.name, load.workers, case.key))
        for server in servers:
            measurement = site.measurement(server.name, load.workers, case.key)
            measurement.peak_pss_mib = sampler.peak_mib(server.name)
            measurement.peak_process_count = sampler.peak_process_count(server.name)
            seen = sampler.pids_seen(server.name) | set(process_tree(server.pid))
            if seen != trees_before[server.name]:
                site.incidents.append(
                    f"{server.name}, {load.workers} worker(s), {case.title}: process tree "
                    f"changed from {sorted(trees_before[server.name])} to {sorted(seen)}")
        for server in servers:
            if server.name in COUNTED_SERVERS and server.is_running():
                count_round(load, case, server,
                            site.measurement(server.name, load.workers, case.key))


def scaling_pass(site: SiteRun, load: SiteLoad, programs: Programs, names: list[str],
                 docroot: Path, repo_root: Path, probe_path: str,
                 samples: dict[str, ServedFile]) -> None:
    """Start ``names`` with ``load.workers`` workers, run the cases, stop them."""
    running: list[RunningServer] = []
    try:
        for name in names:
            context = StartContext(load.workdir / f"{name}-{load.workers}w", docroot,
                                   load.workers, programs, repo_root, probe_path)
            print(f"bench: starting {name} with {load.workers} worker(s)", flush=True)
            try:
                server = start_server(name, context)
            except (ServerStartError, OSError) as error:
                site.incidents.append(f"{name}, {load.workers} worker(s): did not start: "
                                      f"{error}")
                continue
            running.append(server)
            problems = docroot_problems(server, samples)
            if problems:
                site.incidents.append(f"{name}, {load.workers} worker(s): byte-exact check "
                                      "failed: " + "; ".join(problems))
                running.remove(server)
                server.stop()
        load_site_cases(site, load, running)
    finally:
        for server in reversed(running):
            outcome = server.stop()
            if outcome.killed or outcome.leftovers or outcome.exit_status != 0:
                site.incidents.append(f"{server.name}, {load.workers} worker(s): stop: "
                                      f"{outcome.describe()}")
            site.incidents.extend(f"{server.name}, {load.workers} worker(s): {problem}"
                                  for problem in server.log_problems())
