"""HTTP routes of tracking: parse, call the service, return a schema."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from plinth.core.access import Permission, Principal
from plinth.server.auth import caller
from plinth.server.blocking import Blocking
from plinth.tracking import schemas as s
from plinth.tracking.service import TrackingService

router = APIRouter(prefix="/api/v1", tags=["tracking"])


class Tracking:
    """The service, the way to call it, and who is calling, for one request."""

    def __init__(self, request: Request, principal: Principal) -> None:
        self.service: TrackingService = request.app.state.tracking
        self.blocking: Blocking = request.app.state.blocking
        self.principal = principal


Read = Annotated[Tracking, caller(Tracking, Permission.PROJECT_READ)]
Write = Annotated[Tracking, caller(Tracking, Permission.PROJECT_WRITE)]


@router.get("/projects", response_model=list[s.Project])
async def list_projects(t: Read) -> list[s.Project]:
    return await t.blocking.run(t.service.list_projects, principal=t.principal)


@router.post("/runs", response_model=s.Run, status_code=status.HTTP_201_CREATED)
async def create_run(req: s.RunCreate, t: Write) -> s.Run:
    return await t.blocking.run(t.service.create_run, req, principal=t.principal)


@router.post("/runs/search", response_model=s.RunPage)
async def search_runs(query: s.SearchQuery, t: Read) -> s.RunPage:
    return await t.blocking.run(t.service.search_runs, query, principal=t.principal)


@router.get("/runs/{run_id}", response_model=s.Run)
async def get_run(run_id: str, t: Read) -> s.Run:
    return await t.blocking.run(t.service.get_run, run_id, principal=t.principal)


@router.patch("/runs/{run_id}", response_model=s.Run)
async def end_run(run_id: str, update: s.RunUpdate, t: Write) -> s.Run:
    return await t.blocking.run(t.service.end_run, run_id, update, principal=t.principal)


@router.post("/runs/{run_id}/heartbeat", status_code=status.HTTP_204_NO_CONTENT)
async def heartbeat(run_id: str, t: Write) -> Response:
    await t.blocking.run(t.service.heartbeat, run_id, principal=t.principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/runs/{run_id}/batches", response_model=s.LogResult)
async def log_batch(run_id: str, batch: s.LogBatch, t: Write) -> s.LogResult:
    return await t.blocking.run(t.service.log_batch, run_id, batch, principal=t.principal)


@router.get("/runs/{run_id}/metrics", response_model=s.MetricHistory)
async def metric_history(
    run_id: str, t: Read, key: Annotated[str, Query(max_length=250)]
) -> s.MetricHistory:
    return await t.blocking.run(t.service.metric_history, run_id, key, principal=t.principal)


@router.get("/runs/{run_id}/artifacts", response_model=list[s.Artifact])
async def list_artifacts(run_id: str, t: Read) -> list[s.Artifact]:
    return await t.blocking.run(t.service.list_artifacts, run_id, principal=t.principal)


@router.post(
    "/runs/{run_id}/artifacts", response_model=s.Artifact, status_code=status.HTTP_201_CREATED
)
async def register_artifact(run_id: str, req: s.ArtifactRegister, t: Write) -> s.Artifact:
    return await t.blocking.run(t.service.register_artifact, run_id, req, principal=t.principal)


@router.put(
    "/runs/{run_id}/artifacts/{path:path}",
    response_model=s.Artifact,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}}},
)
async def upload_artifact(
    run_id: str,
    path: str,
    request: Request,
    t: Write,
    digest: Annotated[str | None, Header(alias="X-Plinth-Digest")] = None,
) -> s.Artifact:
    """Stream the body into the store; with ``X-Plinth-Digest`` it must hash to it."""
    s.check_artifact_path(path)
    body = request.stream().__aiter__()

    async def next_chunk() -> bytes:
        return await body.__anext__()

    def chunks() -> Iterator[bytes]:
        # The store pulls the body from a worker thread, chunk by chunk, so a
        # multi-GB upload never sits in memory.
        while True:
            try:
                yield anyio.from_thread.run(next_chunk)
            except StopAsyncIteration:
                return

    upload = functools.partial(
        t.service.upload_artifact, run_id, path, chunks(), digest, principal=t.principal
    )
    return await anyio.to_thread.run_sync(upload)


@router.get(
    "/runs/{run_id}/artifacts/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact(run_id: str, path: str, t: Read) -> StreamingResponse:
    artifact, chunks = await t.blocking.run(
        t.service.get_artifact, run_id, path, principal=t.principal
    )
    # The client verifies the digest end to end while it writes; hashing here too
    # would halve throughput and could only fail after the bytes were sent.
    return StreamingResponse(
        t.blocking.iterate(chunks),
        media_type="application/octet-stream",
        headers={"Content-Length": str(artifact.size), "X-Plinth-Digest": artifact.digest},
    )
