"""HTTP routes of deployments: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.serving import schemas as s
from plinth.serving.service import DeploymentService

router = APIRouter(prefix="/api/v1/projects/{project}/deployments", tags=["deployments"])
Read = Annotated[Caller[DeploymentService], caller(DeploymentService, Permission.PROJECT_READ)]
Write = Annotated[Caller[DeploymentService], caller(DeploymentService, Permission.PROJECT_WRITE)]
Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
Name = Annotated[str, Path(pattern=s.NAME, max_length=63)]


@router.get("", response_model=list[s.Deployment])
async def list_deployments(project: Project, c: Read) -> list[s.Deployment]:
    return await c(c.service.list_deployments, project)


@router.post("", response_model=s.Deployment, status_code=201)
async def create_deployment(project: Project, req: s.DeploymentCreate, c: Write) -> s.Deployment:
    """Serve a model version (named by a models:/ URI) on replicas behind one URL."""
    return await c(c.service.create_deployment, project, req)


@router.get("/{name}", response_model=s.Deployment)
async def get_deployment(project: Project, name: Name, c: Read) -> s.Deployment:
    """The deployment's URL, traffic split, shadow and replicas as they run now."""
    return await c(c.service.get_deployment, project, name)


@router.patch("/{name}", response_model=s.Deployment)
async def update_deployment(
    project: Project, name: Name, req: s.DeploymentUpdate, c: Write
) -> s.Deployment:
    """A canary with a weight, a shadow, or new replica bounds."""
    return await c(c.service.update_deployment, project, name, req)


@router.post("/{name}/promote", response_model=s.Deployment)
async def promote_deployment(
    project: Project, name: Name, req: s.DeploymentChange, c: Write
) -> s.Deployment:
    return await c(c.service.promote_deployment, project, name, req.reason)


@router.post("/{name}/rollback", response_model=s.Deployment)
async def rollback_deployment(
    project: Project, name: Name, req: s.DeploymentChange, c: Write
) -> s.Deployment:
    return await c(c.service.rollback_deployment, project, name, req.reason)


@router.post("/{name}/scale", response_model=s.Deployment)
async def scale_deployment(
    project: Project, name: Name, req: s.DeploymentScale, c: Write
) -> s.Deployment:
    return await c(c.service.scale_deployment, project, name, req)


@router.get("/{name}/history", response_model=list[s.DeploymentEvent])
async def deployment_history(project: Project, name: Name, c: Read) -> list[s.DeploymentEvent]:
    return await c(c.service.deployment_history, project, name)


@router.get("/{name}/records", response_model=s.PredictionRecords)
async def deployment_records(
    project: Project, name: Name, query: Annotated[s.RecordsQuery, Depends()], c: Read
) -> s.PredictionRecords:
    """The predictions its replicas recorded (``record_sample``), a page at a time:
    newest first (``order=asc``: oldest first), with ``next_cursor`` for the next."""
    return await c(c.service.deployment_records, project, name, query)


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_deployment(
    project: Project,
    name: Name,
    c: Write,
    reason: Annotated[str, Query(max_length=2000)] = "",
) -> Response:
    await c(c.service.delete_deployment, project, name, reason)
    return Response(status_code=204)
