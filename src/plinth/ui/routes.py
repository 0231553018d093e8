"""Pages of the web UI: parse the request, call the tracking service, render a template.

Templates autoescape everything, so names users chose (runs, params, tags) render as
text. A ``NotFound`` or ``InvalidInput`` from the service becomes an HTML error page
here, where the API would answer JSON.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from plinth import __version__
from plinth.api.auth import requires
from plinth.api.context import services_of
from plinth.api.errors import describe
from plinth.capabilities import declared
from plinth.core.access import Permission
from plinth.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from plinth.governance.projects import ProjectsService
from plinth.tracking import schemas as s
from plinth.tracking.artifacts import RunArtifactsService
from plinth.tracking.service import TrackingService
from plinth.ui import views

MAX_COMPARED = 25
_HERE = Path(__file__).parent
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters.update(views.FILTERS)
_templates.globals.update(
    version=__version__,
    color_class=views.color_class,
    version_color_class=views.version_color_class,
    width_class=views.width_class,
    pages=[page for capability in declared() for page in capability.pages],
)


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code)


def error_page(message: str, status_code: int) -> HTMLResponse:
    title = "Not found" if status_code == 404 else "Invalid request"
    return render("error.html", status_code, title=title, message=message, code=status_code)


class PageRoute(APIRoute):
    """A route whose Plinth errors render as an HTML page instead of the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthenticated:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            except (NotFound, InvalidInput, PermissionDenied) as exc:
                return error_page(exc.message, exc.status_code)
            except (RequestValidationError, ValidationError) as exc:
                return error_page(describe(exc.errors()), 400)

        return page


router = APIRouter(
    include_in_schema=False,
    route_class=PageRoute,
    dependencies=[requires(Permission.PROJECT_READ)],
)
router.mount("/ui/static", StaticFiles(directory=_HERE / "static"), name="ui-static")


class _AsCaller:
    """A service with every call made as the request's principal (set by the router's
    ``requires``), so pages show only what the API would."""

    def __init__(self, request: Request, service: type) -> None:
        self.service: Any = services_of(request).get(service)
        self.principal = request.state.principal

    def __getattr__(self, name: str) -> Any:
        return functools.partial(getattr(self.service, name), principal=self.principal)


def _service(request: Request, service: type = TrackingService) -> Any:
    return _AsCaller(request, service)


@router.get("/", response_class=HTMLResponse)
def projects_page(request: Request) -> HTMLResponse:
    svc = _service(request)
    listed = _service(request, ProjectsService).list_projects()
    projects = [(p, svc.count_runs(p.name)) for p in listed]
    return render("projects.html", projects=projects)


@router.get("/projects/{name}", response_class=HTMLResponse)
def project_page(
    request: Request,
    name: str,
    filter: str = "",
    order_by: str = "",
    page_token: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> HTMLResponse:
    query = s.SearchQuery(
        project=name, filter=filter, order_by=order_by, limit=limit, page_token=page_token
    )
    try:
        page, error = _service(request).search_runs(query), None
    except InvalidInput as exc:  # a bad filter is shown above the table, not on its own page
        page, error = s.RunPage(runs=[]), exc.message
    args = {"filter": filter, "order_by": order_by, "limit": limit if limit != 50 else None}
    base = f"/projects/{views.url_segment(name)}"
    params, metrics = views.columns(page.runs)
    return render(
        "project.html",
        400 if error else 200,
        project=name,
        query=query,
        page=page,
        error=error,
        params=params,
        metrics=metrics,
        base=base,
        args=args,
        field=views.field,
        sort_link=lambda target: views.sort_link(base, args, target, order_by),
        next_url=views.page_url(base, {**args, "page_token": page.next_page_token}),
        first_url=views.page_url(base, args),
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> HTMLResponse:
    svc = _service(request)
    run = svc.get_run(run_id)
    return render(
        "run.html",
        run=run,
        artifacts=_service(request, RunArtifactsService).list_artifacts(run.id),
        charts=views.metric_charts(svc, [run]),
    )


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, runs: Annotated[list[str] | None, Query()] = None
) -> HTMLResponse:
    ids = views.parse_run_ids(runs or [])
    if not ids:
        raise InvalidInput("choose at least one run to compare")
    if len(ids) > MAX_COMPARED:
        raise InvalidInput(f"compare at most {MAX_COMPARED} runs at a time; got {len(ids)}")
    svc = _service(request)
    chosen = [svc.get_run(run_id) for run_id in ids]
    params, metrics = views.columns(chosen)
    return render(
        "compare.html",
        runs=chosen,
        params=params,
        metrics=metrics,
        charts=views.metric_charts(svc, chosen),
    )
