"""One benchmark run from start to finish: the sequence and nothing else.

Owns the order of things: prerequisites, docroot, start every server, check each
serves the docroot byte-exact, warm up, run every case against every server while
sampling memory, watch for crashes and replaced workers, then the real-traffic
cases (bench/sitecases.py) on the same servers, stop every server (in a ``finally``,
also on Ctrl-C or SIGTERM), the real-traffic cases' scaling passes at other worker
counts, forkserver's experiments against itself, then print the report and write the
docs.
"""

from __future__ import annotations

import signal
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.chart import draw_chart
from bench.compression import COMPRESSION_CASES, CompressionOptions, run_compression
from bench.cpu import (
    CpuUsage,
    take_snapshot,
    tree_cpu,
    uneven,
    usage_between,
    worker_cpu_split,
)
from bench.docroot import SMALL_FILE, ServedFile, build_docroot
from bench.extras import ExtraFailure, measure_access_log, measure_idle_connections
from bench.https import HTTPS_CASES, run_https
from bench.load import SMALL_KEEPALIVE, LoadCase, LoadFailure, WrkResult, build_cases, run_wrk
from bench.machine import describe_machine
from bench.markdown import format_ms
from bench.measured import BenchmarkRun, ServerReport
from bench.memory import PssSampler
from bench.observations import INTERFERENCE_WARNING_PERCENT, format_split
from bench.prerequisites import Programs, ensure_benchmark_prerequisites
from bench.processes import process_tree
from bench.protection import PROTECTION_CASES, run_protection
from bench.report import render_console, render_markdown
from bench.servers import (
    FORKSERVER,
    HTTP_SERVER,
    NGINX,
    RunningServer,
    ServerStartError,
    StartContext,
    docroot_problems,
    start_server,
)
from bench.sitecases import (
    SCALING_ROUNDS,
    SCALING_SERVERS,
    SiteLoad,
    SiteRun,
    load_site_cases,
    prepare_site,
    scaling_pass,
    site_cases,
)
from bench.sites import SITES_CASES, SitesOptions, run_sites
from bench.tables import format_rate

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_DIRECTORY = REPO_ROOT / "docs"
MARKDOWN_NAME = "benchmarks.md"
CHART_NAME = "benchmarks.png"
EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(frozen=True)
class Options:
    command: str  # as the user typed it, for the report
    workers: int
    seconds: int
    rounds: int
    warmup_seconds: int
    connections: int
    large_file_connections: int
    servers: tuple[str, ...]
    write_docs: bool
    cases: tuple[str, ...]  # LoadCase and SiteCase keys to run
    all_cases: bool  # every case runs: only then are the docs rewritten
    site_workers: tuple[int, ...]  # worker counts of the real-traffic cases' passes
    site_store: Path  # where the generated trees are kept between runs
    output_dir: Path | None = None  # write the report here instead of docs/, whatever ran


def start_servers(options: Options, programs: Programs, workdir: Path, docroot: Path,
                  reports: dict[str, ServerReport], running: list[RunningServer]) -> None:
    """Start each server (appending to ``running`` at once, so ``finally`` sees it)."""
    for name in options.servers:
        context = StartContext(workdir=workdir / name, docroot=docroot,
                               workers=options.workers, programs=programs,
                               repo_root=REPO_ROOT, probe_path="/" + SMALL_FILE)
        print(f"bench: starting {name}", flush=True)
        try:
            server = start_server(name, context)
        except (ServerStartError, OSError) as error:
            reports[name].not_benchmarked = f"did not start: {error}"
            print(f"bench: {name} did not start: {error}", flush=True)
            continue
        running.append(server)
        reports[name].note = server.note
        print(f"bench: {name} serving on port {server.port}, pids {list(server.initial_tree)}",
              flush=True)


def check_docroots(running: list[RunningServer], files: dict[str, ServedFile],
                   reports: dict[str, ServerReport]) -> list[RunningServer]:
    """The servers that serve every file byte-exact; the others are reported and dropped."""
    verified = []
    for server in running:
        problems = docroot_problems(server, files)
        if problems:
            reports[server.name].not_benchmarked = "byte-exact check failed: " + "; ".join(
                problems)
            print(f"bench: {server.name} failed the byte-exact check: {problems}", flush=True)
        else:
            verified.append(server)
    return verified


def progress_line(case: LoadCase, server: RunningServer, outcome: WrkResult | LoadFailure,
                  worker_cpu: tuple[float, ...] | None = None) -> str:
    prefix = f"bench: {case.title:<18} {server.name:<11}"
    if isinstance(outcome, LoadFailure):
        return f"{prefix} FAILED: {outcome.reason}"
    errors = outcome.error_summary() or "no errors"
    return (f"{prefix} {format_rate(outcome.headline(case), case):>10} {case.unit}  "
            f"p50 {format_ms(outcome.latency_p50_seconds)} ms  "
            f"p99 {format_ms(outcome.latency_p99_seconds)} ms  "
            f"wrk CPU {outcome.wrk_cpu_percent:.0f}%  "
            f"{format_worker_cpu(worker_cpu)}{errors}")


def format_worker_cpu(split: tuple[float, ...] | None) -> str:
    return f"workers CPU {format_split(split)} s  " if split else ""


def load_servers(options: Options, programs: Programs, cases: tuple[LoadCase, ...],
                 servers: list[RunningServer], reports: dict[str, ServerReport]
                 ) -> CpuUsage | None:
    """Warm up, then every case against every server, case-major, sampling memory;
    returns what the CPUs did meanwhile (None if no server could be loaded)."""
    if not servers:
        return None
    warmup_case = next(case for case in build_cases(options.connections,
                                                    options.large_file_connections)
                       if case.key == SMALL_KEEPALIVE)
    roots = {server.name: server.pid for server in servers}
    with PssSampler(roots) as sampler:
        cpu_before, load_started = take_snapshot(roots), time.monotonic()
        for server in servers:
            run_wrk(programs.wrk, server.url("/" + warmup_case.file_name), warmup_case,
                    options.warmup_seconds)
        for case in cases:
            for _ in range(options.rounds):
                for server in servers:
                    load_once(options, programs, case, server, reports[server.name])
        cpu = usage_between(cpu_before, take_snapshot(roots), time.monotonic() - load_started)
    for server in servers:
        report = reports[server.name]
        report.cpu_by_process = cpu.describe_server(server.name, server.pid)
        report.peak_pss_mib = sampler.peak_mib(server.name)
        report.peak_process_count = sampler.peak_process_count(server.name)
        note_process_changes(server, sampler.pids_seen(server.name), report)
        note_uneven_workers(cases, report)
    if cpu.interference_percent >= INTERFERENCE_WARNING_PERCENT:
        print(f"bench: warning: other processes used {cpu.others_percent:.0f}% and the "
              f"hypervisor stole {cpu.steal_percent:.0f}% of this machine's CPU during the "
              "load; the numbers are skewed", flush=True)
    return cpu


def load_once(options: Options, programs: Programs, case: LoadCase, server: RunningServer,
              report: ServerReport) -> None:
    """One round of ``case`` against ``server``: wrk's numbers and the workers' CPU."""
    split: tuple[float, ...] | None = None
    if not server.is_running():
        outcome: WrkResult | LoadFailure = LoadFailure(
            f"server had exited with status {server.process.returncode}")
    else:
        before = tree_cpu(server.pid)
        outcome = run_wrk(programs.wrk, server.url("/" + case.file_name), case,
                          options.seconds)
        split = worker_cpu_split(before, tree_cpu(server.pid), server.pid)
        report.worker_cpu.setdefault(case.key, []).append(split)
    report.rounds.setdefault(case.key, []).append(outcome)
    print(progress_line(case, server, outcome, split), flush=True)


def note_process_changes(server: RunningServer, pids_seen: set[int], report: ServerReport
                         ) -> None:
    """Record a crashed master or workers that were replaced during the load."""
    if not server.is_running():
        report.incidents.append(
            f"master exited during the run with status {server.process.returncode}")
        return
    initial = set(server.initial_tree)
    now = set(process_tree(server.pid))
    appeared = sorted((pids_seen | now) - initial)
    vanished = sorted(initial - now)
    if appeared or vanished:
        report.incidents.append(
            f"process tree changed under load: started with {sorted(initial)}, "
            f"now {sorted(now)}; new pids {appeared}, gone {vanished} "
            "(workers died and were replaced?)")


def note_uneven_workers(cases: tuple[LoadCase, ...], report: ServerReport) -> None:
    for case in cases:
        splits = report.worker_cpu.get(case.key, [])
        lopsided = [split for split in splits if uneven(split)]
        if lopsided:
            report.incidents.append(
                f"workers unevenly loaded in {case.title}, {len(lopsided)} of {len(splits)} "
                "round(s): CPU " + ", ".join(format_split(split) for split in lopsided)
                + " s (connections were not spread across the workers, so fewer workers "
                "than configured did the work)")


def stop_servers(running: list[RunningServer], reports: dict[str, ServerReport]) -> None:
    for server in reversed(running):
        outcome = server.stop()
        report = reports[server.name]
        # http.server has no SIGTERM handler: dying of the signal is its normal stop.
        expected_statuses = {-signal.SIGTERM} if server.name == HTTP_SERVER else {0}
        if outcome.killed or outcome.leftovers or outcome.exit_status not in expected_statuses:
            report.incidents.append(f"stop ({server.stop_signal.name}): {outcome.describe()}")
        report.incidents.extend(server.log_problems())
        print(f"bench: stopped {server.name}: {outcome.describe()}", flush=True)


def run_extras(options: Options, programs: Programs, cases: tuple[LoadCase, ...],
               workdir: Path, report: ServerReport) -> list[str]:
    """forkserver against itself (bench/extras.py); returns why any has no numbers."""
    context = StartContext(workdir=workdir / "extras", docroot=workdir / "docroot",
                           workers=options.workers, programs=programs,
                           repo_root=REPO_ROOT, probe_path="/" + SMALL_FILE)
    failures: list[str] = []
    small = next((case for case in cases if case.key == SMALL_KEEPALIVE), None)
    if small is None:
        return failures
    try:
        report.access_log = measure_access_log(context, programs.wrk, small)
        print(f"bench: access log on: {report.access_log.drop_percent:.1f}% fewer req/s",
              flush=True)
    except (ExtraFailure, ServerStartError) as error:
        failures.append(f"access-log experiment failed: {error}")
    try:
        report.idle = measure_idle_connections(context)
        print(f"bench: {report.idle.connections} idle connections: "
              f"{report.idle.bytes_per_connection:.0f} bytes each, slowest new request "
              f"{report.idle.probe_max_seconds * 1000:.1f} ms", flush=True)
    except (ExtraFailure, ServerStartError, OSError) as error:
        failures.append(f"idle-connection experiment failed: {error}")
    for failure in failures:
        print(f"bench: {failure}", flush=True)
    return failures


def site_load(options: Options, programs: Programs, workdir: Path, workers: int,
              rounds: int) -> SiteLoad:
    return SiteLoad(programs.wrk, workdir, options.connections, options.seconds, rounds,
                    workers)


def run_scaling_passes(options: Options, programs: Programs, workdir: Path, site: SiteRun,
                       samples: dict[str, ServedFile]) -> None:
    """The real-traffic cases again at each other worker count, forkserver and nginx."""
    names = [name for name in options.servers if name in SCALING_SERVERS]
    if not site.cases or not names:
        return
    for workers in site.worker_counts:
        if workers != options.workers:
            scaling_pass(site, site_load(options, programs, workdir, workers,
                                         site.scaling_rounds),
                         programs, names, workdir / "docroot", REPO_ROOT,
                         "/" + SMALL_FILE, samples)


def write_documents(run: BenchmarkRun, directory: Path = DOCS_DIRECTORY) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    chart_path = directory / CHART_NAME
    draw_chart(run, chart_path)
    markdown_path = directory / MARKDOWN_NAME
    markdown_path.write_text(render_markdown(run, CHART_NAME))
    print(f"bench: wrote {markdown_path} and {chart_path}")


def run_benchmark(options: Options) -> int:
    """The whole benchmark; returns the exit status for ``python -m bench``."""
    started_at = datetime.now().astimezone()
    started = time.monotonic()
    programs = ensure_benchmark_prerequisites()
    machine = describe_machine(programs.nginx, programs.wrk, REPO_ROOT)
    cases = tuple(case for case in build_cases(options.connections,
                                               options.large_file_connections)
                  if case.key in options.cases)
    site = SiteRun(site_cases(options.cases), options.workers,
                   tuple(sorted({options.workers, *options.site_workers})),
                   options.connections, options.rounds,
                   min(SCALING_ROUNDS, options.rounds))
    reports = {name: ServerReport(name, note="") for name in options.servers}
    running: list[RunningServer] = []
    cpu: CpuUsage | None = None
    with tempfile.TemporaryDirectory(prefix="forkserver-bench-") as temporary:
        workdir = Path(temporary)
        workdir.chmod(0o755)  # nginx workers (user nobody) must reach the docroot
        files = build_docroot(workdir / "docroot")
        site.trees, samples = prepare_site(site.cases, options.site_store,
                                           workdir / "docroot", workdir)
        files.update(samples)
        try:
            start_servers(options, programs, workdir, workdir / "docroot", reports, running)
            verified = check_docroots(running, files, reports)
            cpu = load_servers(options, programs, cases, verified, reports)
            load_site_cases(site, site_load(options, programs, workdir, options.workers,
                                            options.rounds), verified)
        finally:
            stop_servers(running, reports)
        run_scaling_passes(options, programs, workdir, site, samples)
        extras_failures = []
        if FORKSERVER in options.servers and reports[FORKSERVER].not_benchmarked is None:
            extras_failures = run_extras(options, programs, cases, workdir, reports[FORKSERVER])
        compression = run_compression(CompressionOptions(
            programs, workdir / "compression", REPO_ROOT, options.site_store, options.workers,
            options.connections, options.seconds, options.rounds, options.cases,
        )) if set(COMPRESSION_CASES) & set(options.cases) else None
        https = run_https(programs, workdir / "https", options.workers, options.seconds,
                          options.rounds) if set(HTTPS_CASES) & set(options.cases) else None
        sites = run_sites(SitesOptions(
            programs, workdir / "sites", REPO_ROOT, options.site_store, options.workers,
            options.connections, options.seconds, options.rounds, options.cases,
        )) if set(SITES_CASES) & set(options.cases) else None
        protection = run_protection(
            programs, workdir / "protection", REPO_ROOT, options.site_store, options.workers,
            options.connections,
        ) if set(PROTECTION_CASES) & set(options.cases) else None
    run = BenchmarkRun(
        command=options.command, started_at=started_at,
        elapsed_seconds=time.monotonic() - started, seconds_per_case=options.seconds,
        rounds=options.rounds,
        workers=options.workers, cases=cases, machine=machine,
        servers=[reports[name] for name in options.servers],
        others_cpu_percent=cpu.others_percent if cpu else None,
        steal_cpu_percent=cpu.steal_percent if cpu else None,
        extras_failures=extras_failures,
        site=site if site.cases else None,
        compression=compression,
        https=https,
        sites=sites,
        protection=protection,
    )
    print(render_console(run))
    print(f"\nbench: finished in {run.elapsed_seconds:.0f} s")
    forkserver, nginx = run.server(FORKSERVER), run.server(NGINX)
    complete = all(server is not None and server.not_benchmarked is None
                   for server in (forkserver, nginx))
    if options.output_dir is not None:
        write_documents(run, options.output_dir)
    elif options.write_docs and complete and options.all_cases:
        write_documents(run)
    elif options.write_docs and not options.all_cases:
        print("bench: docs/ left unchanged: --cases ran only some of the cases")
    elif options.write_docs:
        print("bench: docs/ left unchanged: forkserver and nginx were not both benchmarked")
    forkserver_failed = forkserver is not None and (
        forkserver.not_benchmarked is not None
        or forkserver.failed_anywhere()
        or site.failed(FORKSERVER))
    return EXIT_FAILED if forkserver_failed else EXIT_OK
