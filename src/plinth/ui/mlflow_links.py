"""Where the links MLflow's client prints land: ``/mlflow/#/experiments/ID/runs/RUN``
(printed by every ``mlflow.start_run`` against a Plinth server) and the like open the
same run, project or model in Plinth's UI. The part after ``#`` never reaches a server,
so ``/mlflow/`` is a page whose script reads it and goes on; the ids it cannot turn into
Plinth's addresses itself (an experiment's id, a model's project) go through the
redirects below, which answer what the caller may read, as the API does."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from plinth.api.auth import requires
from plinth.core.access import Permission
from plinth.mlflow.models import MlflowModels
from plinth.mlflow.service import MlflowService
from plinth.ui.routes import PageRoute, _service, render
from plinth.ui.views import url_segment

router = APIRouter(
    include_in_schema=False,
    route_class=PageRoute,
    dependencies=[requires(Permission.PROJECT_READ)],
)


@router.get("/mlflow/", response_class=HTMLResponse)
def mlflow_landing() -> HTMLResponse:
    return render("mlflow_link.html")


@router.get("/ui/mlflow/experiments/{experiment_id}")
def experiment_link(
    request: Request, experiment_id: Annotated[str, Path(max_length=64)]
) -> RedirectResponse:
    found = _service(request, MlflowService).get_experiment(experiment_id)["experiment"]
    return RedirectResponse(f"/projects/{url_segment(found['name'])}", status_code=303)


@router.get("/ui/mlflow/models/{name}")
def model_link(
    request: Request,
    name: Annotated[str, Path(max_length=200)],
    version: Annotated[str | None, Query(max_length=12)] = None,
) -> RedirectResponse:
    """A model's page (its version's, or its latest version's) in its project."""
    models = _service(request, MlflowModels)
    project = models.project_of(name)  # NotFound for a model one may not read
    if version is None:
        latest = models.get_registered_model(name)["registered_model"].get("latest_versions")
        version = latest[0]["version"] if latest else None
    where = f"/projects/{url_segment(project)}/models"
    if version is not None:
        where += f"/{url_segment(name)}/versions/{url_segment(version)}"
    return RedirectResponse(where, status_code=303)
