"""What pages show, computed from the service's answers: columns, charts, formatting.

Routes stay thin: they parse the request, call the tracking service and hand its
answers to these helpers and to a template.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup

from plinth.tracking import schemas as s
from plinth.ui.charts import MAX_POINTS, PALETTE, Line, format_number, line_chart

_PLAIN_KEY = re.compile(r"^[A-Za-z_][\w-]*\Z")  # a key the filter language needs no backticks for


def columns(runs: Iterable[s.Run]) -> tuple[list[str], list[str]]:
    """The param keys and metric keys any of these runs has, sorted."""
    params: set[str] = set()
    metrics: set[str] = set()
    for run in runs:
        params.update(run.params)
        metrics.update(run.metrics)
    return sorted(params), sorted(metrics)


def field(kind: str, key: str) -> str:
    """A field of the filter language, backticked when the key needs it."""
    name = key if _PLAIN_KEY.match(key) else f"`{key}`"
    return f"{kind}.{name}" if kind else name


def sort_link(base: str, args: dict[str, Any], target: str, current: str) -> tuple[str, str]:
    """The URL that orders by ``target`` (descending first, then ascending) and an arrow."""
    now = current.strip()
    order = f"{target} asc" if now == f"{target} desc" else f"{target} desc"
    arrow = {f"{target} desc": "▼", f"{target} asc": "▲", target: "▲"}.get(now, "")
    return page_url(base, {**args, "order_by": order, "page_token": None}), arrow


def page_url(base: str, args: dict[str, Any]) -> str:
    kept = {k: v for k, v in args.items() if v not in (None, "")}
    return f"{base}?{urlencode(kept)}" if kept else base


def metric_charts(svc: Any, runs: Sequence[s.Run]) -> list[Markup]:
    """One chart per metric any of the runs has, with one line per run in run order."""
    keys = sorted({key for run in runs for key in run.metrics})
    charts = []
    for key in keys:
        lines = [
            Line(run.name, history_points(svc, run.id, key), color_of(i))
            for i, run in enumerate(runs)
            if key in run.metrics
        ]
        charts.append(line_chart(lines, title=key))
    return charts


def history_points(svc: Any, run_id: str, key: str) -> list[tuple[float, float]]:
    """A metric's ``(step, value)`` points, thinned by the service for a chart."""
    history = svc.metric_history(run_id, key, max_points=MAX_POINTS)
    return list(zip(history.steps.tolist(), history.values.tolist(), strict=True))


def color_of(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def version_color(version: int | str) -> str:
    """A model version's color, the same wherever it is drawn: version 1 the first."""
    return PALETTE[_version_index(version)]


# HTML takes a color as a class (``color-0`` …, in style.css): the pages' CSP allows no
# inline styles. SVG takes it as a ``fill``/``stroke`` attribute, which CSP allows.
def color_class(index: int) -> str:
    return f"color-{index % len(PALETTE)}"


def version_color_class(version: int | str) -> str:
    return f"color-{_version_index(version)}"


def width_class(percent: float) -> str:
    """A width of ``percent`` (0 to 100) as a class: ``w-0`` … ``w-100`` in style.css."""
    return f"w-{round(min(100.0, max(0.0, percent)))}"


def _version_index(version: int | str) -> int:
    text = str(version)
    decimal = text.isascii() and text.isdecimal()
    return (int(text) - 1) % len(PALETTE) if decimal else len(PALETTE) - 1


def parse_run_ids(values: Iterable[str]) -> list[str]:
    """``?runs=a,b`` and ``?runs=a&runs=b`` alike, in order, without repeats."""
    ids = [part.strip() for value in values for part in value.split(",")]
    return list(dict.fromkeys(i for i in ids if i))


# formatting (Jinja filters) -----------------------------------------------------------


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def duration(run: s.Run) -> str:
    seconds = (run.end_time or time.time()) - run.start_time
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def value(v: Any) -> str:
    """A param or metric value, short: numbers compact, other JSON as JSON."""
    if isinstance(v, float):
        return format_number(v)
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True)


def number(v: float | None) -> str:
    return "" if v is None else format_number(v)


def size(n: int) -> str:
    amount, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, bigger
    return f"{n} B" if unit == "B" else f"{amount:.1f} {unit}"


def url_segment(text: str) -> str:
    return quote(text, safe="")


def url_path(text: str) -> str:
    return quote(text, safe="/")


FILTERS = {
    "when": when,
    "duration": duration,
    "value": value,
    "number": number,
    "size": size,
    "seg": url_segment,
    "urlpath": url_path,
}
