"""The bar chart ``docs/benchmarks.png``: throughput relative to nginx, 1 KiB latency,
peak PSS. matplotlib is imported only when a chart is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.markdown import MILLISECONDS, format_ms
from bench.measured import BenchmarkRun, headline, small_latency
from bench.servers import NGINX
from bench.targets import PSS_TARGET_MIB


def format_short(value: float) -> str:
    """12.3k, 850, 1.2M: for chart labels."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"

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
