"""Line charts drawn on the server as inline SVG: no JavaScript, nothing fetched.

``line_chart`` takes one or more ``Line``s of ``(x, y)`` points and returns SVG markup
with axes, ticks, grid lines and labels. Points whose x or y is NaN or infinite are
skipped (a diverged loss should not blank the chart). Lines are drawn as given: pages
ask the tracking service for histories thinned to ``MAX_POINTS`` (its ``max_points``),
which keeps each bucket's lowest and highest value so spikes survive. Every piece of
text is escaped here, since the markup is inserted unescaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 560
# The points a line needs at the default width: tracking's downsample keeps three per
# bucket (lowest, highest, and the one that best keeps the shape), one bucket a pixel.
MAX_POINTS = 3 * WIDTH
PALETTE = (
    "#2563eb",
    "#ea580c",
    "#16a34a",
    "#dc2626",
    "#9333ea",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
)

Point = tuple[float, float]


@dataclass(frozen=True)
class Line:
    label: str
    points: Sequence[Point]
    color: str = PALETTE[0]
    dots: bool = False  # a dot per point (a scatter), not a polyline


@dataclass(frozen=True)
class _Frame:
    """The plot area in pixels and the data range it shows."""

    left: float
    top: float
    width: float
    height: float
    x_ticks: list[float]
    y_ticks: list[float]

    def x(self, value: float) -> float:
        lo, hi = self.x_ticks[0], self.x_ticks[-1]
        return self.left + (value - lo) / (hi - lo) * self.width

    def y(self, value: float) -> float:
        lo, hi = self.y_ticks[0], self.y_ticks[-1]
        return self.top + self.height - (value - lo) / (hi - lo) * self.height


def finite(points: Sequence[Point]) -> list[Point]:
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def nice_ticks(lo: float, hi: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering ``[lo, hi]``."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    ratio = raw / magnitude
    step = magnitude * (1 if ratio < 1.5 else 2 if ratio < 3 else 5 if ratio < 7 else 10)
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(lo / step), math.ceil(hi / step)
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [round(k * step, digits) for k in range(first, last + 1)]


def format_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == 0:
        return "0"
    return f"{value:.6g}" if abs(value) >= 1e-4 else f"{value:.3g}"


def line_chart(
    lines: Sequence[Line],
    *,
    title: str = "",
    x_label: str = "step",
    width: int = WIDTH,
    height: int = 260,
) -> Markup:
    """One chart, one polyline per line that has finite points."""
    drawn = [(line, finite(line.points)) for line in lines]
    drawn = [(line, pts) for line, pts in drawn if pts]
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="12" y="18">{escape(title)}</text>',
    ]
    if not drawn:
        parts.append(
            f'<text class="chart-empty" x="{width / 2}" y="{height / 2}" '
            f'text-anchor="middle">no finite values</text>'
        )
    else:
        frame = _frame([p for _, pts in drawn for p in pts], width, height)
        parts += _axes(frame, x_label)
        parts += [_polyline(frame, line, pts) for line, pts in drawn]
    parts.append("</svg>")
    return Markup("".join(parts))


def _frame(points: list[Point], width: int, height: int) -> _Frame:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    integer_x = all(float(x).is_integer() for x in xs)
    left, right, top, bottom = 58.0, 16.0, 30.0, 40.0
    return _Frame(
        left=left,
        top=top,
        width=width - left - right,
        height=height - top - bottom,
        x_ticks=nice_ticks(min(xs), max(xs), 6, integer=integer_x),
        y_ticks=nice_ticks(min(ys), max(ys), 5),
    )


def _axes(f: _Frame, x_label: str) -> list[str]:
    bottom, right = f.top + f.height, f.left + f.width
    out = []
    for tick in f.y_ticks:
        y = f.y(tick)
        out.append(f'<line class="grid" x1="{f.left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{f.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{format_number(tick)}</text>"
        )
    for tick in f.x_ticks:
        x = f.x(tick)
        out.append(
            f'<line class="axis" x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}"/>'
        )
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
            f"{format_number(tick)}</text>"
        )
    out.append(f'<line class="axis" x1="{f.left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>')
    out.append(f'<line class="axis" x1="{f.left}" y1="{f.top}" x2="{f.left}" y2="{bottom}"/>')
    out.append(
        f'<text class="axis-label" x="{right}" y="{bottom + 32}" text-anchor="end">'
        f"{escape(x_label)}</text>"
    )
    return out


def _polyline(f: _Frame, line: Line, points: list[Point]) -> str:
    color = escape(line.color)
    label = escape(line.label)
    if line.dots:
        return "".join(
            f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="3.5" fill="{color}">'
            f"<title>{label} {format_number(x)}: {format_number(y)}</title></circle>"
            for x, y in points
        )
    if len(points) == 1:
        x, y = points[0]
        return (
            f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="3.5" fill="{color}">'
            f"<title>{label}: {format_number(y)}</title></circle>"
        )
    coords = " ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in points)
    return (
        f'<polyline class="series" points="{coords}" fill="none" stroke="{color}">'
        f"<title>{label}</title></polyline>"
    )


def bars(values: Sequence[float], *, width: int = 160, height: int = 36, title: str = "") -> Markup:
    """A small bar chart (a histogram's counts, or top values' shares) as inline SVG."""
    if not values:
        return Markup("")
    peak = max(values) or 1.0
    step = width / len(values)
    rects = "".join(
        f'<rect x="{i * step + 0.5:.1f}" y="{height - max(1.0, v / peak * height):.1f}" '
        f'width="{max(step - 1, 1):.1f}" height="{max(1.0, v / peak * height):.1f}"/>'
        for i, v in enumerate(values)
    )
    label = f"<title>{escape(title)}</title>" if title else ""
    return Markup(
        f'<svg class="bars" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title or "distribution")}">{label}{rects}</svg>'
    )
