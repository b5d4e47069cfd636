"""Charts as inline SVG, drawn on the server (no JavaScript): a line for sampled gauges, bars for per-minute counts.

Pure: points in, markup out. Every text in the markup is escaped.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 170
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 22, 24


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (an axis maximum)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _frame(title: str, unit: str, start: float, end: float, top: float) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<text class="title" x="{LEFT}" y="14">{escape(title)}</text>',
        f'<text class="unit" x="{WIDTH - RIGHT}" y="14" text-anchor="end">{escape(unit)}</text>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(top * fraction)}</text>'
        )
    span = max(end - start, 1.0)
    for quarter in range(5):
        at = start + span * quarter / 4
        x = LEFT + plot_w * quarter / 4
        label = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%H:%M")
        anchor = "start" if quarter == 0 else "end" if quarter == 4 else "middle"
        parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">{label}</text>')
    return parts


def _svg(parts: list[str], title: str) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _x(at: float, start: float, end: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (at - start) / max(end - start, 1.0)


def _y(value: float, top: float) -> float:
    plot_h = HEIGHT - TOP - BOTTOM
    return TOP + plot_h * (1 - min(value, top) / top)


def _empty(parts: list[str], text: str) -> None:
    x, y = WIDTH / 2, HEIGHT / 2
    parts.append(f'<text class="empty" x="{x:.0f}" y="{y:.0f}" text-anchor="middle">{escape(text)}</text>')


def line_chart(
    title: str,
    unit: str,
    start: float,
    end: float,
    points: Sequence[tuple[float, float]],
    empty: str = "no samples yet",
) -> Markup:
    """A line through (unix time, value) points within [start, end]; a gap of more than a minute breaks it."""
    shown = [(at, value) for at, value in points if start <= at <= end]
    top = nice_ceiling(max((v for _, v in shown), default=0.0))
    parts = _frame(title, unit, start, end, top)
    if not shown:
        _empty(parts, empty)
        return _svg(parts, title)
    runs: list[list[tuple[float, float]]] = [[shown[0]]]
    for previous, point in itertools.pairwise(shown):
        if point[0] - previous[0] > 60:
            runs.append([])
        runs[-1].append(point)
    for run in runs:
        coords = " ".join(f"{_x(at, start, end):.1f},{_y(v, top):.1f}" for at, v in run)
        if len(run) == 1:
            x, y = coords.split(",")
            parts.append(f'<circle class="dot" cx="{x}" cy="{y}" r="2.5"/>')
        else:
            parts.append(f'<polyline class="line" points="{coords}"/>')
    return _svg(parts, title)


def bar_chart(
    title: str,
    unit: str,
    start: float,
    end: float,
    bars: Sequence[tuple[float, float, float]],
    bucket: float = 60.0,
    empty: str = "nothing applied in the last hour",
) -> Markup:
    """Stacked bars per bucket: (unix time of the bucket's start, first series, second series)."""
    shown = [bar for bar in bars if bar[0] + bucket > start and bar[0] <= end]
    top = nice_ceiling(max((a + b for _, a, b in shown), default=0.0))
    parts = _frame(title, unit, start, end, top)
    if not any(a + b for _, a, b in shown):
        _empty(parts, empty)
        return _svg(parts, title)
    width = max((WIDTH - LEFT - RIGHT) * bucket / max(end - start, 1.0) - 1.0, 1.0)
    for at, first, second in shown:
        x = max(_x(at, start, end), LEFT)
        bar_width = min(width, WIDTH - RIGHT - x)  # the current minute is not over: its bar ends at "now"
        base = _y(0, top)
        for value, css in ((first, "bar"), (second, "bar second")):
            if value <= 0:
                continue
            height = (HEIGHT - TOP - BOTTOM) * min(value, top) / top
            base -= height
            parts.append(
                f'<rect class="{css}" x="{x:.1f}" y="{base:.1f}" width="{bar_width:.1f}" height="{height:.1f}"/>'
            )
    return _svg(parts, title)
