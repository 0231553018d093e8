"""HTTP routes of tracking: parse, call the service, return a schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from plinth.tracking import schemas as s
from plinth.tracking.service import TrackingService

router = APIRouter(prefix="/api/v1", tags=["tracking"])


def service(request: Request) -> TrackingService:
    svc: TrackingService = request.app.state.tracking
    return svc


Service = Annotated[TrackingService, Depends(service)]


@router.get("/projects", response_model=list[s.Project])
def list_projects(svc: Service) -> list[s.Project]:
    return svc.list_projects()


@router.post("/runs", response_model=s.Run, status_code=status.HTTP_201_CREATED)
def create_run(req: s.RunCreate, svc: Service) -> s.Run:
    return svc.create_run(req)


@router.post("/runs/search", response_model=s.RunPage)
def search_runs(query: s.SearchQuery, svc: Service) -> s.RunPage:
    return svc.search_runs(query)


@router.get("/runs/{run_id}", response_model=s.Run)
def get_run(run_id: str, svc: Service) -> s.Run:
    return svc.get_run(run_id)


@router.patch("/runs/{run_id}", response_model=s.Run)
def end_run(run_id: str, update: s.RunUpdate, svc: Service) -> s.Run:
    return svc.end_run(run_id, update)


@router.post("/runs/{run_id}/heartbeat", status_code=status.HTTP_204_NO_CONTENT)
def heartbeat(run_id: str, svc: Service) -> Response:
    svc.heartbeat(run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/runs/{run_id}/batches", response_model=s.LogResult)
def log_batch(run_id: str, batch: s.LogBatch, svc: Service) -> s.LogResult:
    return svc.log_batch(run_id, batch)


@router.get("/runs/{run_id}/metrics", response_model=s.MetricHistory)
def metric_history(
    run_id: str, svc: Service, key: Annotated[str, Query(max_length=250)]
) -> s.MetricHistory:
    return svc.metric_history(run_id, key)


@router.get("/runs/{run_id}/artifacts", response_model=list[s.Artifact])
def list_artifacts(run_id: str, svc: Service) -> list[s.Artifact]:
    return svc.list_artifacts(run_id)


@router.post(
    "/runs/{run_id}/artifacts", response_model=s.Artifact, status_code=status.HTTP_201_CREATED
)
def register_artifact(run_id: str, req: s.ArtifactRegister, svc: Service) -> s.Artifact:
    return svc.register_artifact(run_id, req)


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
    svc: Service,
    digest: Annotated[str | None, Header(alias="X-Plinth-Digest")] = None,
) -> s.Artifact:
    """Stream the body into the store; with ``X-Plinth-Digest`` it must hash to it."""
    s.check_artifact_path(path)
    body = request.stream().__aiter__()

    async def next_chunk() -> bytes:
        return await body.__anext__()

    def chunks() -> Iterator[bytes]:
        while True:
            try:
                yield anyio.from_thread.run(next_chunk)
            except StopAsyncIteration:
                return

    return await anyio.to_thread.run_sync(svc.upload_artifact, run_id, path, chunks(), digest)


@router.get(
    "/runs/{run_id}/artifacts/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_artifact(run_id: str, path: str, svc: Service) -> StreamingResponse:
    artifact = svc.get_artifact(run_id, path)
    # The client verifies the digest end to end while it writes; hashing here too
    # would halve throughput and could only fail after the bytes were sent.
    return StreamingResponse(
        svc.read_artifact(artifact, verify=False),
        media_type="application/octet-stream",
        headers={"Content-Length": str(artifact.size), "X-Plinth-Digest": artifact.digest},
    )
