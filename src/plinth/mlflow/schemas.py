"""MLflow's request bodies (``mlflow/protos/service.proto``), as pydantic models, each
named ``Mlflow…`` so that the OpenAPI document keeps them apart from Plinth's own.

Field names are MLflow's; fields the MLflow client sends that Plinth does not use are
ignored, as MLflow's own server ignores unknown ones. The MLflow client sends 64-bit
integers as numbers or as strings: both parse.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

from plinth.tracking.schemas import MAX_BATCH_PARAMS, MAX_BATCH_POINTS, MAX_BATCH_TAGS

Id = Annotated[str, Field(min_length=1, max_length=64)]
Text = Annotated[str, Field(max_length=65_536)]
Key = Annotated[str, Field(min_length=1, max_length=250)]


def _not_bool(value: object) -> object:
    if isinstance(value, bool):  # lax parsing would read true as 1
        raise ValueError("give a number, not true or false")
    return value


# A number as MLflow's client sends it (a 64-bit integer may come as a string, a
# metric's NaN and infinities as "NaN", "Infinity"), but never a JSON true or false.
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


# MLflow's view types, by name or number: never a JSON true (which lax parsing reads as 1)
ViewType = StrictStr | StrictInt | None
_MODEL_ORDER = re.compile(
    r"(name|version_number|creation_timestamp|last_updated_timestamp|timestamp)"
    r"(\s+(asc|desc))?",
    re.IGNORECASE,
)


def _model_order(clause: str) -> str:
    if not _MODEL_ORDER.fullmatch(clause.strip()):
        raise ValueError(
            "order_by is a field (name, version_number, creation_timestamp, "
            f"last_updated_timestamp) and ASC or DESC; got {clause[:60]!r}"
        )
    return clause


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MlflowKeyValue(_In):
    key: Key
    value: Text = ""


class MlflowCreateExperiment(_In):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    artifact_location: str | None = None
    tags: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_TAGS)


class MlflowSearchExperiments(_In):
    max_results: Int = Field(1000, ge=1, le=50_000)
    filter: str = Field("", max_length=4000)
    order_by: list[str] = Field([], max_length=10)
    page_token: str | None = Field(None, max_length=100)
    view_type: ViewType = None


class MlflowUpdateExperiment(_In):
    experiment_id: Id
    new_name: str | None = Field(None, max_length=500)


class MlflowExperimentRef(_In):
    experiment_id: Id


class MlflowExperimentTagKey(MlflowExperimentRef):
    key: Key


class MlflowExperimentTag(MlflowExperimentTagKey):
    value: Text = ""


class MlflowCreateRun(_In):
    experiment_id: Id = "0"
    user_id: str | None = Field(None, max_length=250)
    run_name: str | None = Field(None, max_length=250)
    start_time: Int | None = Field(None, ge=0, lt=2**47)  # milliseconds
    tags: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_TAGS)


class MlflowRunRef(_In):
    run_id: Id | None = None
    run_uuid: Id | None = None  # its name before MLflow 1.x renamed it


class MlflowUpdateRun(MlflowRunRef):
    status: str | None = None
    end_time: Int | None = Field(None, ge=0, lt=2**47)  # milliseconds
    run_name: str | None = Field(None, max_length=250)


class MlflowMetric(_In):
    key: Key
    value: Float
    timestamp: Int = Field(ge=0, lt=2**63)
    step: Int = Field(0, ge=-(2**63), lt=2**63)


class MlflowLogMetric(MlflowRunRef, MlflowMetric):
    pass


class MlflowLogParam(MlflowRunRef, MlflowKeyValue):
    pass


class MlflowSetTag(MlflowRunRef, MlflowKeyValue):
    pass


class MlflowDeleteTag(MlflowRunRef):
    key: Key


class MlflowLogBatch(MlflowRunRef):
    metrics: list[MlflowMetric] = Field([], max_length=MAX_BATCH_POINTS)
    params: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_PARAMS)
    tags: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_TAGS)


class MlflowDataset(_In):
    name: Annotated[str, Field(min_length=1, max_length=500)]
    digest: Annotated[str, Field(min_length=1, max_length=64)]
    source_type: str = Field("", max_length=100)
    source: str = Field("", max_length=65_536)
    schema_: str | None = Field(None, alias="schema", max_length=1_000_000)
    profile: str | None = Field(None, max_length=1_000_000)


class MlflowDatasetInput(_In):
    tags: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_TAGS)
    dataset: MlflowDataset


class MlflowModelInput(_In):
    model_id: Id


class MlflowLogInputs(MlflowRunRef):
    datasets: list[MlflowDatasetInput] = Field([], max_length=1000)
    models: list[MlflowModelInput] = Field([], max_length=1000)


class MlflowSearchRuns(_In):
    experiment_ids: list[Id] = Field([], max_length=100)
    filter: str = Field("", max_length=4000)
    run_view_type: ViewType = None
    max_results: Int = Field(1000, ge=1, le=50_000)
    order_by: list[Annotated[str, Field(max_length=500)]] = Field([], max_length=20)
    page_token: str | None = Field(None, max_length=500)


class MlflowSearchLoggedModels(_In):
    experiment_ids: list[Id] = Field([], max_length=100)
    filter: str = Field("", max_length=4000)
    max_results: Int | None = Field(None, ge=1, le=50_000)
    page_token: str | None = Field(None, max_length=500)


# models: MLflow 3's logged models, and the model registry (model_registry.proto)

Name = Annotated[str, Field(min_length=1, max_length=200)]
Version = Annotated[str, Field(min_length=1, max_length=12)]


class MlflowCreateLoggedModel(_In):
    experiment_id: Id
    name: str | None = Field(None, max_length=250)
    model_type: str | None = Field(None, max_length=250)
    source_run_id: Id | None = None
    params: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_PARAMS)
    tags: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_TAGS)


class MlflowFinalizeLoggedModel(_In):
    status: str = Field(max_length=40)


class MlflowLoggedModelTags(_In):
    tags: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_TAGS)


class MlflowLoggedModelParams(_In):
    params: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_PARAMS)


class MlflowModelOutput(_In):
    model_id: Id
    step: Int = Field(0, ge=-(2**63), lt=2**63)


class MlflowLogOutputs(_In):
    run_id: Id
    models: list[MlflowModelOutput] = Field([], max_length=1000)


class MlflowCreateRegisteredModel(_In):
    name: Name
    tags: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_TAGS)
    description: str | None = Field(None, max_length=5000)


class MlflowNamed(_In):
    name: Name


class MlflowUpdateRegisteredModel(MlflowNamed):
    description: str | None = Field(None, max_length=5000)


class MlflowSearchModels(_In):
    """A search of registered models or of model versions (a GET: its query)."""

    filter: str = Field("", max_length=4000)
    max_results: Int = Field(1000, ge=1, le=1_000_000)  # answered in pages of at most 1,000
    order_by: list[Annotated[str, Field(max_length=200), AfterValidator(_model_order)]] = Field(
        [], max_length=10
    )
    page_token: str | None = Field(None, max_length=100)


class MlflowLatestVersions(MlflowNamed):
    stages: list[Annotated[str, Field(max_length=40)]] = Field([], max_length=10)


class MlflowSetAlias(MlflowNamed):
    alias: Annotated[str, Field(min_length=1, max_length=64)]
    version: Version


class MlflowAliasRef(MlflowNamed):
    alias: Annotated[str, Field(min_length=1, max_length=64)]


class MlflowCreateVersion(MlflowNamed):
    source: str = Field("", max_length=2000)
    run_id: Id | None = None
    model_id: Annotated[str, Field(max_length=64)] | None = None
    tags: list[MlflowKeyValue] = Field([], max_length=100)
    description: str | None = Field(None, max_length=5000)


class MlflowVersionRef(MlflowNamed):
    version: Version


class MlflowUpdateVersion(MlflowVersionRef):
    description: str | None = Field(None, max_length=5000)


class MlflowTransitionStage(MlflowVersionRef):
    stage: str = Field(max_length=40)
    archive_existing_versions: StrictBool = False


class MlflowModelTagRef(_In):
    name: Name
    key: Key


class MlflowModelTag(MlflowModelTagRef):
    value: Text = ""


class MlflowVersionTag(MlflowVersionRef):
    key: Key
    value: Text = ""


class MlflowVersionTagRef(MlflowVersionRef):
    key: Key


class MlflowCreateUpload(_In):
    path: str = Field(max_length=4096)  # the client's local file: its name is kept
    num_parts: Int = Field(1, ge=1, le=10_000)


class MlflowUploadRef(_In):
    path: str = Field(max_length=4096)
    upload_id: Annotated[str, Field(min_length=1, max_length=100)]


class MlflowUploadPart(_In):
    part_number: Int = Field(ge=1, le=10_000)
    etag: str | None = Field(None, max_length=200)
    url: str | None = Field(None, max_length=4096)


class MlflowCompleteUpload(MlflowUploadRef):
    parts: list[MlflowUploadPart] = Field(min_length=1, max_length=10_000)
