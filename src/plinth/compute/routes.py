"""HTTP routes of compute: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request, status
from fastapi.responses import StreamingResponse

from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.api.uploads import download_headers, receive_upload, streamed_body
from plinth.compute import schemas as s
from plinth.compute.service import JobService
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME

router = APIRouter(prefix="/api/v1", tags=["compute"])
Read = Annotated[Caller[JobService], caller(JobService, Permission.PROJECT_READ)]
Write = Annotated[Caller[JobService], caller(JobService, Permission.PROJECT_WRITE)]
Signed = Annotated[Caller[JobService], caller(JobService, Permission.AUTHENTICATED)]
Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
# An id's form is documented, not enforced: one not of that form names no job (404).
JobId = Annotated[str, Path(json_schema_extra={"pattern": s.JOB_ID, "maxLength": 32})]
JOBS = "/projects/{project}/jobs"


@router.put(
    "/projects/{project}/snapshots",
    response_model=s.Snapshot,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=streamed_body("max_artifact_bytes"),
)
async def upload_snapshot(
    project: Project,
    request: Request,
    c: Write,
    digest: Annotated[str, Header(alias="X-Plinth-Digest", pattern=s.DIGEST)],
) -> s.Snapshot:
    """A working directory's archive for jobs to run in; its bytes must hash to the
    ``X-Plinth-Digest`` header. Submit then names it by digest."""
    return await receive_upload(
        request,
        c.principal,
        lambda chunks: c.service.upload_snapshot(project, chunks, digest, principal=c.principal),
    )


@router.get(
    "/projects/{project}/snapshots/{digest}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_snapshot(
    project: Project, digest: Annotated[str, Path(pattern=s.DIGEST)], c: Read
) -> StreamingResponse:
    """The archive of a snapshot a job of the project runs in (a job's token may read
    its own: a Kubernetes pod fetches it so)."""
    size, chunks = await c(c.service.download_snapshot, project, digest)
    return StreamingResponse(
        c.blocking.iterate(chunks),
        media_type="application/octet-stream",
        headers={"Content-Length": str(size), **download_headers(f"{digest}.tar")},
    )


@router.post(JOBS, response_model=s.Job, status_code=status.HTTP_201_CREATED)
async def submit_job(project: Project, req: s.JobSubmit, c: Write) -> s.Job:
    """Queue a job: an argv list run with the resources asked for."""
    return await c(c.service.submit_job, project, req)


@router.get(JOBS, response_model=s.JobPage)
async def list_jobs(
    project: Project, query: Annotated[s.JobsQuery, Depends()], c: Read
) -> s.JobPage:
    """The project's jobs, newest first (``status`` to filter; ``next_cursor`` pages)."""
    return await c(c.service.list_jobs, project, query)


@router.get(JOBS + "/{job_id}", response_model=s.Job)
async def get_job(project: Project, job_id: JobId, c: Read) -> s.Job:
    return await c(c.service.get_job, project, job_id)


@router.post(JOBS + "/{job_id}/cancel", response_model=s.Job)
async def cancel_job(project: Project, job_id: JobId, c: Write) -> s.Job:
    """Cancel a queued job, or stop a running one (SIGTERM, then SIGKILL after grace)."""
    return await c(c.service.cancel_job, project, job_id)


@router.get(JOBS + "/{job_id}/logs", response_model=s.JobLogs)
async def job_logs(
    project: Project, job_id: JobId, query: Annotated[s.JobLogsQuery, Depends()], c: Read
) -> s.JobLogs:
    """A worker's log from ``offset``; follow it by asking again from ``next_offset``."""
    return await c(c.service.job_logs, project, job_id, query)


@router.get("/compute/nodes", response_model=list[s.NodeUse])
async def list_nodes(c: Signed) -> list[s.NodeUse]:
    """Every node of every pool: capacity, and what running jobs hold of it."""
    return await c(c.service.nodes)


@router.get("/compute/pools", response_model=list[s.PoolUse])
async def list_pools(c: Signed) -> list[s.PoolUse]:
    return await c(c.service.pools)


@router.get("/usage", response_model=s.Usage)
async def usage(query: Annotated[s.UsageQuery, Depends()], c: Read) -> s.Usage:
    """Resource-hours (CPU, GPU, GiB of memory) and their cost by project, user, pool
    or job, over a window; each caller sees the projects they may read."""
    return await c(c.service.usage, query)
