"""Small text helpers shared by the report modules: tables, milliseconds, ratios.

Owns GitHub-flavoured table layout and the number formats every section uses.
"""

from __future__ import annotations

MILLISECONDS = 1000.0
MISSING = "—"


def markdown_table(header: list[str], rows: list[list[str]],
                   left_aligned: tuple[int, ...] = (0,)) -> str:
    """A GitHub table; numbers right-aligned, the columns in ``left_aligned`` left."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    alignment = ["---" if index in left_aligned else "---:" for index in range(len(header))]
    return "\n".join([line(header), line(alignment), *(line(row) for row in rows)])


def format_ms(seconds: float) -> str:
    milliseconds = seconds * MILLISECONDS
    if milliseconds < 10:
        return f"{milliseconds:.2f}"
    return f"{milliseconds:.1f}" if milliseconds < 100 else f"{milliseconds:.0f}"


def format_ratio(ratio: float | None) -> str:
    return MISSING if ratio is None else f"{ratio:.2f}x"


def ratio_of(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
