"""MLflow's REST endpoints (``/api/2.0/mlflow/…``) under ``/mlflow``: thin, as every
route here; errors answer in MLflow's shape (``api/errors.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from plinth.api.auth import caller
from plinth.api.context import Caller, services_of
from plinth.api.uploads import Uploads, download_headers, receive_upload, streamed_body
from plinth.core.access import Permission
from plinth.mlflow import schemas as m
from plinth.mlflow.models import MlflowModels
from plinth.mlflow.service import MlflowService
from plinth.mlflow.uploads import PARTS_PATH, MlflowUploads

PREFIX = "/mlflow/api/2.0/mlflow"
ARTIFACTS = "/mlflow/api/2.0/mlflow-artifacts/artifacts"
MPU = "/mlflow/api/2.0/mlflow-artifacts/mpu"
router = APIRouter(tags=["mlflow"])
Read = Annotated[Caller[MlflowService], caller(MlflowService, Permission.PROJECT_READ)]
Write = Annotated[Caller[MlflowService], caller(MlflowService, Permission.PROJECT_WRITE)]
Admin = Annotated[Caller[MlflowService], caller(MlflowService, Permission.PROJECT_ADMIN)]
ReadModels = Annotated[Caller[MlflowModels], caller(MlflowModels, Permission.PROJECT_READ)]
WriteModels = Annotated[Caller[MlflowModels], caller(MlflowModels, Permission.PROJECT_WRITE)]
WriteUploads = Annotated[Caller[MlflowUploads], caller(MlflowUploads, Permission.PROJECT_WRITE)]
# A part's URL is its credential (as a presigned S3 URL is): MLflow's client sends parts
# without its token, to the URLs ``mpu/create`` answered.
PartUploads = Annotated[Caller[MlflowUploads], caller(MlflowUploads, Permission.PUBLIC)]
Answer = dict[str, Any]
IdQuery = Annotated[str, Query(min_length=1, max_length=64)]
NameQuery = Annotated[str, Query(min_length=1, max_length=200)]
VersionQuery = Annotated[str, Query(min_length=1, max_length=12)]
ModelId = Annotated[str, Path(min_length=1, max_length=64)]


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


@router.post(f"{PREFIX}/experiments/update")
async def update_experiment(req: m.MlflowUpdateExperiment, c: Write) -> Answer:
    return await c(c.service.update_experiment, req)


@router.post(f"{PREFIX}/experiments/delete")
async def delete_experiment(req: m.MlflowExperimentRef, c: Admin) -> Answer:
    """Takes the project's admin; its runs are deleted with it (restorable)."""
    return await c(c.service.delete_experiment, req.experiment_id)


@router.post(f"{PREFIX}/experiments/restore")
async def restore_experiment(req: m.MlflowExperimentRef, c: Admin) -> Answer:
    return await c(c.service.restore_experiment, req.experiment_id)


@router.post(f"{PREFIX}/experiments/set-experiment-tag")
async def set_experiment_tag(req: m.MlflowExperimentTag, c: Write) -> Answer:
    return await c(c.service.set_experiment_tag, req)


@router.post(f"{PREFIX}/experiments/delete-experiment-tag")
async def delete_experiment_tag(req: m.MlflowExperimentTagKey, c: Write) -> Answer:
    return await c(c.service.delete_experiment_tag, req)


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


@router.post(f"{PREFIX}/runs/delete")
async def delete_run(req: m.MlflowRunRef, c: Write) -> Answer:
    return await c(c.service.delete_run, req)


@router.post(f"{PREFIX}/runs/restore")
async def restore_run(req: m.MlflowRunRef, c: Write) -> Answer:
    return await c(c.service.restore_run, req)


@router.post(f"{PREFIX}/runs/log-inputs")
async def log_inputs(req: m.MlflowLogInputs, c: Write) -> Answer:
    return await c(c.service.log_inputs, req)


@router.post(f"{PREFIX}/runs/delete-tag")
async def delete_tag(req: m.MlflowDeleteTag, c: Write) -> Answer:
    return await c(c.service.delete_tag, req)


@router.post(f"{PREFIX}/runs/log-batch")
async def log_batch(req: m.MlflowLogBatch, c: Write) -> Answer:
    return await c(c.service.log_batch, req)


@router.post(f"{PREFIX}/runs/search")
async def search_runs(req: m.MlflowSearchRuns, c: Read) -> Answer:
    return await c(c.service.search_runs, req)


# MLflow 3's logged models -------------------------------------------------------------


@router.post(f"{PREFIX}/logged-models")
async def create_logged_model(req: m.MlflowCreateLoggedModel, c: WriteModels) -> Answer:
    return await c(c.service.create_logged_model, req)


@router.post(f"{PREFIX}/logged-models/search")
async def search_logged_models(req: m.MlflowSearchLoggedModels, c: ReadModels) -> Answer:
    return await c(c.service.search_logged_models, req)


@router.get(f"{PREFIX}/logged-models/{{model_id}}")
async def get_logged_model(model_id: ModelId, c: ReadModels) -> Answer:
    return await c(c.service.get_logged_model, model_id)


@router.patch(f"{PREFIX}/logged-models/{{model_id}}")
async def finalize_logged_model(
    model_id: ModelId, req: m.MlflowFinalizeLoggedModel, c: WriteModels
) -> Answer:
    return await c(c.service.finalize_logged_model, model_id, req)


@router.patch(f"{PREFIX}/logged-models/{{model_id}}/tags")
async def set_logged_model_tags(
    model_id: ModelId, req: m.MlflowLoggedModelTags, c: WriteModels
) -> Answer:
    return await c(c.service.set_logged_model_tags, model_id, req)


@router.delete(f"{PREFIX}/logged-models/{{model_id}}/tags/{{tag_key}}")
async def delete_logged_model_tag(
    model_id: ModelId,
    tag_key: Annotated[str, Path(min_length=1, max_length=250)],
    c: WriteModels,
) -> Answer:
    return await c(c.service.delete_logged_model_tag, model_id, tag_key)


@router.post(f"{PREFIX}/logged-models/{{model_id}}/params")
async def log_logged_model_params(
    model_id: ModelId, req: m.MlflowLoggedModelParams, c: WriteModels
) -> Answer:
    return await c(c.service.log_logged_model_params, model_id, req)


@router.post(f"{PREFIX}/runs/outputs")
async def log_outputs(req: m.MlflowLogOutputs, c: WriteModels) -> Answer:
    return await c(c.service.log_outputs, req)


# the model registry ---------------------------------------------------------------------


@router.post(f"{PREFIX}/registered-models/create")
async def create_registered_model(req: m.MlflowCreateRegisteredModel, c: WriteModels) -> Answer:
    return await c(c.service.create_registered_model, req)


@router.get(f"{PREFIX}/registered-models/get")
async def get_registered_model(name: NameQuery, c: ReadModels) -> Answer:
    return await c(c.service.get_registered_model, name)


@router.get(f"{PREFIX}/registered-models/search")
async def search_registered_models(
    req: Annotated[m.MlflowSearchModels, Query()], c: ReadModels
) -> Answer:
    return await c(c.service.search_registered_models, req)


@router.patch(f"{PREFIX}/registered-models/update")
async def update_registered_model(req: m.MlflowUpdateRegisteredModel, c: WriteModels) -> Answer:
    return await c(c.service.update_registered_model, req)


@router.delete(f"{PREFIX}/registered-models/delete")
async def delete_registered_model(req: m.MlflowNamed, c: WriteModels) -> Answer:
    return await c(c.service.delete_registered_model, req.name)


@router.post(f"{PREFIX}/registered-models/get-latest-versions")
async def get_latest_versions(req: m.MlflowLatestVersions, c: ReadModels) -> Answer:
    return await c(c.service.get_latest_versions, req)


@router.post(f"{PREFIX}/registered-models/alias")
async def set_alias(req: m.MlflowSetAlias, c: WriteModels) -> Answer:
    return await c(c.service.set_alias, req)


@router.delete(f"{PREFIX}/registered-models/alias")
async def delete_alias(req: m.MlflowAliasRef, c: WriteModels) -> Answer:
    return await c(c.service.delete_alias, req.name, req.alias)


@router.get(f"{PREFIX}/registered-models/alias")
async def get_by_alias(
    name: NameQuery, alias: Annotated[str, Query(min_length=1, max_length=64)], c: ReadModels
) -> Answer:
    return await c(c.service.get_by_alias, name, alias)


@router.post(f"{PREFIX}/registered-models/set-tag")
async def set_model_tag(req: m.MlflowModelTag, c: WriteModels) -> Answer:
    return await c(c.service.set_model_tag, req)


@router.delete(f"{PREFIX}/registered-models/delete-tag")
async def delete_model_tag(req: m.MlflowModelTagRef, c: WriteModels) -> Answer:
    return await c(c.service.delete_model_tag, req.name, req.key)


@router.post(f"{PREFIX}/model-versions/create")
async def create_model_version(req: m.MlflowCreateVersion, c: WriteModels) -> Answer:
    return await c(c.service.create_model_version, req)


@router.get(f"{PREFIX}/model-versions/get")
async def get_model_version(name: NameQuery, version: VersionQuery, c: ReadModels) -> Answer:
    return await c(c.service.get_model_version, name, version)


@router.get(f"{PREFIX}/model-versions/get-download-uri")
async def get_download_uri(name: NameQuery, version: VersionQuery, c: ReadModels) -> Answer:
    return await c(c.service.download_uri, name, version)


@router.get(f"{PREFIX}/model-versions/search")
async def search_model_versions(
    req: Annotated[m.MlflowSearchModels, Query()], c: ReadModels
) -> Answer:
    return await c(c.service.search_model_versions, req)


@router.patch(f"{PREFIX}/model-versions/update")
async def update_model_version(req: m.MlflowUpdateVersion, c: WriteModels) -> Answer:
    return await c(c.service.update_model_version, req)


@router.post(f"{PREFIX}/model-versions/transition-stage")
async def transition_stage(req: m.MlflowTransitionStage, c: WriteModels) -> Answer:
    return await c(c.service.transition_stage, req)


@router.delete(f"{PREFIX}/model-versions/delete")
async def delete_model_version(req: m.MlflowVersionRef, c: WriteModels) -> Answer:
    return await c(c.service.delete_model_version, req.name, req.version)


@router.post(f"{PREFIX}/model-versions/set-tag")
async def set_version_tag(req: m.MlflowVersionTag, c: WriteModels) -> Answer:
    return await c(c.service.set_version_tag, req)


@router.delete(f"{PREFIX}/model-versions/delete-tag")
async def delete_version_tag(req: m.MlflowVersionTagRef, c: WriteModels) -> Answer:
    return await c(c.service.delete_version_tag, req.name, req.version, req.key)


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


@router.get("/mlflow/api/3.0/mlflow/server-info")
async def server_info(c: Read) -> Answer:
    """What MLflow's client asks before a large upload: multipart uploads are served
    (presigned multipart downloads are not; downloads stream)."""
    return {
        "store_type": None,
        "workspaces_enabled": False,
        "trace_archival_enabled": False,
        "multipart_uploads_enabled": True,
        "multipart_downloads_enabled": False,
    }


@router.post(f"{MPU}/create/{{artifact:path}}")
async def create_upload(
    artifact: ArtifactPath, req: m.MlflowCreateUpload, request: Request, c: WriteUploads
) -> Answer:
    """Start a multipart upload: its id, and a URL for each part."""
    return await c(c.service.create, artifact, req, str(request.base_url))


@router.put(
    f"{PARTS_PATH}/{{upload_id}}/{{part}}",
    openapi_extra=streamed_body("max_artifact_bytes"),
    response_class=JSONResponse,
    include_in_schema=False,  # a URL ``mpu/create`` hands out, not an API to call
)
async def upload_part(
    upload_id: Annotated[str, Path(min_length=1, max_length=100)],
    part: Annotated[int, Path(ge=1, le=10_000)],
    request: Request,
    c: PartUploads,
) -> JSONResponse:
    """One part's bytes; answers its ETag (its sha256). The parts of one upload share
    the server's upload pool, not one principal's few upload slots."""
    uploads = services_of(request).get(Uploads)
    etag = await uploads.receive(
        request, lambda chunks: c.service.put_part(upload_id, part, chunks)
    )
    return JSONResponse({}, headers={"ETag": f'"{etag}"'})


@router.post(f"{MPU}/complete/{{artifact:path}}")
async def complete_upload(
    artifact: ArtifactPath, req: m.MlflowCompleteUpload, c: WriteUploads
) -> Answer:
    """Join the parts into the artifact (named once, like any upload)."""
    return await c(c.service.complete, artifact, req)


@router.post(f"{MPU}/abort/{{artifact:path}}")
async def abort_upload(artifact: ArtifactPath, req: m.MlflowUploadRef, c: WriteUploads) -> Answer:
    return await c(c.service.abort, artifact, req)
