"""MLflow's REST endpoints (``/api/2.0/mlflow/…``) under ``/mlflow``: thin, as every
route here; errors answer in MLflow's shape (``api/errors.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.api.uploads import download_headers, receive_upload, streamed_body
from plinth.core.access import Permission
from plinth.mlflow import schemas as m
from plinth.mlflow.service import MlflowService

PREFIX = "/mlflow/api/2.0/mlflow"
ARTIFACTS = "/mlflow/api/2.0/mlflow-artifacts/artifacts"
router = APIRouter(tags=["mlflow"])
Read = Annotated[Caller[MlflowService], caller(MlflowService, Permission.PROJECT_READ)]
Write = Annotated[Caller[MlflowService], caller(MlflowService, Permission.PROJECT_WRITE)]
Answer = dict[str, Any]
IdQuery = Annotated[str, Query(min_length=1, max_length=64)]


@router.post(f"{PREFIX}/experiments/create")
async def create_experiment(req: m.MlflowCreateExperiment, c: Write) -> Answer:
    return await c(c.service.create_experiment, req)


@router.get(f"{PREFIX}/experiments/get")
async def get_experiment(experiment_id: IdQuery, c: Read) -> Answer:
    return await c(c.service.get_experiment, experiment_id)


@router.get(f"{PREFIX}/experiments/get-by-name")
async def get_experiment_by_name(
    experiment_name: Annotated[str, Query(min_length=1, max_length=500)], c: Read
) -> Answer:
    return await c(c.service.get_experiment_by_name, experiment_name)


@router.post(f"{PREFIX}/experiments/search")
async def search_experiments(req: m.MlflowSearchExperiments, c: Read) -> Answer:
    return await c(c.service.search_experiments, req)


@router.post(f"{PREFIX}/runs/create")
async def create_run(req: m.MlflowCreateRun, c: Write) -> Answer:
    return await c(c.service.create_run, req)


@router.get(f"{PREFIX}/runs/get")
async def get_run(
    c: Read, run_id: IdQuery | None = None, run_uuid: IdQuery | None = None
) -> Answer:
    return await c(c.service.get_run, run_id, run_uuid)


@router.post(f"{PREFIX}/runs/update")
async def update_run(req: m.MlflowUpdateRun, c: Write) -> Answer:
    return await c(c.service.update_run, req)


@router.post(f"{PREFIX}/runs/log-metric")
async def log_metric(req: m.MlflowLogMetric, c: Write) -> Answer:
    return await c(c.service.log_metric, req)


@router.post(f"{PREFIX}/runs/log-parameter")
async def log_param(req: m.MlflowLogParam, c: Write) -> Answer:
    return await c(c.service.log_param, req)


@router.post(f"{PREFIX}/runs/set-tag")
async def set_tag(req: m.MlflowSetTag, c: Write) -> Answer:
    return await c(c.service.set_tag, req)


@router.post(f"{PREFIX}/runs/log-batch")
async def log_batch(req: m.MlflowLogBatch, c: Write) -> Answer:
    return await c(c.service.log_batch, req)


@router.post(f"{PREFIX}/runs/search")
async def search_runs(req: m.MlflowSearchRuns, c: Read) -> Answer:
    return await c(c.service.search_runs, req)


@router.post(f"{PREFIX}/logged-models/search")
async def search_logged_models(req: m.MlflowSearchLoggedModels, c: Read) -> Answer:
    return await c(c.service.search_logged_models, req)


@router.get(f"{PREFIX}/metrics/get-history")
async def metric_history(
    c: Read,
    metric_key: Annotated[str, Query(min_length=1, max_length=250)],
    run_id: IdQuery | None = None,
    run_uuid: IdQuery | None = None,
    page_token: Annotated[str | None, Query(max_length=100)] = None,
    max_results: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> Answer:
    return await c(c.service.metric_history, run_id, run_uuid, metric_key, page_token, max_results)


# MLflow's proxied artifact API: paths are EXPERIMENT/RUN/artifacts/NAME, as the run's
# ``artifact_uri`` (mlflow-artifacts:/EXPERIMENT/RUN/artifacts) makes the client send.
ArtifactPath = Annotated[str, Path(max_length=1200, description="EXPERIMENT/RUN/artifacts/NAME")]


@router.put(f"{ARTIFACTS}/{{artifact:path}}", openapi_extra=streamed_body("max_artifact_bytes"))
async def upload_artifact(artifact: ArtifactPath, request: Request, c: Write) -> Answer:
    """Stream the body into the run's artifacts (a name is written once)."""
    return await receive_upload(
        request,
        c.principal,
        lambda chunks: c.service.upload_artifact(artifact, chunks, principal=c.principal),
    )


@router.get(
    f"{ARTIFACTS}/{{artifact:path}}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact(artifact: ArtifactPath, c: Read) -> StreamingResponse:
    found, chunks = await c(c.service.download_artifact, artifact)
    return StreamingResponse(
        c.blocking.iterate(chunks),
        media_type="application/octet-stream",
        headers={"Content-Length": str(found.size), **download_headers(found.path)},
    )


@router.get(ARTIFACTS)
async def list_artifacts(
    c: Read, path: Annotated[str | None, Query(max_length=1200)] = None
) -> Answer:
    return await c(c.service.list_artifacts, path)
