"""Pages of deployments: a project's deployments, one deployment's page (traffic split,
shadow, replicas, URL, history, and its live traffic charts), and the two changes a
person makes there: promote the canary, roll back the last change of the traffic.

As on the models pages (models.py): every call goes through the services as the
request's principal, so the services decide who may change what, and a refusal (a
viewer rolling back, nothing to promote) is shown on the deployment page itself with
the service's status; an accepted change redirects back to the page. The forms carry
models.py's CSRF token (a hidden field matching a SameSite=Strict cookie), and ui.js
adds the session's ``X-CSRF-Token`` when there is a session.

The traffic charts come from ``TrafficHistory`` (traffic.py), which reads the
replicas' metrics through the control plane; the page polls ``…/traffic`` for a
fresh fragment every few seconds while it is open.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from plinth.api.auth import requires
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.errors import PlinthError
from plinth.serving import schemas as s
from plinth.serving.service import DeploymentService
from plinth.ui.models import (
    FORM_CSRF_COOKIE,
    FORM_CSRF_SECONDS,
    SHOWN_ON_PAGE,
    CsrfField,
    _check_form_token,
    version_url,
)
from plinth.ui.routes import PageRoute, _service, render
from plinth.ui.traffic import TrafficHistory
from plinth.ui.views import url_segment

READ = [requires(Permission.PROJECT_READ)]
WRITE = [requires(Permission.PROJECT_WRITE)]
POLL_SECONDS = 5  # how often an open page asks for fresh traffic charts

Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
Name = Annotated[str, Path(pattern=s.NAME, max_length=63)]
Reason = Annotated[str, Form(max_length=2000)]

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def deployment_url(project: str, name: str) -> str:
    return f"/projects/{url_segment(project)}/deployments/{url_segment(name)}"


@router.get("/projects/{project}/deployments", response_class=HTMLResponse, dependencies=READ)
def deployments_page(request: Request, project: Project) -> HTMLResponse:
    deployments = _service(request, DeploymentService).list_deployments(project)
    return render(
        "deployments.html",
        project=project,
        deployments=deployments,
        deployment_url=deployment_url,
        split_text=split_text,
    )


@router.get(
    "/projects/{project}/deployments/{name}", response_class=HTMLResponse, dependencies=READ
)
def deployment_page(request: Request, project: Project, name: Name) -> Response:
    return _deployment_page(request, project, name)


@router.get(
    "/projects/{project}/deployments/{name}/traffic",
    response_class=HTMLResponse,
    dependencies=READ,
)
def traffic_fragment(request: Request, project: Project, name: Name) -> HTMLResponse:
    """The traffic charts alone, read now: what the open page polls for."""
    traffic = _service(request, TrafficHistory).traffic(project, name)
    return render("_traffic.html", traffic=traffic)


@router.post("/projects/{project}/deployments/{name}/promote", dependencies=WRITE)
def promote(
    request: Request, project: Project, name: Name, reason: Reason = "", csrf: CsrfField = ""
) -> Response:
    """The canary takes the whole split."""
    service = _service(request, DeploymentService)
    change = functools.partial(service.promote_deployment, project, name, reason)
    return _change(request, project, name, csrf, change, reason)


@router.post("/projects/{project}/deployments/{name}/rollback", dependencies=WRITE)
def rollback(
    request: Request, project: Project, name: Name, reason: Reason = "", csrf: CsrfField = ""
) -> Response:
    """Back to the split and shadow before the last change of them."""
    service = _service(request, DeploymentService)
    change = functools.partial(service.rollback_deployment, project, name, reason)
    return _change(request, project, name, csrf, change, reason)


def _change(
    request: Request,
    project: str,
    name: str,
    csrf: str,
    change: Callable[[], Any],
    reason: str,
) -> Response:
    """Make the change and go back to the page; or show the page with why not."""
    try:
        _check_form_token(request, csrf)
        change()
    except SHOWN_ON_PAGE as exc:
        return _deployment_page(request, project, name, refusal=exc, reason=reason)
    return RedirectResponse(deployment_url(project, name), status_code=303)


def split_text(split: list[dict[str, Any]] | list[s.SplitEntry] | None) -> str:
    """``v1 90% · v2 10%``, from a spec's split (a schema or its JSON)."""
    entries = [e if isinstance(e, dict) else e.model_dump() for e in split or []]
    return " · ".join(f"v{e['version']} {e['weight']}%" for e in entries)


def _deployment_page(
    request: Request,
    project: str,
    name: str,
    *,
    refusal: PlinthError | None = None,
    reason: str = "",
) -> Response:
    service = _service(request, DeploymentService)
    deployment = service.get_deployment(project, name)
    token = request.cookies.get(FORM_CSRF_COOKIE) or secrets.token_urlsafe(32)
    here = deployment_url(project, name)
    response = render(
        "deployment.html",
        refusal.status_code if refusal else 200,
        d=deployment,
        history=service.deployment_history(project, name),
        traffic=_service(request, TrafficHistory).traffic(project, name),
        refusal=refusal.message if refusal else None,
        reason=reason,
        csrf=token,
        here=here,
        poll_seconds=POLL_SECONDS,
        version_url=version_url,
        split_text=split_text,
    )
    if request.cookies.get(FORM_CSRF_COOKIE) != token:
        response.set_cookie(
            FORM_CSRF_COOKIE,
            token,
            max_age=FORM_CSRF_SECONDS,
            path="/projects",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response
