"""Pages of deployments: a project's deployments, and one deployment's page (traffic
split, shadow, replicas, URL, history, its live traffic charts, and the forms that
change it: deployment_changes.py takes them).

As on the models pages (models.py): every call goes through the services as the
request's principal, so the page shows only what the API would. The forms carry the
form token of forms.py (a hidden field matching a SameSite=Strict cookie), and ui.js
adds the session's ``X-CSRF-Token`` when there is a session.

The traffic charts come from ``TrafficHistory`` (traffic.py), which reads the
replicas' metrics through the control plane; the page polls ``…/traffic`` for a
fresh fragment every few seconds while it is open.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response

from plinth.api.auth import requires
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.errors import PlinthError
from plinth.registry.service import RegistryService
from plinth.serving import schemas as s
from plinth.serving.service import DeploymentService
from plinth.ui.forms import form_token, keep_form_token
from plinth.ui.models import version_url
from plinth.ui.routes import PageRoute, _service, render
from plinth.ui.traffic import TrafficHistory
from plinth.ui.views import url_segment

READ = [requires(Permission.PROJECT_READ)]
WRITE = [requires(Permission.PROJECT_WRITE)]
POLL_SECONDS = 5  # how often an open page asks for fresh traffic charts

Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
Name = Annotated[str, Path(pattern=s.NAME, max_length=63)]

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def deployments_url(project: str) -> str:
    return f"/projects/{url_segment(project)}/deployments"


def deployment_url(project: str, name: str) -> str:
    return f"{deployments_url(project)}/{url_segment(name)}"


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
def show_deployment(request: Request, project: Project, name: Name) -> Response:
    return deployment_page(request, project, name)


@router.get(
    "/projects/{project}/deployments/{name}/traffic",
    response_class=HTMLResponse,
    dependencies=READ,
)
def traffic_fragment(request: Request, project: Project, name: Name) -> HTMLResponse:
    """The traffic charts alone, read now: what the open page polls for."""
    traffic = _service(request, TrafficHistory).traffic(project, name)
    return render("_traffic.html", traffic=traffic)


def split_text(split: list[dict[str, Any]] | list[s.SplitEntry] | None) -> str:
    """``v1 90% · v2 10%``, from a spec's split (a schema or its JSON)."""
    entries = [e if isinstance(e, dict) else e.model_dump() for e in split or []]
    return " · ".join(f"v{e['version']} {e['weight']}%" for e in entries)


def deployment_page(
    request: Request,
    project: str,
    name: str,
    *,
    refusal: PlinthError | None = None,
    form: str | None = None,
    typed: dict[str, str] | None = None,
) -> Response:
    """The page; after a refused change, with why (and the service's status), and what
    was typed in the ``form`` that was sent, to try again."""
    service = _service(request, DeploymentService)
    deployment = service.get_deployment(project, name)
    token = form_token(request)
    here = deployment_url(project, name)
    versions = _service(request, RegistryService).list_versions(project, deployment.model)
    response = render(
        "deployment.html",
        refusal.status_code if refusal else 200,
        d=deployment,
        history=service.deployment_history(project, name),
        traffic=_service(request, TrafficHistory).traffic(project, name),
        versions=[v for v in versions if v.status == "ready"],
        refusal=refusal.message if refusal else None,
        form=form,
        typed=typed or {},
        csrf=token,
        here=here,
        poll_seconds=POLL_SECONDS,
        max_replicas=s.MAX_REPLICAS,
        version_url=version_url,
        split_text=split_text,
    )
    return keep_form_token(request, response, token)
