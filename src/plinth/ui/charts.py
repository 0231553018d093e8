"""Charts drawn on the server as inline SVG: no JavaScript, nothing fetched.

``line_chart`` takes one or more ``Line``s of ``(x, y)`` points and returns SVG markup
with axes, ticks, grid lines and labels. Points whose x or y is NaN or infinite are
skipped (a diverged loss should not blank the chart). Lines are drawn as given: pages
ask the tracking service for histories thinned to ``MAX_POINTS`` (its ``max_points``),
which keeps each bucket's lowest and highest value so spikes survive. ``bars`` draws a
small histogram; ``dag`` a graph of ``Node``s, each a linked box in the column its
longest path from a root gives it. Every piece of text is escaped here, since the
markup is inserted unescaped.
"""

from __future__ import annotations

import math
import sys
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
        return self.left + _share(value, self.x_ticks) * self.width

    def y(self, value: float) -> float:
        return self.top + self.height - _share(value, self.y_ticks) * self.height


def _share(value: float, ticks: list[float]) -> float:
    """How far ``value`` lies from the first tick to the last (0 to 1), in halves: the
    span of two doubles may be more than a double holds."""
    lo, hi = ticks[0], ticks[-1]
    return (value / 2 - lo / 2) / (hi / 2 - lo / 2)


def finite(points: Sequence[Point]) -> list[Point]:
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]


_NARROWEST = 1e-290  # far below any real range, far above the doubles that underflow


def nice_ticks(lo: float, hi: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering ``[lo, hi]``."""
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo < _NARROWEST:  # a flat line (or one too narrow to divide in steps)
        pad = abs(lo) * 0.1
        pad = pad if pad >= _NARROWEST else 1.0
        lo, hi = max(lo - pad, -sys.float_info.max), min(hi + pad, sys.float_info.max)
    if not math.isfinite(hi - lo):  # wider than a double holds: the two ends
        return [lo, hi]
    raw = (hi - lo) / max(1, count - 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    ratio = raw / magnitude
    step = magnitude * (1 if ratio < 1.5 else 2 if ratio < 3 else 5 if ratio < 7 else 10)
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(lo / step), math.ceil(hi / step)
    digits = max(0, -math.floor(math.log10(step)) + 1)
    ticks = [round(k * step, digits) for k in range(first, last + 1)]
    return ticks if math.isfinite(ticks[0]) and math.isfinite(ticks[-1]) else [lo, hi]


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


# a directed acyclic graph ---------------------------------------------------------------

BOX_WIDTH, BOX_HEIGHT, GAP_X, GAP_Y, MARGIN = 176, 46, 56, 18, 12
LEGEND_HEIGHT = 30
_NAME_CHARS = 19  # what fits on a box's first line, bold at its font size


@dataclass(frozen=True)
class Node:
    """A box of a ``dag``: its name (first line), a caption (second line), colors, and
    where it links to. ``upstream`` names the nodes with an edge into it."""

    name: str
    upstream: Sequence[str] = ()
    caption: str = ""
    fill: str = "#f3f4f6"
    stroke: str = "#9ca3af"
    href: str = ""
    dashed: bool = False


@dataclass(frozen=True)
class Swatch:
    """An entry of a ``dag``'s legend."""

    label: str
    fill: str
    stroke: str
    dashed: bool = False


def layers(nodes: Sequence[Node]) -> list[list[Node]]:
    """The nodes in columns by longest path from a root: a node's column is one more
    than its furthest upstream's. Nodes come in an order where each follows its upstream
    (as a pipeline's steps do); an upstream name not seen before it is ignored.

    Within a column, a node sits near the average row of its upstream (fewer edges
    cross), ties kept in the given order."""
    column: dict[str, int] = {}
    for node in nodes:
        known = [column[u] for u in node.upstream if u in column]
        column[node.name] = 1 + max(known, default=-1)
    columns: list[list[Node]] = [[] for _ in range(max(column.values(), default=-1) + 1)]
    for node in nodes:
        columns[column[node.name]].append(node)
    tallest = max((len(c) for c in columns), default=0)
    row: dict[str, float] = {}  # where a node's centre is, in rows, columns centred
    for placed in columns:
        first = (tallest - len(placed)) / 2
        keyed = [(_mean_row(n, row, first + i), i, n) for i, n in enumerate(placed)]
        placed[:] = [n for _, _, n in sorted(keyed, key=lambda k: k[:2])]
        row.update({n.name: first + i for i, n in enumerate(placed)})
    return columns


def _mean_row(node: Node, row: dict[str, float], otherwise: float) -> float:
    rows = [row[u] for u in node.upstream if u in row]
    return sum(rows) / len(rows) if rows else otherwise


def dag(
    nodes: Sequence[Node], legend: Sequence[Swatch] = (), *, title: str = "", kind: str = "node"
) -> Markup:
    """The graph as inline SVG, left to right: a box per node (an ``<a>`` with
    ``data-KIND="NAME"`` when it has an ``href``), a curve per edge, then the legend."""
    if not kind.isidentifier():
        raise ValueError(f"kind must be a plain word, not {kind!r}")
    columns = layers(nodes)
    tallest = max((len(c) for c in columns), default=0)
    places: dict[str, tuple[float, float]] = {}
    for i, placed in enumerate(columns):
        offset = (tallest - len(placed)) * (BOX_HEIGHT + GAP_Y) / 2
        for j, node in enumerate(placed):
            places[node.name] = (
                MARGIN + i * (BOX_WIDTH + GAP_X),
                MARGIN + offset + j * (BOX_HEIGHT + GAP_Y),
            )
    graph_height = MARGIN * 2 + tallest * (BOX_HEIGHT + GAP_Y) - GAP_Y
    width = max(MARGIN * 2 + len(columns) * (BOX_WIDTH + GAP_X) - GAP_X, _legend_width(legend), 200)
    height = max(graph_height, MARGIN) + (LEGEND_HEIGHT if legend else 0)
    parts = [
        f'<svg class="dag" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
        'font-family="system-ui, sans-serif">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="dag-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#9ca3af"/></marker>'
        "</defs>",
    ]
    parts += [_edge(places[u], places[n.name]) for n in nodes for u in n.upstream if u in places]
    parts += [_box(node, places[node.name], kind) for node in nodes]
    parts += _legend(legend, height - LEGEND_HEIGHT + 10)
    parts.append("</svg>")
    return Markup("".join(parts))


def _edge(start: tuple[float, float], end: tuple[float, float]) -> str:
    x1, y1 = start[0] + BOX_WIDTH, start[1] + BOX_HEIGHT / 2
    x2, y2 = end[0] - 2, end[1] + BOX_HEIGHT / 2
    bend = GAP_X / 2
    return (
        f'<path class="dag-edge" d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} '
        f'{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" fill="none" stroke="#9ca3af" '
        'stroke-width="1.5" marker-end="url(#dag-arrow)"/>'
    )


def _box(node: Node, place: tuple[float, float], kind: str) -> str:
    x, y = place
    name = node.name if len(node.name) <= _NAME_CHARS else node.name[: _NAME_CHARS - 1] + "…"
    dash = ' stroke-dasharray="5 3"' if node.dashed else ""
    body = (
        f"<title>{escape(node.name)}{': ' if node.caption else ''}{escape(node.caption)}</title>"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="6" '
        f'fill="{escape(node.fill)}" stroke="{escape(node.stroke)}" stroke-width="1.5"{dash}/>'
        f'<text class="dag-name" x="{x + 10:.1f}" y="{y + 19:.1f}" font-size="13" '
        f'font-weight="600" fill="#111827">{escape(name)}</text>'
        f'<text class="dag-caption" x="{x + 10:.1f}" y="{y + 36:.1f}" font-size="11" '
        f'fill="#4b5563">{escape(node.caption)}</text>'
    )
    attribute = f'data-{kind}="{escape(node.name)}"'
    if not node.href:
        return f'<g class="dag-node" {attribute}>{body}</g>'
    return f'<a class="dag-node" href="{escape(node.href)}" {attribute}>{body}</a>'


def _legend_width(legend: Sequence[Swatch]) -> int:
    return MARGIN * 2 + sum(24 + 7 * len(s.label) for s in legend)


def _legend(legend: Sequence[Swatch], y: float) -> list[str]:
    out, x = [], float(MARGIN)
    for swatch in legend:
        dash = ' stroke-dasharray="3 2"' if swatch.dashed else ""
        out.append(
            f'<g class="dag-legend"><rect x="{x:.1f}" y="{y:.1f}" width="12" height="12" rx="2" '
            f'fill="{escape(swatch.fill)}" stroke="{escape(swatch.stroke)}"{dash}/>'
            f'<text x="{x + 17:.1f}" y="{y + 10.5:.1f}" font-size="11" fill="#4b5563">'
            f"{escape(swatch.label)}</text></g>"
        )
        x += 24 + 7 * len(swatch.label)
    return out
