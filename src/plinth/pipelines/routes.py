"""HTTP routes of pipelines: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.pipelines import schemas as s
from plinth.pipelines.service import PipelineService
from plinth.pipelines.triggers import TriggerService

router = APIRouter(prefix="/api/v1/projects/{project}/pipelines", tags=["pipelines"])
Read = Annotated[Caller[PipelineService], caller(PipelineService, Permission.PROJECT_READ)]
Write = Annotated[Caller[PipelineService], caller(PipelineService, Permission.PROJECT_WRITE)]
Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
# A run id, or a unique prefix of 8 or more of its characters; any other names no run (404).
RunId = Annotated[str, Path(json_schema_extra={"pattern": s.RUN_ID, "maxLength": 32})]
TriggersRead = Annotated[Caller[TriggerService], caller(TriggerService, Permission.PROJECT_READ)]
TriggersWrite = Annotated[Caller[TriggerService], caller(TriggerService, Permission.PROJECT_WRITE)]
TriggerName = Annotated[str, Path(pattern=s.TRIGGER_NAME, max_length=63)]


@router.post("/runs", response_model=s.PipelineRun, status_code=status.HTTP_201_CREATED)
async def create_run(project: Project, req: s.PipelineRunCreate, c: Write) -> s.PipelineRun:
    """Start a run of a traced pipeline in an uploaded snapshot of its working directory
    (``PUT /projects/{project}/snapshots`` first)."""
    return await c(c.service.create_run, project, req)


@router.get("/runs", response_model=s.PipelineRunPage)
async def list_runs(
    project: Project, query: Annotated[s.PipelineRunsQuery, Depends()], c: Read
) -> s.PipelineRunPage:
    return await c(c.service.list_runs, project, query)


@router.get("/runs/{pipeline_run_id}", response_model=s.PipelineRun)
async def get_run(project: Project, pipeline_run_id: RunId, c: Read) -> s.PipelineRun:
    return await c(c.service.get_run, project, pipeline_run_id)


@router.post("/runs/{pipeline_run_id}/cancel", response_model=s.PipelineRun)
async def cancel_run(project: Project, pipeline_run_id: RunId, c: Write) -> s.PipelineRun:
    return await c(c.service.cancel_run, project, pipeline_run_id)


@router.post("/runs/{pipeline_run_id}/resume", response_model=s.PipelineRun)
async def resume_run(project: Project, pipeline_run_id: RunId, c: Write) -> s.PipelineRun:
    """Run a failed or cancelled run's failed, skipped and cancelled steps again."""
    return await c(c.service.resume_run, project, pipeline_run_id)


triggers_router = APIRouter(prefix="/api/v1/projects/{project}/pipelines", tags=["pipelines"])


@triggers_router.get("/triggers", response_model=list[s.Trigger])
async def list_triggers(project: Project, c: TriggersRead) -> list[s.Trigger]:
    return await c(c.service.list_triggers, project)


@triggers_router.post("/triggers", response_model=s.Trigger, status_code=status.HTTP_201_CREATED)
async def create_trigger(project: Project, req: s.TriggerCreate, c: TriggersWrite) -> s.Trigger:
    """Start the pipeline on a cron schedule (UTC) or on each new version of a dataset."""
    return await c(c.service.create_trigger, project, req)


@triggers_router.delete("/triggers/{name}", response_model=s.Trigger)
async def delete_trigger(project: Project, name: TriggerName, c: TriggersWrite) -> s.Trigger:
    return await c(c.service.delete_trigger, project, name)
