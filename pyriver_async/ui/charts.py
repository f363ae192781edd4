"""Charts as inline SVG, drawn on the server from numbers.

No JavaScript and no style attributes: colours come from CSS classes (so dark mode is
a stylesheet matter), every bar has a ``<title>`` for hover, and the templates put the
same numbers in a ``<table>`` beside each chart. This is the one module allowed to
build markup: everything it writes is a number it computed or text it escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Bar", "histogram", "series_class", "sparkline", "stacked_bars", "state_strip"]

_NAMED = frozenset(
    (
        "available",
        "cancelled",
        "completed",
        "discarded",
        "pending",
        "retryable",
        "running",
        "scheduled",
        "count",
        "other",
    )
)


def series_class(name: str, index: int) -> str:
    """The CSS class of a series: its state's colour, else a palette slot."""
    return f"s-{name}" if name in _NAMED else f"s-i{index % 9}"


@dataclass(frozen=True)
class Bar:
    """One column of a stacked bar chart: its label and a value per series."""

    label: str
    values: Mapping[str, float]
    line: float | None = None  # an optional overlay value (e.g. inserted ≈)


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** (len(str(int(v))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * mag:
            return float(step * mag)
    return float(10 * mag)


def stacked_bars(
    bars: Sequence[Bar],
    series: Sequence[str],
    *,
    title: str,
    width: int = 720,
    height: int = 180,
    unit: str = "jobs",
    line_label: str = "",
) -> Markup:
    """Stacked bars, one per entry of ``bars``, series in ``series`` order (bottom
    first), with an optional polyline of each bar's ``line`` value."""
    left, bottom, top = 40, 18, 8
    plot_w, plot_h = width - left - 4, height - bottom - top
    totals = [sum(b.values.get(s, 0) for s in series) for b in bars]
    peak = max([*totals, *(b.line or 0 for b in bars), 0])
    ymax = _nice_max(peak)
    n = max(len(bars), 1)
    slot = plot_w / n
    bar_w = max(slot * 0.8, 0.5)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="none">',
        f"<title>{escape(title)}</title>",
    ]
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - 4}" y1="{_num(y)}" y2="{_num(y)}"/>'
        )
        parts.append(
            f'<text class="axis" x="{left - 4}" y="{_num(y + 4)}" text-anchor="end">'
            f"{escape(_short(ymax * frac))}</text>"
        )
    for i, b in enumerate(bars):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        for idx, s in enumerate(series):
            v = b.values.get(s, 0)
            if v <= 0:
                continue
            h = plot_h * v / ymax
            y -= h
            parts.append(
                f'<rect class="bar {series_class(s, idx)}" x="{_num(x)}" y="{_num(y)}" '
                f'width="{_num(bar_w)}" height="{_num(max(h, 0.5))}">'
                f"<title>{escape(b.label)}: {escape(_short(v))} {escape(s)}</title></rect>"
            )
    points = [
        (left + i * slot + slot / 2, top + plot_h * (1 - (b.line or 0) / ymax))
        for i, b in enumerate(bars)
        if b.line is not None
    ]
    if points:
        coords = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
        parts.append(
            f'<polyline class="overlay" points="{coords}"><title>{escape(line_label)}</title>'
            "</polyline>"
        )
    if bars:
        for i in (0, len(bars) - 1):
            anchor = "start" if i == 0 else "end"
            x = left if i == 0 else width - 4
            parts.append(
                f'<text class="axis" x="{x}" y="{height - 4}" text-anchor="{anchor}">'
                f"{escape(bars[i].label)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return _num(v)


def sparkline(values: Sequence[float], *, title: str, width: int = 120, height: int = 24) -> Markup:
    """A small line of ``values`` (oldest first)."""
    peak = max([*values, 0]) or 1
    n = max(len(values) - 1, 1)
    coords = " ".join(
        f"{_num(2 + (width - 4) * i / n)},{_num(height - 2 - (height - 4) * v / peak)}"
        for i, v in enumerate(values)
    )
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<polyline class="overlay" points="{coords}"/></svg>'
    )


def histogram(
    counts: Sequence[int],
    labels: Sequence[str],
    *,
    title: str,
    width: int = 720,
    height: int = 140,
) -> Markup:
    """Bars of ``counts`` labelled ``labels`` (the first and last shown on the axis)."""
    bars = [Bar(lbl, {"count": float(c)}) for lbl, c in zip(labels, counts, strict=False)]
    return stacked_bars(bars, ["count"], title=title, width=width, height=height)


def state_strip(states: Sequence[str], *, title: str, cell: int = 10) -> Markup:
    """One square per run, coloured by its state (oldest first)."""
    width = max(len(states), 1) * (cell + 2)
    parts = [
        f'<svg class="strip" viewBox="0 0 {width} {cell}" width="{width}" height="{cell}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, s in enumerate(states):
        parts.append(
            f'<rect class="bar s-{escape(s)}" x="{i * (cell + 2)}" y="0" width="{cell}" '
            f'height="{cell}"><title>{escape(s)}</title></rect>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
