"""Pages of datasets: a project's datasets, a dataset's versions (pick two to compare),
a version's page (its files and schemas, its validation, each table's profile drawn
column by column) and the comparison of two versions. Read-only: every call goes
through the data service as the request's principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from plinth.api.auth import requires
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.data.refs import DATASET_NAME
from plinth.data.service import DatasetService
from plinth.ui.charts import bars
from plinth.ui.routes import PageRoute, _service, render
from plinth.ui.views import url_segment

READ = [requires(Permission.PROJECT_READ)]
Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
Name = Annotated[str, Path(pattern=DATASET_NAME, max_length=200)]
Selector = r"^(latest|[1-9][0-9]{0,9})$"
Version = Annotated[str, Path(pattern=Selector)]

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def dataset_url(project: str, ref: str) -> str:
    """The page of a pinned dataset version, from ``NAME@VERSION``."""
    name, _, version = ref.rpartition("@")
    base = f"/projects/{url_segment(project)}/datasets/{url_segment(name)}"
    return f"{base}/versions/{url_segment(version)}"


@router.get("/projects/{project}/datasets", response_class=HTMLResponse, dependencies=READ)
def datasets_page(request: Request, project: Project) -> HTMLResponse:
    found = _service(request, DatasetService).list_datasets(project)
    return render("datasets.html", project=project, datasets=found)


@router.get("/projects/{project}/datasets/{name}", response_class=HTMLResponse, dependencies=READ)
def dataset_page(request: Request, project: Project, name: Name) -> HTMLResponse:
    svc = _service(request, DatasetService)
    dataset = svc.get_dataset(project, name)
    versions = list(reversed(svc.list_versions(project, name)))
    return render(
        "dataset.html",
        project=project,
        dataset=dataset,
        versions=versions,
        rules=svc.get_rules(project, name),
    )


@router.get(
    "/projects/{project}/datasets/{name}/versions/{version}",
    response_class=HTMLResponse,
    dependencies=READ,
)
def version_page(request: Request, project: Project, name: Name, version: Version) -> HTMLResponse:
    svc = _service(request, DatasetService)
    v = svc.get_version(project, name, version)
    files = svc.version_files(project, name, str(v.version))
    profiles = svc.profiles(project, name, str(v.version))
    return render(
        "dataset_version.html",
        project=project,
        v=v,
        files=files,
        profiles=profiles,
        bars=bars,
    )


@router.get(
    "/projects/{project}/datasets/{name}/diff", response_class=HTMLResponse, dependencies=READ
)
def diff_page(
    request: Request,
    project: Project,
    name: Name,
    old: Annotated[str, Query(pattern=Selector)],
    new: Annotated[str, Query(pattern=Selector)] = "latest",
) -> HTMLResponse:
    d = _service(request, DatasetService).diff(project, name, old, new)
    return render("dataset_diff.html", project=project, d=d)
