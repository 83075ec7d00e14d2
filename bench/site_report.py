"""The real-traffic cases in words and tables (bench/sitecases.py's measurements).

Owns the values the verdict table judges for these cases, and the report's section
on them: method, a table per worker count, the system-call breakdown, scaling, every
round, incidents, and how to run them on a bigger machine. Measures nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.docroot import KIB
from bench.load import WRK_SATURATED_CPU_PERCENT, WrkResult
from bench.markdown import MISSING, format_ms, format_ratio, markdown_table, ratio_of
from bench.servers import FORKSERVER, NGINX
from bench.sitecases import (
    COUNTED_SERVERS,
    SITE_MIX_CASES,
    SiteCase,
    SiteMeasurement,
    SiteRun,
)
from bench.sitemix import SEQUENCE_LENGTH, ZIPF_EXPONENT
from bench.syscalls import PERF

SATURATED_MARK = "†"
SITE_PSS_TARGET_MIB = 64.0
SiteValue = Callable[[SiteRun, str, int, str], float | None]


def requests_per_second(site: SiteRun, server: str, workers: int, case_key: str
                        ) -> float | None:
    measurement = site.get(server, workers, case_key)
    result = measurement.result() if measurement else None
    return result.requests_per_second if result else None


def cpu_per_request(site: SiteRun, server: str, workers: int, case_key: str) -> float | None:
    measurement = site.get(server, workers, case_key)
    return measurement.cpu_us_per_request() if measurement else None


def syscalls_per_request(site: SiteRun, server: str, workers: int, case_key: str
                         ) -> float | None:
    measurement = site.get(server, workers, case_key)
    counted = measurement.syscalls if measurement else None
    return counted.per_request if counted and counted.requests else None


def site_mix_peak_pss(site: SiteRun, server: str) -> float | None:
    """The largest peak PSS over the site-mix cases at the main worker count."""
    peaks = [measurement.peak_pss_mib for key in SITE_MIX_CASES
             if (measurement := site.get(server, site.main_workers, key)) is not None
             and measurement.peak_pss_mib is not None]
    return max(peaks) if peaks else None


# ---------------------------------------------------------------- tables


def rate_cell(measurement: SiteMeasurement | None) -> str:
    result = measurement.result() if measurement else None
    if measurement is None:
        return MISSING
    if result is None:
        return "failed"
    cell = f"{result.requests_per_second:,.0f}"
    return cell + SATURATED_MARK if result.wrk_cpu_percent >= WRK_SATURATED_CPU_PERCENT \
        else cell


def number(value: float | None, digits: int = 0) -> str:
    return MISSING if value is None else f"{value:,.{digits}f}"


def errors_cell(measurement: SiteMeasurement) -> str:
    parts = []
    for index, outcome in enumerate(measurement.rounds, start=1):
        summary = outcome.error_summary() if isinstance(outcome, WrkResult) else "wrk failed"
        if summary:
            parts.append(f"round {index}: {summary}")
    return "; ".join(parts) or "0"


def case_rows(site: SiteRun, case: SiteCase, workers: int) -> list[list[str]]:
    rows = []
    for server in site.servers_at(workers):
        measurement = site.get(server, workers, case.key)
        if measurement is None:
            continue
        result = measurement.result()
        latency = (f"{format_ms(result.latency_p50_seconds)} / "
                   f"{format_ms(result.latency_p99_seconds)}") if result else MISSING
        syscalls = measurement.syscalls
        rows.append([
            case.title, server, rate_cell(measurement), latency,
            number(measurement.cpu_us_per_request()),
            number(syscalls.per_request, 2) if syscalls else (
                "not counted" if server in COUNTED_SERVERS else MISSING),
            number(measurement.peak_pss_mib, 1),
            f"{result.wrk_cpu_percent:.0f}" if result else MISSING,
            errors_cell(measurement)])
    ours, theirs = site.get(FORKSERVER, workers, case.key), site.get(NGINX, workers, case.key)
    if ours and theirs:
        def ratio(value_of: SiteValue) -> str:
            return format_ratio(ratio_of(value_of(site, FORKSERVER, workers, case.key),
                                         value_of(site, NGINX, workers, case.key)))
        ours_result, theirs_result = ours.result(), theirs.result()
        p99 = ratio_of(ours_result.latency_p99_seconds if ours_result else None,
                       theirs_result.latency_p99_seconds if theirs_result else None)
        rows.append([case.title, "**forkserver ÷ nginx**", ratio(requests_per_second),
                     f"p99 {format_ratio(p99)}", ratio(cpu_per_request),
                     ratio(syscalls_per_request),
                     format_ratio(ratio_of(ours.peak_pss_mib, theirs.peak_pss_mib)), "", ""])
    return rows


def results_table(site: SiteRun, workers: int) -> str:
    rows = [row for case in site.cases for row in case_rows(site, case, workers)]
    return markdown_table(["case", "server", "req/s", "p50 / p99 ms", "server CPU µs/req",
                           "syscalls/req", "peak PSS MiB", "wrk CPU %", "errors"],
                          rows, left_aligned=(0, 1, 8))


def scaling_table(site: SiteRun) -> str:
    rows = []
    for case in site.cases:
        for workers in site.worker_counts:
            values = [(requests_per_second(site, name, workers, case.key),
                       cpu_per_request(site, name, workers, case.key),
                       syscalls_per_request(site, name, workers, case.key))
                      for name in (FORKSERVER, NGINX)]
            (rate, cpu, calls), (nginx_rate, nginx_cpu, nginx_calls) = values
            rows.append([case.title, str(workers), number(rate), number(nginx_rate),
                         format_ratio(ratio_of(rate, nginx_rate)), number(cpu),
                         number(nginx_cpu), number(calls, 2), number(nginx_calls, 2)])
    return markdown_table(["case", "workers", "forkserver req/s", "nginx req/s", "ratio",
                           "forkserver CPU µs/req", "nginx CPU µs/req",
                           "forkserver syscalls/req", "nginx syscalls/req"],
                          rows, left_aligned=(0,))


def syscall_lines(site: SiteRun) -> list[str]:
    lines = []
    for (server, workers, key), measurement in site.measurements.items():
        title = next(case.title for case in site.cases if case.key == key)
        if measurement.syscalls:
            counted = measurement.syscalls
            lines.append(f"- {title}, {server}, {workers} worker(s): "
                         f"{counted.per_request:.2f} per request ({counted.total:,} calls, "
                         f"{counted.requests:,} requests, {counted.method}): {counted.top(8)}")
        elif measurement.syscall_failure:
            lines.append(f"- {title}, {server}, {workers} worker(s): not counted: "
                         f"{measurement.syscall_failure}")
    return lines


def rounds_lines(site: SiteRun) -> list[str]:
    lines = []
    for (server, workers, key), measurement in site.measurements.items():
        title = next(case.title for case in site.cases if case.key == key)
        rates = [f"{outcome.requests_per_second:,.0f}"
                 if isinstance(outcome, WrkResult) else "failed"
                 for outcome in measurement.rounds]
        cpu = ", ".join(f"{value:.0f}" for value in measurement.cpu_per_request)
        lines.append(f"- {title}, {server}, {workers} worker(s): req/s {', '.join(rates)}; "
                     f"server CPU µs/req {cpu or MISSING}")
    return lines


def method_lines(site: SiteRun) -> list[str]:
    lines = []
    for tree in site.trees.values():
        largest = max(file.size for file in tree.files)
        indexes = sum(file.url_tail.endswith("/") for file in tree.files)
        kinds = ", ".join(kind.suffix for kind in tree.spec.kinds)
        lines.append(
            f"- `/{tree.spec.name}/`: {len(tree.files):,} files ({kinds}), "
            f"{tree.total_bytes / KIB / KIB:.0f} MiB, log-normal sizes per type: median "
            f"{tree.median_bytes / KIB:.1f} KiB, largest {largest / KIB:.0f} KiB; nested "
            f"directories, {indexes} of them served as `/dir/` by their `index.html`. "
            f"Generated from a fixed seed by bench/sitemix.py and kept between runs.")
    lines += [
        f"- Requests: bench/wrk_site.lua replays a seeded sequence of {SEQUENCE_LENGTH:,} "
        "URL paths (the same for every server): *uniform* over every file of the tree, or "
        f"*Zipf* (the k-th most popular file weighs 1/k^{ZIPF_EXPONENT:g}). *cold* is "
        "uniform over a tree far larger than forkserver's per-worker caches, so nearly "
        "every request misses them (the kernel's page cache still holds the tree: cold "
        "for the servers' own caches, not for the disk).",
        "- Every request head is distinct, like browsers': a `Cookie` with a per-request "
        "counter, and rotating `User-Agent`, `Accept-Language` and `Accept-Encoding`; "
        "`Accept` follows the file type; about 700 bytes per head.",
        f"- wrk, one thread, {site.connections} connections, {site.rounds} round(s) per "
        f"case at {site.main_workers} workers with every server, "
        f"{site.scaling_rounds} round(s) at the other worker counts (forkserver and nginx "
        "only); the tables show the median round by req/s.",
        "- Server CPU per request: user + system CPU of the workers (`/proc/PID/stat`; "
        "http.server's one process) during the round, divided by the requests wrk "
        "completed; the median round.",
        "- System calls per request: one more round per case with a counter attached to "
        "the workers of forkserver and nginx, "
        + ("`perf stat -e raw_syscalls:sys_enter` (plus `syscalls:sys_enter_*` for the "
           "breakdown)" if any(m.syscalls and m.syscalls.method == PERF
                              for m in site.measurements.values())
           else "`strace -c -f` (perf was not usable), which slows the server")
        + ": calls divided by the requests wrk completed in that round; its req/s are "
        "not used. nginx's two `setsockopt` per request are `TCP_CORK` on and off around "
        "`sendfile` (`tcp_nopush on` in the bench's nginx.conf).",
        "- Peak PSS: the whole process tree (master + workers), sampled every 100 ms while "
        "the case ran.",
    ]
    return lines


BIGGER_MACHINE_LINES = [
    "On this 2-CPU machine wrk shares the CPUs with the server, so a server's rate is "
    "partly a measure of how much CPU it leaves to wrk. On a bigger machine, keep them "
    "apart: `--wrk-cpus LIST` runs wrk under `taskset -c LIST` and keeps the benchmark "
    "and the servers off those CPUs. For example, on 8 CPUs, four for the servers and "
    "two for wrk:",
    "",
    "    make bench BENCH_ARGS='--cases site-mix,cold --workers 4 --site-workers 1,2,4 "
    "--wrk-cpus 6,7'",
    "",
    "wrk has one thread: if its CPU column shows ≥ 90%, wrk is the limit, not the server.",
]


def site_section(site: SiteRun) -> list[str]:
    parts = ["## Real traffic: site mix and cold", "", *method_lines(site), ""]
    for workers in [site.main_workers,
                    *(count for count in site.worker_counts if count != site.main_workers)]:
        parts += [f"### {workers} worker(s)", "", results_table(site, workers), ""]
    parts += [f"- {SATURATED_MARK} wrk's one thread used ≥ {WRK_SATURATED_CPU_PERCENT:.0f}% "
              "of a CPU: the load generator may be the limit of that number.", ""]
    if len(site.worker_counts) > 1:
        parts += ["### Scaling", "", scaling_table(site), ""]
    parts += ["### System calls per request", "", *(syscall_lines(site) or ["None counted."]),
              "", "### Every round", "", *rounds_lines(site), ""]
    parts += ["### Incidents", "", *([f"- {incident}" for incident in site.incidents]
                                     or ["None."]), ""]
    parts += ["### On a bigger machine", "", *BIGGER_MACHINE_LINES, ""]
    return parts


def site_console(site: SiteRun) -> list[str]:
    parts = ["", "Real traffic:"]
    for workers in site.worker_counts:
        parts += ["", f"{workers} worker(s):", "", results_table(site, workers)]
    parts += ["", *syscall_lines(site)]
    parts += [f"- {incident}" for incident in site.incidents]
    return parts
