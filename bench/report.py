"""Turning one benchmark run into words and pictures: table, targets, markdown, chart.

Owns the result model of a run, the markdown table (a row per server plus
forkserver's ratio to nginx), the targets and their met / not met verdicts with
the gap, ``docs/benchmarks.md`` and the bar chart ``docs/benchmarks.png``. Runs
nothing and measures nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.extras import (
    ACCESS_LOG_ROUND_SECONDS,
    IDLE_CONNECTIONS,
    IDLE_PROBES,
    AccessLogResult,
    IdleResult,
)
from bench.load import (
    LARGE_THROUGHPUT,
    MEDIUM_KEEPALIVE,
    SMALL_CLOSE,
    SMALL_KEEPALIVE,
    WRK_SATURATED_CPU_PERCENT,
    CaseOutcome,
    LoadCase,
    LoadFailure,
    WrkResult,
)
from bench.machine import Machine
from bench.markdown import (
    MILLISECONDS,
    MISSING,
    format_ms,
    format_ratio,
    markdown_table,
    ratio_of,
)
from bench.servers import FORKSERVER, NGINX
from bench.site_report import (
    SITE_PSS_TARGET_MIB,
    cpu_per_request,
    requests_per_second,
    site_console,
    site_mix_peak_pss,
    site_section,
)
from bench.sitecases import COLD, SITE_UNIFORM, SITE_ZIPF, SiteRun

MIB_BYTES = 1024 * 1024
SATURATED_MARK = "†"
PSS_TARGET_MIB = 40.0
IDLE_LATENCY_TARGET_MS = 50.0
IDLE_BYTES_TARGET = 2048.0
ACCESS_LOG_DROP_TARGET_PERCENT = 15.0
# Other work using this share of the CPUs during the load earns the report a warning.
INTERFERENCE_WARNING_PERCENT = 5.0


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

    def server(self, name: str) -> ServerReport | None:
        return next((server for server in self.servers if server.name == name), None)

    def case(self, key: str) -> LoadCase | None:
        return next((case for case in self.cases if case.key == key), None)


# Each optimization kept on the hot path, with the effect measured when it went in.
# "instructions" are user-space instructions per 1 KiB request counted by callgrind
# under bench/hotpath.py (a real worker over loopback; the count repeats exactly, so
# small changes are visible on a busy machine); req/s figures are `make bench --quick`
# runs on the same 2-core machine before and after.
OPTIMIZATION_LINES = [
    "- **EPOLLEXCLUSIVE on the listener, one accept per wake-up**: one idle worker wakes "
    "per connection. Accepting up to 64 per wake-up let one worker take whole bursts (50 "
    "connections split 51/1 in half the trials, halving throughput); with 1 they split "
    "evenly: 1 KiB keep-alive 29-38k req/s instead of 10-35k, `Connection: close` within "
    "3%.",
    "- **Open-file cache** (then: files ≤ 64 KiB in memory, 4 MiB per worker): head and "
    "body in one `send`, no open/fstat/sendfile/close: 1 KiB keep-alive 24k → 52k req/s, "
    "1 KiB close 9.2k → 13.4k, 64 KiB 17.7k → 23k.",
    "- **Cache entries trusted for 1 s** (like nginx's `open_file_cache_valid`) instead of "
    "a `stat` per hit, **field lines encoded once per entry**, and a **plain (not frozen) "
    "Request dataclass**: 109.5k → 72.8k instructions per 1 KiB keep-alive request.",
    "- **Cache-hit responses sent straight from `respond`** (no segment machinery), body "
    "joined into the head in one `join`: 72.8k → 70.2k instructions.",
    "- **Bare `_socket` objects from the C-level accept, TCP_NODELAY inherited from the "
    "listener**: 157.7k → 136.9k instructions per `Connection: close` request "
    "(client side included).",
    "- **Access-log fields escaped only when they need it** (one regex search instead of "
    "three `str.translate` calls): 95.4k → 84.5k instructions per logged request.",
    "- **A partial send keeps a memoryview of the rest** instead of a copy: 138.8k → 130.5k "
    "instructions per 64 KiB request.",
    "- **Access lines formatted in batches at flush time** (the worker only queues a tuple "
    "per response) and `enabled` a plain attribute instead of a property: 88.2k → 81.2k "
    "instructions per logged request; the measured drop with the access log on went from "
    "23% (`make bench --quick`) to 11% (3 rounds of 3 s).",
    "- **Files of 16 KiB to 1 MiB keep an open descriptor in the cache**, and a hit sends a "
    "dup of it with `sendfile` instead of copying the content into the socket: 64 KiB "
    "keep-alive 0.83-0.90x → 0.92-0.99x of nginx (`make bench --quick`, two runs each).",
    "- **The cached descriptor is lent, not duplicated**: the response sends from the "
    "cache entry's own descriptor and hands it back when done (an entry dropped meanwhile "
    "closes it then), saving a `dup` and a `close` of the six syscalls per hit: 64 KiB "
    "keep-alive CPU per request (`bench.hotpath --size 65536`, median of 7 rounds, twice) "
    "34.7 → 33.3 us and 36.7 → 35.0 us.",
    "- **Parsed heads remembered per worker** (`HeadParser`: up to 256 heads of at most "
    "2 KiB, byte-identical head → the same `Request`, one dict lookup instead of ~3.5 us "
    "of regex and dict building): 64.9k → 35.5k instructions per 1 KiB keep-alive "
    "request; `bench.hotpath` CPU per request 17.6-18.2 → 14.8-15.9 us (three runs each, "
    "alternating); 1 KiB keep-alive 76k → 92-95k req/s (0.98x → 1.27-1.36x of nginx, "
    "two full runs). Real traffic repeats heads (a client polling a URL, health checks, "
    "a CDN refilling); a stream of all-distinct heads pays one lookup and insert "
    "(~0.3 us) per request.",
    "- **Access lines: the request itself is queued, and a batch formats each repeated "
    "request shape once** (same request object, status and size → one escaped middle "
    "part), and **a regular log file takes a flush in one `write`** instead of 4 KiB "
    "chunks (13 vs 26 us per 256 lines; pipes keep `PIPE_BUF` chunks): 52.0k → 45.4k "
    "instructions per logged 1 KiB request, worker side 0.61 → 0.45 us per response. "
    "With the faster unlogged path, the measured drop had risen to 16% in one run; "
    "after these changes, four runs of the experiment (3 rounds each) gave -2 to 11%.",
    "- *Tried, not kept:* registering the listener again after each accept, so idle "
    "workers take turns (EPOLLEXCLUSIVE always wakes the first idle waiter in its queue). "
    "Six 2 s rounds each: one-sided splits fell from 3 to 1, but req/s moved within the "
    "noise (mean 79.0k → 81.5k), and on 2 cores shared with wrk the fastest rounds were "
    "lopsided ones (about 100:28 CPU ticks) anyway; it would cost two syscalls per accept.",
    "- *Tried, not kept:* sending files over 16 KiB with the full path and `sendfile` "
    "(no cache): 64 KiB keep-alive fell to 0.65-0.70x of nginx.",
    "- **Date formatted once per second**, **`os.sendfile`** for files over 64 KiB in "
    "chunks of at most 2 MiB with the head sent `MSG_MORE`, and **access-log lines "
    "buffered** (flushed at 32 KiB, every second, on reopen and on exit, in whole-line "
    "writes): part of the design from the start, not measured separately.",
]


# What is known to hold forkserver back where a target is missed (measured with
# strace -c, bench/hotpath.py and repeated runs; see the optimization list).
LIMIT_LINES = [
    "- **Run-to-run spread.** wrk shares the 2 CPUs with the servers, and how the "
    "connections of a round land on the workers changes the result (see *CPU during the "
    "load*): in eight runs on this machine, 1 KiB keep-alive measured 1.17-1.36x, "
    "1 KiB close 0.84-1.03x, 64 KiB 1.04-1.19x and 10 MiB 0.85-1.02x. "
    "Compare the *Rounds* table before reading a single ratio.",
    "- **1 KiB close.** Per connection forkserver makes two syscalls nginx does not: "
    "`getsockname` (CPython checks the descriptor when it wraps an accepted socket) and "
    "`ioctl(FIONBIO)` (Python's accept cannot ask for SOCK_NONBLOCK), and a Python "
    "object per connection.",
    "- **64 KiB keep-alive.** Per request: `recv`, `send` of the head, `fstat` (the "
    "check that the file has not changed since the head was built, which keeps a "
    "response from mixing two versions of a file) and `sendfile`; nginx does not make "
    "the `fstat`.",
    "- **10 MiB.** The kernel's copying is the work: both servers `sendfile` in chunks "
    "of at most 2 MiB, and forkserver adds one `fstat` per chunk. With 4 connections, "
    "rounds of the same server have ranged from 1.6 to 2.8 GB/s depending on where wrk "
    "and the busy worker run, more than the difference between the servers.",
]


# ---------------------------------------------------------------- number formatting


def format_rate(value: float, case: LoadCase) -> str:
    return f"{value:,.1f}" if case.measures_throughput else f"{value:,.0f}"


def format_short(value: float) -> str:
    """12.3k, 850, 1.2M: for chart labels."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


# ---------------------------------------------------------------- metrics and targets


def headline(server: ServerReport, case: LoadCase) -> float | None:
    result = server.result(case.key)
    return result.headline(case) if result else None


def small_latency(server: ServerReport, percentile: str) -> float | None:
    result = server.result(SMALL_KEEPALIVE)
    if result is None:
        return None
    return result.latency_p50_seconds if percentile == "p50" else result.latency_p99_seconds


@dataclass(frozen=True)
class Target:
    label: str
    value_of: Callable[[ServerReport], float | None]
    unit: str
    threshold: float
    against_nginx: bool  # threshold is a ratio to nginx's value; else an absolute value
    higher_is_better: bool


@dataclass(frozen=True)
class Verdict:
    target: Target
    met: bool | None  # None: not measured
    forkserver_value: float | None
    nginx_value: float | None
    achieved: str  # "0.85x" against nginx, "31.2 MiB" absolute
    gap: str  # how far from the target, either way


def build_targets(run: BenchmarkRun) -> list[Target]:
    def case_value(key: str) -> Callable[[ServerReport], float | None]:
        case = run.case(key)
        return lambda server: headline(server, case) if case else None

    def p99_milliseconds(server: ServerReport) -> float | None:
        latency = small_latency(server, "p99")
        return None if latency is None else latency * MILLISECONDS

    def peak_pss(server: ServerReport) -> float | None:
        return server.peak_pss_mib

    small_keepalive, small_close, medium, large = (SMALL_KEEPALIVE, SMALL_CLOSE,
                                                   MEDIUM_KEEPALIVE, LARGE_THROUGHPUT)
    return [
        Target("1 KiB keep-alive req/s ≥ 1.0x nginx", case_value(small_keepalive), "req/s",
               1.0, True, True),
        Target("1 KiB close req/s ≥ 0.8x nginx", case_value(small_close), "req/s",
               0.8, True, True),
        Target("64 KiB keep-alive req/s ≥ 1.0x nginx", case_value(medium), "req/s",
               1.0, True, True),
        Target("10 MiB MiB/s ≥ 0.9x nginx", case_value(large), "MiB/s", 0.9, True, True),
        Target("p99 at 1 KiB keep-alive ≤ 2x nginx's", p99_milliseconds, "ms",
               2.0, True, False),
        Target(f"peak PSS (master + {run.workers} workers) ≤ {PSS_TARGET_MIB:g} MiB", peak_pss,
               "MiB", PSS_TARGET_MIB, False, False),
        Target(f"new request with {IDLE_CONNECTIONS:,} idle connections open, slowest of "
               f"{IDLE_PROBES} < {IDLE_LATENCY_TARGET_MS:g} ms", idle_probe_ms, "ms",
               IDLE_LATENCY_TARGET_MS, False, False),
        Target(f"worker memory per idle connection < {IDLE_BYTES_TARGET:g} bytes",
               idle_bytes, "bytes", IDLE_BYTES_TARGET, False, False),
        Target(f"1 KiB keep-alive drop with the access log on ≤ "
               f"{ACCESS_LOG_DROP_TARGET_PERCENT:g}%", access_log_drop, "%",
               ACCESS_LOG_DROP_TARGET_PERCENT, False, False),
        *site_targets(run.site),
    ]


def site_targets(site: SiteRun | None) -> list[Target]:
    """The real-traffic cases' targets, at the main worker count."""
    if site is None:
        return []
    workers = site.main_workers

    def value(function: Callable[[SiteRun, str, int, str], float | None], key: str
              ) -> Callable[[ServerReport], float | None]:
        return lambda server: function(site, server.name, workers, key)

    targets = []
    for key, title in ((SITE_UNIFORM, "site mix, uniform"), (SITE_ZIPF, "site mix, Zipf")):
        targets += [
            Target(f"{title} req/s ≥ 1.0x nginx", value(requests_per_second, key), "req/s",
                   1.0, True, True),
            Target(f"{title}: server CPU per request ≤ 1.25x nginx's",
                   value(cpu_per_request, key), "µs", 1.25, True, False),
        ]
    return [
        *targets,
        Target("cold req/s ≥ 0.8x nginx", value(requests_per_second, COLD), "req/s",
               0.8, True, True),
        Target(f"peak PSS (master + {workers} workers) under the site mix ≤ "
               f"{SITE_PSS_TARGET_MIB:g} MiB", lambda server: site_mix_peak_pss(
                   site, server.name), "MiB", SITE_PSS_TARGET_MIB, False, False),
    ]


def idle_probe_ms(server: ServerReport) -> float | None:
    return None if server.idle is None else server.idle.probe_max_seconds * MILLISECONDS


def idle_bytes(server: ServerReport) -> float | None:
    return None if server.idle is None else server.idle.bytes_per_connection


def access_log_drop(server: ServerReport) -> float | None:
    return None if server.access_log is None else server.access_log.drop_percent


def judge(target: Target, forkserver: ServerReport | None, nginx: ServerReport | None
          ) -> Verdict:
    ours = target.value_of(forkserver) if forkserver else None
    theirs = target.value_of(nginx) if nginx else None
    if ours is None or (target.against_nginx and not theirs):
        return Verdict(target, None, ours, theirs, MISSING, "not measured")
    if target.against_nginx and theirs:
        achieved = ours / theirs
        shown = f"{achieved:.2f}x"
    else:
        achieved = ours
        shown = f"{achieved:,.1f} {target.unit}"
    if target.higher_is_better:
        met = achieved >= target.threshold
        if met:
            gap = f"{(achieved / target.threshold - 1) * 100:.0f}% above the target"
        elif achieved:
            gap = f"needs +{(target.threshold / achieved - 1) * 100:.0f}%"
        else:
            gap = "nothing served"
    else:
        met = achieved <= target.threshold
        if met:
            gap = f"{(1 - achieved / target.threshold) * 100:.0f}% under the limit"
        else:
            gap = f"needs -{(1 - target.threshold / achieved) * 100:.0f}%"
    return Verdict(target, met, ours, theirs, shown, gap)


def verdicts(run: BenchmarkRun) -> list[Verdict]:
    forkserver, nginx = run.server(FORKSERVER), run.server(NGINX)
    return [judge(target, forkserver, nginx) for target in build_targets(run)]


# ---------------------------------------------------------------- markdown


def case_cell(server: ServerReport, case: LoadCase) -> str:
    outcome = server.outcome(case.key)
    if outcome is None:
        return MISSING
    if isinstance(outcome, LoadFailure):
        return "failed"
    cell = format_rate(outcome.headline(case), case)
    return cell + SATURATED_MARK if outcome.wrk_saturated else cell


def latency_cell(server: ServerReport) -> str:
    p50, p99 = small_latency(server, "p50"), small_latency(server, "p99")
    if p50 is None or p99 is None:
        return MISSING
    return f"{format_ms(p50)} / {format_ms(p99)}"


def memory_cell(server: ServerReport) -> str:
    if server.peak_pss_mib is None:
        return MISSING
    return f"{server.peak_pss_mib:.1f} ({server.peak_process_count} proc)"


def wrk_cpu_cell(server: ServerReport, cases: tuple[LoadCase, ...]) -> str:
    parts = []
    for case in cases:
        result = server.result(case.key)
        parts.append(f"{result.wrk_cpu_percent:.0f}" if result else MISSING)
    return " / ".join(parts)


def errors_cell(server: ServerReport, cases: tuple[LoadCase, ...]) -> str:
    """Errors of every round (not only the median one), per case."""
    parts = []
    for case in cases:
        for number, outcome in enumerate(server.rounds.get(case.key, []), start=1):
            if isinstance(outcome, WrkResult) and outcome.error_summary():
                parts.append(f"{case.title} round {number}: {outcome.error_summary()}")
            elif isinstance(outcome, LoadFailure):
                parts.append(f"{case.title} round {number}: wrk failed")
    return "; ".join(parts) or "0"


def results_table(run: BenchmarkRun) -> str:
    header = ["server", *(f"{case.title} {case.unit}" for case in run.cases),
              "p50 / p99 1 KiB ms", "peak PSS MiB", "wrk CPU %", "errors"]
    rows = []
    for server in run.servers:
        if server.not_benchmarked is not None:
            rows.append([server.name, *(["not benchmarked"] + [MISSING] * (len(header) - 2))])
            continue
        rows.append([server.name, *(case_cell(server, case) for case in run.cases),
                     latency_cell(server), memory_cell(server),
                     wrk_cpu_cell(server, run.cases), errors_cell(server, run.cases)])
    forkserver, nginx = run.server(FORKSERVER), run.server(NGINX)
    if forkserver and nginx and forkserver.not_benchmarked is None \
            and nginx.not_benchmarked is None:
        ratio_row = ["**forkserver ÷ nginx**"]
        ratio_row += [format_ratio(ratio_of(headline(forkserver, case), headline(nginx, case)))
                      for case in run.cases]
        p50 = ratio_of(small_latency(forkserver, "p50"), small_latency(nginx, "p50"))
        p99 = ratio_of(small_latency(forkserver, "p99"), small_latency(nginx, "p99"))
        ratio_row.append(f"{format_ratio(p50)} / {format_ratio(p99)}")
        ratio_row.append(format_ratio(ratio_of(forkserver.peak_pss_mib, nginx.peak_pss_mib)))
        ratio_row += ["", ""]
        rows.append(ratio_row)
    return markdown_table(header, rows, left_aligned=(0, len(header) - 1))


def table_footnotes(run: BenchmarkRun) -> list[str]:
    notes = [
        f"{SATURATED_MARK} wrk's one thread used ≥ {WRK_SATURATED_CPU_PERCENT:.0f}% of a CPU: "
        "the load generator, not the server, may be the limit of that number.",
        "wrk CPU % is per case in column order "
        f"({' / '.join(case.title for case in run.cases)}).",
        "errors: wrk's socket errors (connect, read, write, timeout) and responses with "
        "status ≥ 400, per case; 0 = none in any case.",
    ]
    notes += [f"{server.name}: {server.note}." for server in run.servers]
    notes += [f"{server.name} was not benchmarked: {server.not_benchmarked}"
              for server in run.servers if server.not_benchmarked]
    return notes


def format_target_value(value: float | None, unit: str) -> str:
    if value is None:
        return MISSING
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.2f} {unit}"


def targets_table(run: BenchmarkRun) -> str:
    rows = []
    for verdict in verdicts(run):
        mark = {True: "met", False: "**not met**", None: "not measured"}[verdict.met]
        nginx = format_target_value(verdict.nginx_value, verdict.target.unit) \
            if verdict.target.against_nginx else ""
        rows.append([verdict.target.label,
                     format_target_value(verdict.forkserver_value, verdict.target.unit),
                     nginx, verdict.achieved, mark, verdict.gap])
    return markdown_table(["target", "forkserver", "nginx", "achieved", "verdict", "gap"],
                          rows, left_aligned=(0, 4, 5))


def format_split(split: tuple[float, ...]) -> str:
    return " + ".join(f"{seconds:.1f}" for seconds in split)


def worker_cpu_text(server: ServerReport, cases: tuple[LoadCase, ...]) -> str:
    parts = []
    for case in cases:
        splits = [split for split in server.worker_cpu.get(case.key, []) if len(split) > 1]
        if splits:
            parts.append(f"{case.title} " + ", ".join(format_split(split) for split in splits))
    if not parts:
        return ""
    return "; per case and round, workers busiest first (s): " + "; ".join(parts)


def rounds_table(run: BenchmarkRun) -> str:
    """Every round's headline number: shows the spread the median hides."""
    header = ["server", *(f"{case.title} {case.unit}" for case in run.cases)]
    rows = []
    for server in run.servers:
        if server.not_benchmarked is not None:
            continue
        cells = []
        for case in run.cases:
            values = [format_rate(outcome.headline(case), case)
                      if isinstance(outcome, WrkResult) else "failed"
                      for outcome in server.rounds.get(case.key, [])]
            cells.append(", ".join(values) or MISSING)
        rows.append([server.name, *cells])
    return markdown_table(header, rows)


def interference_warning(run: BenchmarkRun) -> list[str]:
    """A paragraph for the top of the report when other work disturbed the run."""
    others, steal = run.others_cpu_percent or 0.0, run.steal_cpu_percent or 0.0
    if others + steal < INTERFERENCE_WARNING_PERCENT:
        return []
    return [f"**This run was disturbed:** processes outside the benchmark used {others:.0f}% "
            f"of the CPUs and the hypervisor stole {steal:.0f}% while it ran, so absolute "
            "numbers are low and noisy; ratios to nginx suffer less, since the servers took "
            "turns. Rerun on a quiet machine before drawing conclusions.", ""]


def cpu_lines(run: BenchmarkRun) -> list[str]:
    lines = [f"- {server.name}: {server.cpu_by_process}{worker_cpu_text(server, run.cases)}"
             for server in run.servers if server.cpu_by_process]
    if run.others_cpu_percent is not None and run.steal_cpu_percent is not None:
        lines.append(f"- interference: processes outside the benchmark used "
                     f"{run.others_cpu_percent:.1f}% of the machine's {run.machine.cpus} CPUs "
                     f"and the hypervisor stole {run.steal_cpu_percent:.1f}% (above a few "
                     "percent together, every number above is skewed)")
    return lines


def incident_lines(run: BenchmarkRun) -> list[str]:
    lines = []
    for server in run.servers:
        for incident in server.incidents:
            lines.append(f"- {server.name}: {incident}")
    return lines


def render_markdown(run: BenchmarkRun, chart_name: str | None) -> str:
    cases = ", ".join(f"{case.title} ({case.connections} connections)" for case in run.cases)
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `{run.command}` on {run.started_at:%Y-%m-%d %H:%M %Z} in "
        f"{run.elapsed_seconds:.0f} s. Regenerate with `make bench`; this file and "
        "`benchmarks.png` are overwritten by every run, so do not edit them by hand.",
        "",
        *interference_warning(run),
        "## Machine",
        "",
        markdown_table(["", ""], [list(row) for row in run.machine.rows()],
                       left_aligned=(0, 1)),
        "",
        "## Method",
        "",
        "- Every server listens on 127.0.0.1 and serves the same temporary docroot of "
        "random files (1 KiB, 64 KiB, 10 MiB), checked byte-exact (sha256) before any load.",
        f"- Same worker count for all: {run.workers} (forkserver, nginx, gunicorn); "
        "`python -m http.server` is one process whatever the count.",
        f"- wrk, one thread, {run.rounds} round(s) of {run.seconds_per_case} s per case, after "
        f"a short warm-up: {cases}. Servers take turns within each round, so drift hits "
        "every server alike. Each round opens new connections; the tables show the median "
        "round, and every round is listed under *Rounds*.",
        "- Latency is wrk's p50 / p99 in the 1 KiB keep-alive case (a saturated server: "
        "queueing included).",
        "- Peak PSS is the largest sum of `Pss:` (`/proc/PID/smaps_rollup`) over the whole "
        "process tree (master + workers), sampled every 100 ms while the load runs.",
        "- The load generator shares the machine's CPUs with the server, so on a small "
        "machine every number is partly a measure of how little CPU a server needs.",
        "- The real-traffic cases (site mix, cold) are described in their own section.",
        "",
        "## Results",
        "",
        results_table(run),
        "",
        *(f"- {note}" for note in table_footnotes(run)),
        "",
        "## Targets (forkserver against nginx in the same run)",
        "",
        targets_table(run),
        "",
    ]
    if any(verdict.met is False for verdict in verdicts(run)):
        parts += ["## What limits the targets not met", "", *LIMIT_LINES, ""]
    if run.site is not None:
        parts += site_section(run.site)
    parts += ["## forkserver against itself", "", *extras_lines(run), ""]
    parts += ["## Optimizations and their measured effect", "", *OPTIMIZATION_LINES, ""]
    parts += ["## Rounds", "", rounds_table(run), ""]
    parts += ["## CPU during the load", "",
              "Totals cover all cases and the warm-up; the split shows how evenly each "
              "server's workers shared the work in each round.", "", *cpu_lines(run), ""]
    incidents = incident_lines(run)
    parts += ["## Incidents", ""]
    parts += incidents or ["None: no server crashed, replaced a worker or logged a problem."]
    parts.append("")
    if chart_name:
        parts += ["## Chart", "", f"![Benchmark results]({chart_name})", ""]
    parts += [
        "## Running it",
        "",
        "`make bench` runs `python -m bench` (about seven minutes, half of it the real-traffic "
        "cases; the first run also generates their trees; installs nginx-light and "
        "wrk with apt-get and gunicorn and matplotlib with pip when they are missing). Flags:",
        "",
        "- `--quick`: one round of 2 s per case (about 40 s; noisier).",
        "- `--seconds N`, `--rounds N`: wrk duration and runs per case and server "
        "(default 2 s, 5 rounds; the median round is reported).",
        "- `--workers N`: workers for every server (default 2).",
        "- `--connections N`, `--large-file-connections N`: wrk connections "
        "(default 50 and 4).",
        "- `--servers forkserver,nginx`: a subset; this file is rewritten only when "
        "forkserver and nginx both ran.",
        "- `--no-write`: print the tables only; `--output-dir DIR`: write this file and "
        "the chart to DIR instead, whatever ran.",
        "- `--cases LIST`: only these cases (`1k-keepalive`, `1k-close`, `64k-keepalive`, "
        "`10m-throughput`, `site-mix-uniform`, `site-mix-zipf`, `cold`; `classic` and "
        "`site-mix` stand for their groups), e.g. `--cases site-mix,cold` to iterate on the "
        "real-traffic cases; this file is rewritten only when every case ran, and "
        "forkserver's experiments against itself run only with `1k-keepalive`.",
        "- `--site-workers LIST`: worker counts for the real-traffic cases (default 1,2); "
        "counts other than `--workers` run forkserver and nginx only, in fewer rounds.",
        "- `--site-store DIR`: where the generated trees are kept between runs (default "
        "under the system's temporary directory; about 210 MiB).",
        "- `--wrk-cpus LIST`: run wrk under `taskset -c LIST` and the servers on the other "
        "CPUs (for machines with CPUs to spare; see *On a bigger machine*).",
        "- `--profile [CASE]`: run forkserver with one worker under py-spy for one case "
        "(`1k-keepalive` by default) and write a flamegraph to `bench/results/`.",
        "",
    ]
    return "\n".join(parts)


def format_rates(rates: list[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)


def extras_lines(run: BenchmarkRun) -> list[str]:
    """The access-log and idle-connection experiments in words (bench/extras.py)."""
    forkserver = run.server(FORKSERVER)
    if forkserver is None:
        return ["Not run: forkserver was not benchmarked."]
    lines = []
    logged = forkserver.access_log
    if logged is not None:
        lines.append(
            f"- Access log: two forkservers took turns ({len(logged.plain_rounds)} rounds of "
            f"{ACCESS_LOG_ROUND_SECONDS} s, 1 KiB keep-alive), one logging every request to a "
            f"file: {logged.plain_requests_per_second:,.0f} req/s without, "
            f"{logged.logged_requests_per_second:,.0f} req/s with it (medians), a "
            f"{logged.drop_percent:.1f}% drop; rounds without "
            f"{format_rates(logged.plain_rounds)}, with {format_rates(logged.logged_rounds)}. "
            f"wrk completed {logged.requests:,} requests "
            f"against the logging one; its log holds {logged.log_lines:,} whole lines "
            "(requests still in flight when wrk stopped are logged too).")
    idle = forkserver.idle
    if idle is not None:
        lines.append(
            f"- Idle connections: {idle.connections:,} keep-alive connections, each after one "
            f"request, held open: the workers' PSS went from "
            f"{idle.worker_pss_before / MIB_BYTES:.1f} MiB to "
            f"{idle.worker_pss_after / MIB_BYTES:.1f} MiB, "
            f"{idle.bytes_per_connection:,.0f} bytes per connection. Meanwhile {IDLE_PROBES} "
            f"requests on fresh connections took {idle.probe_p50_seconds * MILLISECONDS:.2f} ms "
            f"(median), {idle.probe_max_seconds * MILLISECONDS:.2f} ms at most.")
    lines += [f"- {failure}" for failure in run.extras_failures]
    return lines or ["Not run."]


def render_console(run: BenchmarkRun) -> str:
    """What the terminal gets: the tables, footnotes and incidents, no method prose."""
    parts = ["", results_table(run), ""]
    parts += [f"- {note}" for note in table_footnotes(run)]
    parts += ["", "Every round:", "", rounds_table(run), ""]
    parts += ["", targets_table(run), "", *extras_lines(run), ""]
    parts += ["CPU during the load:", *cpu_lines(run), ""]
    parts += incident_lines(run) or ["No incidents."]
    if run.site is not None:
        parts += site_console(run.site)
    return "\n".join(parts)


# ---------------------------------------------------------------- chart


def draw_chart(run: BenchmarkRun, path: Path) -> None:
    """Grouped bars: throughput per case normalized to nginx = 1.0 (absolute values
    written on the bars), then p50/p99 latency at 1 KiB, then peak PSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    servers = [server for server in run.servers if server.not_benchmarked is None]
    nginx = run.server(NGINX)
    figure, (rates, latency, memory) = plt.subplots(
        1, 3, figsize=(16, 5.5), gridspec_kw={"width_ratios": [3.2, 1.4, 1.1]}
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(len(servers), 1)

    for index, server in enumerate(servers):
        offsets = [case_index + (index - (len(servers) - 1) / 2) * width
                   for case_index in range(len(run.cases))]
        heights, labels = [], []
        for case in run.cases:
            value = headline(server, case)
            reference = headline(nginx, case) if nginx else None
            if value is None:
                heights.append(0.0)
                labels.append("n/a")
                continue
            heights.append(value / reference if reference else math.nan)
            labels.append(format_short(value))
        bars = rates.bar(offsets, heights, width, label=server.name,
                         color=colors[index % len(colors)])
        rates.bar_label(bars, labels=labels, rotation=90, padding=2, fontsize=8)
    rates.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    rates.set_xticks(range(len(run.cases)),
                     [f"{case.title}\n({case.unit})" for case in run.cases])
    rates.set_ylabel("relative to nginx (= 1.0)")
    rates.set_title(f"Throughput, {run.workers} workers, wrk -t1 (absolute on bars)")
    top = max((bar.get_height() for bar in rates.patches
               if not math.isnan(bar.get_height())), default=1.0)
    rates.set_ylim(0, top * 1.3)
    rates.legend(loc="upper center", fontsize=8, ncol=len(servers))

    names = [server.name for server in servers]
    p50 = [(small_latency(server, "p50") or 0.0) * MILLISECONDS for server in servers]
    p99 = [(small_latency(server, "p99") or 0.0) * MILLISECONDS for server in servers]
    positions = range(len(servers))
    for offset, values, label, color in ((-0.2, p50, "p50", "#7fa7d9"),
                                         (0.2, p99, "p99", "#1f4e8c")):
        bars = latency.bar([p + offset for p in positions], values, 0.4, label=label,
                           color=color)
        latency.bar_label(bars, labels=[format_ms(value / MILLISECONDS) for value in values],
                          fontsize=7)
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    latency.set_xticks(list(positions), names, rotation=20)
    latency.set_ylabel("ms (log scale)")
    latency.set_title("Latency, 1 KiB keep-alive")
    measured = [value for value in (*p50, *p99) if value > 0] or [1.0]
    latency.set_ylim(min(measured) / 3, max(measured) * 3)
    latency.legend(fontsize=8, loc="upper left", ncol=2)

    pss = [server.peak_pss_mib or 0.0 for server in servers]
    bars = memory.bar(list(positions), pss, 0.6,
                      color=[colors[i % len(colors)] for i in positions])
    memory.bar_label(bars, labels=[f"{value:.1f}" for value in pss], fontsize=8)
    memory.axhline(PSS_TARGET_MIB, color="red", linewidth=0.8, linestyle="--",
                   label="forkserver target")
    memory.set_ylim(0, max([*pss, PSS_TARGET_MIB]) * 1.25)
    memory.set_xticks(list(positions), names, rotation=20)
    memory.set_ylabel("MiB")
    memory.set_title("Peak PSS, whole process tree")
    memory.legend(fontsize=8, loc="upper left")

    figure.suptitle(f"forkserver benchmark, {run.started_at:%Y-%m-%d}, "
                    f"{run.machine.cpus} CPUs ({run.machine.cpu_model})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
