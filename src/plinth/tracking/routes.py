"""HTTP routes of tracking: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.api.lean import lean
from plinth.api.uploads import file_download, receive_upload, streamed_body
from plinth.core.access import Permission, Principal
from plinth.tracking import history
from plinth.tracking import schemas as s
from plinth.tracking.artifacts import RunArtifactsService
from plinth.tracking.service import TrackingService

router = APIRouter(prefix="/api/v1", tags=["tracking"])
Read = Annotated[Caller[TrackingService], caller(TrackingService, Permission.PROJECT_READ)]
Write = Annotated[Caller[TrackingService], caller(TrackingService, Permission.PROJECT_WRITE)]
ArtifactsRead = Annotated[
    Caller[RunArtifactsService], caller(RunArtifactsService, Permission.PROJECT_READ)
]
ArtifactsWrite = Annotated[
    Caller[RunArtifactsService], caller(RunArtifactsService, Permission.PROJECT_WRITE)
]
# An id's form is documented, not enforced: one not of that form names no run (404).
RunId = Annotated[str, Path(json_schema_extra={"pattern": s.RUN_ID, "maxLength": 32})]
ArtifactName = Annotated[str, Path(max_length=1000, description="relative, '/'-separated")]


@router.post("/runs", response_model=s.CreatedRun, status_code=status.HTTP_201_CREATED)
@lean
async def create_run(req: s.RunCreate, c: Write) -> s.CreatedRun:
    return await c(c.service.create_run, req)


@router.post("/runs/search", response_model=s.RunPage)
async def search_runs(query: s.SearchQuery, c: Read) -> s.RunPage:
    return await c(c.service.search_runs, query)


@router.get("/runs/{run_id}", response_model=s.Run)
async def get_run(run_id: RunId, c: Read) -> s.Run:
    return await c(c.service.get_run, run_id)


@router.patch("/runs/{run_id}", response_model=s.EndedRun)
@lean
async def end_run(run_id: RunId, update: s.RunUpdate, c: Write) -> s.EndedRun:
    return await c(c.service.end_run, run_id, update)


@router.post("/runs/{run_id}/resume", response_model=s.ResumedRun)
async def resume_run(run_id: RunId, c: Write) -> s.ResumedRun:
    return await c(c.service.resume_run, run_id)


@router.delete("/runs/{run_id}", response_model=s.Run)
async def delete_run(run_id: RunId, c: Write) -> s.Run:
    """Delete a run: kept with all it logged, left out of searches, restorable."""
    return await c(c.service.delete_run, run_id)


@router.post("/runs/{run_id}/restore", response_model=s.Run)
async def restore_run(run_id: RunId, c: Write) -> s.Run:
    return await c(c.service.restore_run, run_id)


@router.post("/runs/{run_id}/heartbeat", status_code=status.HTTP_204_NO_CONTENT)
async def heartbeat(run_id: RunId, c: Write) -> Response:
    await c(c.service.heartbeat, run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/runs/{run_id}/batches", response_model=s.LogResult)
@lean
async def log_batch(run_id: RunId, batch: s.LogBatch, c: Write) -> s.LogResult:
    return await c(c.service.log_batch, run_id, batch)


@router.get(
    "/runs/{run_id}/metrics",
    response_model=s.MetricHistory,
    responses={200: {"content": {history.MEDIA_TYPE: {"schema": {"format": "binary"}}}}},
)
async def metric_history(
    run_id: RunId,
    c: Read,
    request: Request,
    key: Annotated[str, Query(max_length=250)],
    max_points: Annotated[
        int | None,
        Query(
            description=f"2 to {history.MAX_POINTS:,} (422 otherwise): thin the history on "
            "the server to at most this many points plus the first and last of each "
            "stretch of NaN or ±inf values, keeping the first and last points and each "
            "bucket's extremes",
            # checked by the service, so a number out of range is a 422 on every path
            json_schema_extra={"minimum": 2, "maximum": history.MAX_POINTS},
        ),
    ] = None,
) -> Response:
    """JSON columns, or with ``Accept: application/vnd.plinth.metric-history`` the
    same as little-endian binary arrays (``tracking/history.py`` has the layout)."""
    binary = history.wants_binary(request.headers.get("accept", ""))

    def answer(*, principal: Principal) -> bytes:  # read and encode in one hop to the pool
        columns = c.service.metric_history(run_id, key, max_points, principal=principal)
        return history.to_binary(columns) if binary else history.to_json(run_id, key, columns)

    media_type = history.MEDIA_TYPE if binary else "application/json"
    return Response(await c(answer), media_type=media_type)


@router.get("/runs/{run_id}/artifacts", response_model=list[s.Artifact])
async def list_artifacts(
    run_id: RunId,
    c: ArtifactsRead,
    path: Annotated[
        str | None, Query(max_length=1000, description="only the artifacts under path/")
    ] = None,
) -> list[s.Artifact]:
    return await c(c.service.list_artifacts, run_id, path)


@router.post(
    "/runs/{run_id}/artifacts", response_model=s.Artifact, status_code=status.HTTP_201_CREATED
)
async def register_artifact(
    run_id: RunId, req: s.ArtifactRegister, c: ArtifactsWrite
) -> s.Artifact:
    return await c(c.service.register_artifact, run_id, req)


@router.put(
    "/runs/{run_id}/artifacts/{path:path}",
    response_model=s.Artifact,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=streamed_body("max_artifact_bytes"),
)
async def upload_artifact(
    run_id: RunId,
    path: ArtifactName,
    request: Request,
    c: ArtifactsWrite,
    digest: Annotated[str | None, Header(alias="X-Plinth-Digest", pattern=s.DIGEST)] = None,
) -> s.Artifact:
    """Stream the body into the store; with ``X-Plinth-Digest`` it must hash to it."""
    s.check_artifact_path(path)
    return await receive_upload(
        request,
        c.principal,
        lambda chunks: c.service.upload_artifact(
            run_id, path, chunks, digest, principal=c.principal
        ),
    )


@router.get(
    "/runs/{run_id}/artifacts/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact(
    run_id: RunId, path: ArtifactName, c: ArtifactsRead
) -> StreamingResponse:
    artifact, chunks = await c(c.service.get_artifact, run_id, path)
    return file_download(
        c.blocking, chunks, size=artifact.size, digest=artifact.digest, name=artifact.path
    )
