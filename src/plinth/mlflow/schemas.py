"""MLflow's request bodies (``mlflow/protos/service.proto``), as pydantic models, each
named ``Mlflow…`` so that the OpenAPI document keeps them apart from Plinth's own.

Field names are MLflow's; fields the MLflow client sends that Plinth does not use are
ignored, as MLflow's own server ignores unknown ones. The MLflow client sends 64-bit
integers as numbers or as strings: both parse.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from plinth.tracking.schemas import MAX_BATCH_PARAMS, MAX_BATCH_POINTS, MAX_BATCH_TAGS

Id = Annotated[str, Field(min_length=1, max_length=64)]
Text = Annotated[str, Field(max_length=65_536)]
Key = Annotated[str, Field(min_length=1, max_length=250)]


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
    max_results: int = Field(1000, ge=1, le=50_000)
    filter: str = Field("", max_length=4000)
    order_by: list[str] = Field([], max_length=10)
    page_token: str | None = Field(None, max_length=100)
    view_type: str | None = None


class MlflowCreateRun(_In):
    experiment_id: Id = "0"
    user_id: str | None = Field(None, max_length=250)
    run_name: str | None = Field(None, max_length=250)
    start_time: int | None = Field(None, ge=0, lt=2**47)  # milliseconds
    tags: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_TAGS)


class MlflowRunRef(_In):
    run_id: Id | None = None
    run_uuid: Id | None = None  # its name before MLflow 1.x renamed it


class MlflowUpdateRun(MlflowRunRef):
    status: str | None = None
    end_time: int | None = Field(None, ge=0, lt=2**47)  # milliseconds
    run_name: str | None = Field(None, max_length=250)


class MlflowMetric(_In):
    key: Key
    value: float
    timestamp: int = Field(ge=0, lt=2**63)
    step: int = Field(0, ge=-(2**63), lt=2**63)


class MlflowLogMetric(MlflowRunRef, MlflowMetric):
    pass


class MlflowLogParam(MlflowRunRef, MlflowKeyValue):
    pass


class MlflowSetTag(MlflowRunRef, MlflowKeyValue):
    pass


class MlflowLogBatch(MlflowRunRef):
    metrics: list[MlflowMetric] = Field([], max_length=MAX_BATCH_POINTS)
    params: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_PARAMS)
    tags: list[MlflowKeyValue] = Field([], max_length=MAX_BATCH_TAGS)


class MlflowSearchRuns(_In):
    experiment_ids: list[Id] = Field([], max_length=100)
    filter: str = Field("", max_length=4000)
    run_view_type: str | None = None
    max_results: int = Field(1000, ge=1, le=50_000)
    order_by: list[Annotated[str, Field(max_length=500)]] = Field([], max_length=20)
    page_token: str | None = Field(None, max_length=500)


class MlflowSearchLoggedModels(_In):
    experiment_ids: list[Id] = Field([], max_length=100)
    filter: str = Field("", max_length=4000)
    max_results: int | None = Field(None, ge=1, le=50_000)
    page_token: str | None = Field(None, max_length=500)
