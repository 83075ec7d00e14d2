"""The classic cases' tables: a row per server with forkserver's ratio to nginx, the
footnotes under it, and every round's number (the spread the median hides).
"""

from __future__ import annotations

from bench.load import WRK_SATURATED_CPU_PERCENT, LoadCase, LoadFailure, WrkResult
from bench.markdown import MISSING, format_ms, format_ratio, markdown_table, ratio_of
from bench.measured import BenchmarkRun, ServerReport, headline, small_latency
from bench.servers import FORKSERVER, NGINX

SATURATED_MARK = "†"

def format_rate(value: float, case: LoadCase) -> str:
    return f"{value:,.1f}" if case.measures_throughput else f"{value:,.0f}"

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
