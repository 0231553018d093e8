"""Pages of pipelines: a project's pipeline runs and triggers, and one run's page (its
steps drawn as a graph, each box linking to the step's row below, which links to the
job that ran it, where its log is, and to the tracked run holding its outputs).

Read-only, and every call goes through ``PipelineService`` as the request's principal:
an outsider, a run of another project and a run that does not exist all get the same
404. While a run goes on, its page fetches itself again every few seconds
(pipelines.js) and stops once the run has ended.
"""

from __future__ import annotations

import time
from typing import Annotated, get_args

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from plinth.api.auth import requires
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.pipelines import schemas as s
from plinth.pipelines.service import PipelineService
from plinth.pipelines.triggers import TriggerService
from plinth.ui.charts import Node, Swatch, dag
from plinth.ui.datasets import dataset_url
from plinth.ui.jobs import job_url
from plinth.ui.routes import PageRoute, _service, render
from plinth.ui.views import url_segment

READ = [requires(Permission.PROJECT_READ)]
POLL_SECONDS = 2  # how often an open page of a running pipeline run fetches itself
Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
# A run's id, or a unique prefix of 8 or more of it; anything else names no run (404).
RunId = Annotated[str, Path(max_length=32)]
Cursor = Annotated[str | None, Query(max_length=40)]

# A step's box and badge: (fill, stroke) by status; cache hits drawn dashed.
COLORS: dict[str, tuple[str, str]] = {
    "waiting": ("#f3f4f6", "#9ca3af"),
    "running": ("#dbeafe", "#2563eb"),
    "succeeded": ("#dcfce7", "#16a34a"),
    "cached": ("#ccfbf1", "#0d9488"),
    "failed": ("#fee2e2", "#dc2626"),
    "skipped": ("#fef3c7", "#d97706"),
    "cancelled": ("#e5e7eb", "#4b5563"),
}
LEGEND = [Swatch(status, *COLORS[status], status == "cached") for status in get_args(s.StepStatus)]

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def pipelines_url(project: str) -> str:
    return f"/projects/{url_segment(project)}/pipelines"


def run_url(project: str, run_id: str) -> str:
    return f"{pipelines_url(project)}/{url_segment(run_id)}"


@router.get("/projects/{project}/pipelines", response_class=HTMLResponse, dependencies=READ)
def pipelines_page(request: Request, project: Project, cursor: Cursor = None) -> HTMLResponse:
    svc = _service(request, PipelineService)
    page = svc.list_runs(project, s.PipelineRunsQuery(cursor=cursor))
    next_url = f"{pipelines_url(project)}?cursor={page.next_cursor}" if page.next_cursor else None
    return render(
        "pipelines.html",
        project=project,
        runs=page.runs,
        triggers=_service(request, TriggerService).list_triggers(project),
        first_url=pipelines_url(project) if cursor else None,
        next_url=next_url,
        run_url=run_url,
    )


@router.get(
    "/projects/{project}/pipelines/{pipeline_run_id}",
    response_class=HTMLResponse,
    dependencies=READ,
)
def run_page(request: Request, project: Project, pipeline_run_id: RunId) -> HTMLResponse:
    run = _service(request, PipelineService).get_run(project, pipeline_run_id)
    return render(
        "pipeline_run.html",
        project=project,
        run=run,
        graph=graph(run),
        here=run_url(project, run.id),
        poll_seconds=POLL_SECONDS,
        pipelines_url=pipelines_url,
        run_url=run_url,
        job_url=job_url,
        dataset_url=dataset_url,
        took=took,
    )


def graph(run: s.PipelineRun) -> Markup:
    """The run's steps as an SVG graph, each box linking to its row on the page."""
    nodes = [
        Node(
            name=step.name,
            upstream=step.upstream,
            caption=caption(step),
            fill=COLORS[step.status][0],
            stroke=COLORS[step.status][1],
            href=f"#step-{step.name}",
            dashed=step.cached,
        )
        for step in run.steps
    ]
    return dag(nodes, LEGEND, title=f"pipeline {run.name}", kind="step")


def caption(step: s.Step) -> str:
    """A box's second line: its status, and for a cache hit, the run it came from."""
    if step.cached and step.cached_from:
        return f"cached from {step.cached_from[:8]}"
    if step.status == "running" and step.started_at is not None:
        return f"running · {took(step)}"
    return step.status


def took(step: s.Step) -> str:
    """How long the step ran (so far): nothing for a step that has not, or a cache hit."""
    if step.started_at is None or step.cached:
        return "—"
    seconds = max(0.0, (step.ended_at or time.time()) - step.started_at)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
