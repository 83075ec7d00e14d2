"""What else a run saw, in words: interference from other work, how the CPU was
split among each server's workers, incidents, and forkserver's experiments against
itself (access log, idle connections).
"""

from __future__ import annotations

from bench.extras import ACCESS_LOG_ROUND_SECONDS, IDLE_PROBES
from bench.load import LoadCase
from bench.markdown import MILLISECONDS
from bench.measured import BenchmarkRun, ServerReport
from bench.servers import FORKSERVER

MIB_BYTES = 1024 * 1024
# Other work using this share of the CPUs during the load earns the report a warning.
INTERFERENCE_WARNING_PERCENT = 5.0

def interference_warning(run: BenchmarkRun) -> list[str]:
    """A paragraph for the top of the report when other work disturbed the run."""
    others, steal = run.others_cpu_percent or 0.0, run.steal_cpu_percent or 0.0
    if others + steal < INTERFERENCE_WARNING_PERCENT:
        return []
    return [f"**This run was disturbed:** processes outside the benchmark used {others:.0f}% "
            f"of the CPUs and the hypervisor stole {steal:.0f}% while it ran, so absolute "
            "numbers are low and noisy; ratios to nginx suffer less, since the servers took "
            "turns. Rerun on a quiet machine before drawing conclusions.", ""]

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
