"""The report's section on sites and rules (issue 17): each pair's rounds, its medians
and its drop, and the wrong-password flood's figure.

Owns the words and the table of that section (the targets table's rows are
bench/targets.py's ``sites_targets``). Runs nothing and measures nothing.
"""

from __future__ import annotations

from bench.markdown import markdown_table
from bench.sites import (
    AUTH_FLOOD,
    FLOOD_CONNECTIONS,
    FLOOD_COST,
    FLOOD_P99_TARGET_MS,
    FLOOD_WRK_CONNECTIONS,
    PAIRED_CASES,
    TARGETS,
    TITLES,
    SitesRun,
)


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def sites_section(run: SitesRun) -> list[str]:
    rows = []
    for key in PAIRED_CASES:
        pair = run.pairs.get(key)
        if pair is None:
            continue
        rows.append([
            f"`{key}`: {TITLES[key]}", f"{pair.plain:,.0f}", f"{pair.configured:,.0f}",
            f"{pair.drop_percent:+.1f}%", f"< {TARGETS[key]:g}%",
            verdict(pair.drop_percent < TARGETS[key]),
            ", ".join(f"{a:,.0f}/{b:,.0f}" for a, b in zip(pair.plain_rounds,
                                                          pair.configured_rounds, strict=True)),
        ])
    lines = [
        "## Sites and rules (issue 17)", "",
        "forkserver against itself: two servers side by side, the one without the "
        "configuration and the one with it, a warm-up round each, then in turns, the "
        "order swapped every round; the medians compared (a drop is the share of req/s "
        "lost). The site mix is the uniform one, every request naming the 20th site by "
        "Host; the baseline of `sites-20` has no `sites:` at all (the one site a plain "
        "configuration serves, which does not route), so the figure includes the router.",
        "",
    ]
    if rows:
        lines += [markdown_table(
            ["case", "without req/s", "with req/s", "drop", "target", "verdict",
             "rounds (without/with)"], rows, left_aligned=(0, 5, 6)), ""]
    if run.flood_p99_ms is not None:
        lines += [
            f"`{AUTH_FLOOD}`: one worker; {FLOOD_CONNECTIONS} connections send wrong "
            f"passwords back to back (bcrypt cost {FLOOD_COST}, a new password each time) "
            f"and got {run.flood_wrong_passwords:,} 401s, while wrk fetched 1 KiB over "
            f"{FLOOD_WRK_CONNECTIONS} other connections ({run.flood_requests:,} requests): "
            f"its p99 was {run.flood_p99_ms:.1f} ms (target < {FLOOD_P99_TARGET_MS:g} ms: "
            f"{verdict(run.flood_p99_ms < FLOOD_P99_TARGET_MS)}).", "",
        ]
    if run.incidents:
        lines += ["Incidents:", "", *[f"- {incident}" for incident in run.incidents], ""]
    return lines
