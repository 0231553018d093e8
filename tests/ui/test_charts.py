"""The SVG chart helper: axes, ticks, skipped non-finite points, escaping. (Thinning a
long history is tracking's: tests/tracking/test_history.py.)"""

from __future__ import annotations

import math
import re

from plinth.ui.charts import Line, line_chart, nice_ticks


def _polylines(svg: str) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, pair.split(","))) for pair in points.split()]  # type: ignore[misc]
        for points in re.findall(r'<polyline[^>]* points="([^"]*)"', svg)
    ]


def test_chart_has_axes_ticks_labels_and_one_polyline_per_line() -> None:
    lines = [Line("a", [(s, 1 / (s + 1)) for s in range(50)]), Line("b", [(0, 0.5), (49, 0.1)])]
    svg = str(line_chart(lines, title="loss"))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert len(_polylines(svg)) == 2
    assert 'class="chart-title"' in svg and ">loss</text>" in svg
    assert svg.count('class="tick"') >= 6
    assert ">step</text>" in svg


def test_nan_and_infinite_points_are_skipped() -> None:
    points = [(0, 1.0), (1, math.nan), (2, math.inf), (3, -math.inf), (4, 0.5)]
    (line,) = _polylines(str(line_chart([Line("m", points)])))
    assert len(line) == 2
    assert "nan" not in str(line_chart([Line("m", points)])).lower()


def test_only_non_finite_points_say_so() -> None:
    svg = str(line_chart([Line("m", [(0, math.nan)])], title="m"))
    assert "no finite values" in svg and "<polyline" not in svg


def test_a_single_point_is_a_dot() -> None:
    svg = str(line_chart([Line("m", [(3, 2.0)])]))
    assert "<circle" in svg and "<polyline" not in svg


def test_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 49, 6, integer=True) == [0, 10, 20, 30, 40, 50]
    assert nice_ticks(0.02, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    flat = nice_ticks(5, 5)
    assert flat[0] < 5 < flat[-1]


def test_labels_are_escaped() -> None:
    svg = str(line_chart([Line("<b>x</b>", [(0, 1), (1, 2)])], title="<script>"))
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
