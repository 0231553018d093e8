"""The SVG chart helpers: axes, ticks, skipped non-finite points, escaping; a graph's
columns by longest path. (Thinning a long history is tracking's:
tests/tracking/test_history.py.)"""

from __future__ import annotations

import math
import re
import sys

import pytest

from plinth.ui.charts import Line, Node, Swatch, dag, layers, line_chart, nice_ticks


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


@pytest.mark.parametrize(
    "values",
    [
        [-1.7e308, 1.7e308],  # wider than a double
        [0.0, 5e-324],  # narrower than a step can be
        [1.7e308, 1.7e308],  # flat at a double's end
        [-sys.float_info.max, -sys.float_info.max, 0.0],
        [1e-310, 2e-310],
    ],
)
def test_any_finite_values_make_a_chart(values: list[float]) -> None:
    """Any finite values an editor logs draw, their points within the plot."""
    svg = str(line_chart([Line("m", list(enumerate(values)))]))
    coords = [pair.split(",") for pair in svg.split('points="')[1].split('"')[0].split()]
    for x, y in ((float(x), float(y)) for x, y in coords):
        assert math.isfinite(x) and math.isfinite(y), svg
        assert 0 <= x <= 560 and 0 <= y <= 260, svg


def test_labels_are_escaped() -> None:
    svg = str(line_chart([Line("<b>x</b>", [(0, 1), (1, 2)])], title="<script>"))
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg and "&lt;b&gt;x&lt;/b&gt;" in svg


def test_a_graphs_columns_are_longest_paths_from_roots() -> None:
    nodes = [
        Node("load"),
        Node("other"),
        Node("clean", ["load"]),
        Node("train", ["clean", "load"]),  # after clean, however near load is
        Node("report", ["train", "other"]),
    ]
    names = [[n.name for n in column] for column in layers(nodes)]
    assert names == [["load", "other"], ["clean"], ["train"], ["report"]]
    assert layers([]) == []


def test_a_node_sits_near_its_upstream() -> None:
    nodes = [Node("a"), Node("b"), Node("from-b", ["b"]), Node("from-a", ["a"])]
    assert [n.name for n in layers(nodes)[1]] == ["from-a", "from-b"]


def test_a_graph_links_its_boxes_draws_edges_and_escapes() -> None:
    nodes = [
        Node("<a>", caption="ok", href="#step-x", fill="red"),
        Node("b", ["<a>"], caption="<i>", dashed=True),
    ]
    svg = str(dag(nodes, [Swatch("<s>", "#fff", "#000")], title="<t>", kind="step"))
    assert svg.startswith('<svg class="dag"') and svg.endswith("</svg>")
    assert '<a class="dag-node" href="#step-x" data-step="&lt;a&gt;">' in svg
    assert '<g class="dag-node" data-step="b">' in svg  # no href: no link
    assert svg.count('class="dag-edge"') == 1 and 'stroke-dasharray="5 3"' in svg
    assert "<a>" not in svg.replace('<a class="dag-node"', "") and "<i>" not in svg
    assert "&lt;s&gt;" in svg and "&lt;t&gt;" in svg
    long = str(dag([Node("x" * 100)]))
    assert "x" * 18 + "…" in long and "x" * 100 in long  # cut on the box, whole in its title
