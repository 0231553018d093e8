"""A sweep's page: its settings, its best trial, every trial's params and value, and a
chart of the value by trial with the best so far.

It is built from the runs the sweep made (``compute/sweep.py``): its summary run
(tagged ``plinth.sweep.summary``, with the settings as params) and its trials (tagged
``plinth.sweep`` and ``plinth.trial``), read as the request's principal like any run,
so the page shows a sweep still going as well as one that ended, and an outsider gets
the same 404 as for a sweep that does not exist. A trial's value is its metric's last
value, or the best of its history when the sweep's objective is ``best``; its state is
its run's: a run stopped (``killed``) was pruned, or cancelled with the sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from plinth.api.auth import requires
from plinth.compute.sweep import SUMMARY_TAG, SWEEP_TAG, TRIAL_TAG
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.errors import NotFound
from plinth.tracking import schemas as s
from plinth.ui.charts import Line, line_chart
from plinth.ui.routes import PageRoute, _service, render
from plinth.ui.views import color_of, url_segment

READ = [requires(Permission.PROJECT_READ)]
MAX_TRIALS = 10_000  # as many as a sweep may have (compute/sweep.py)
_STATES = {"finished": "complete", "killed": "stopped", "failed": "failed", "running": "running"}

Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
SweepName = Annotated[str, Path(min_length=1, max_length=500)]

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def sweep_url(project: str, name: str) -> str:
    return f"/projects/{url_segment(project)}/sweeps/{url_segment(name)}"


@dataclass
class Trial:
    number: int
    run: s.Run
    state: str
    value: float | None


@router.get("/projects/{project}/sweeps/{name}", response_class=HTMLResponse, dependencies=READ)
def sweep_page(request: Request, project: Project, name: SweepName) -> HTMLResponse:
    svc = _service(request)
    literal = "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def runs(tag: str) -> list[s.Run]:
        query = s.SearchQuery(project=project, filter=f"tags.`{tag}` = {literal}", limit=MAX_TRIALS)
        return list(svc.search_runs(query).runs)

    summaries, found = runs(SUMMARY_TAG), runs(SWEEP_TAG)
    if not summaries and not found:
        raise NotFound(f"no sweep {name!r} in project {project!r}")
    summary = summaries[0] if summaries else None
    settings = dict(summary.params) if summary else {}
    metric = str(settings.get("metric", "loss"))
    maximize = settings.get("direction") == "maximize"
    best_of_history = settings.get("objective") == "best"

    trials = []
    for run in found:
        number = run.tags.get(TRIAL_TAG, "")
        value = _value(svc, run, metric, maximize, best_of_history)
        state = _STATES.get(run.status, run.status)
        if state == "complete" and value is None:
            state = "failed"  # as the sweep judged it: no finite value
        trials.append(Trial(int(number) if number.isdecimal() else -1, run, state, value))
    trials.sort(key=lambda t: (t.number, t.run.start_time))

    scored = [t for t in trials if t.state == "complete" and t.value is not None]
    best = None
    for t in scored:
        if best is None or _better(t.value, best.value, maximize):
            best = t
    param_keys = sorted({key for t in trials for key in t.run.params})
    return render(
        "sweep.html",
        project=project,
        name=name,
        summary=summary,
        settings=settings,
        metric=metric,
        trials=trials,
        best=best,
        param_keys=param_keys,
        counts={state: sum(t.state == state for t in trials) for state in _STATES.values()},
        chart=_chart(scored, metric, maximize),
    )


def _value(svc: Any, run: s.Run, metric: str, maximize: bool, best: bool) -> float | None:
    if metric not in run.metrics:
        return None
    if not best:
        value = float(run.metrics[metric])
        return value if math.isfinite(value) else None
    values = [v for v in svc.metric_history(run.id, metric).values.tolist() if math.isfinite(v)]
    if not values:
        return None
    return max(values) if maximize else min(values)


def _better(value: float | None, than: float | None, maximize: bool) -> bool:
    assert value is not None and than is not None
    return value > than if maximize else value < than


def _chart(scored: list[Trial], metric: str, maximize: bool) -> Any:
    """Each complete trial's value by its number, and the best so far as a line."""
    if not scored:
        return None
    points = [(float(t.number), float(t.value or 0.0)) for t in scored]
    running: list[tuple[float, float]] = []
    for x, y in points:
        if not running or _better(y, running[-1][1], maximize):
            running.append((x, y))
        else:
            running.append((x, running[-1][1]))
    return line_chart(
        [
            Line("trial", points, color_of(0), dots=True),
            Line("best so far", running, color_of(1)),
        ],
        title=f"{metric} by trial",
        x_label="trial",
    )
