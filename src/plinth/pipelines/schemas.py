"""Wire types of pipelines, shared by the server, the SDK, the CLI and the step worker.

A pipeline's **spec** is what tracing its function gives (``dsl.trace``): its steps in
an order where every step comes after the steps it reads, each with the function that
runs it (``module:qualname``), the digest of that function's code and what goes into
each of its arguments: a value, an earlier step's output, or a dataset version. The
server never imports or runs any of it: a step runs as a compute job in the run's
snapshot of the working directory, where ``plinth.pipelines.worker`` imports it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from plinth.compute.schemas import DIGEST, POOL, Snapshot

STEP_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"
PIPELINE_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"
TRIGGER_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
ARG_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
FUNCTION = r"^[A-Za-z_][A-Za-z0-9_.]{0,248}:[A-Za-z_][A-Za-z0-9_.]{0,248}$"  # 500 at most
RUN_ID = r"^[0-9a-f]{32}$"
MAX_STEPS = 500
MAX_OUTPUTS = 32
ERROR_TAG = "plinth.step.error"  # the exception a step raised, tagged on its job's run
MAX_VALUE_BYTES = 64 << 10  # a value argument, as JSON: data goes in as a dataset
RunStatus = Literal["running", "succeeded", "failed", "cancelled"]
StepStatus = Literal["waiting", "running", "succeeded", "cached", "failed", "skipped", "cancelled"]
DONE: tuple[str, ...] = ("succeeded", "cached")  # a step whose outputs can be read
ENDED: tuple[str, ...] = ("succeeded", "cached", "failed", "skipped", "cancelled")


def _json_size(value: Any, what: str) -> Any:
    try:
        text = json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be plain JSON (no NaN or infinity): {exc}") from None
    if len(text.encode()) > MAX_VALUE_BYTES:
        raise ValueError(
            f"{what} is over {MAX_VALUE_BYTES >> 10} KiB as JSON: pass data as a dataset "
            "or an upstream step's output"
        )
    return value


class ValueInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["value"] = "value"
    value: Any

    @field_validator("value")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return _json_size(value, "a value argument")


class OutputInput(BaseModel):
    """An earlier step's output (its ``index``-th when it returns several)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["output"] = "output"
    step: str = Field(pattern=STEP_NAME)
    index: int = Field(0, ge=0, lt=MAX_OUTPUTS)


class DatasetInput(BaseModel):
    """A version of one of the project's datasets: ``NAME@3``, or ``NAME`` for the
    newest when the run starts (which the run then pins)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["dataset"] = "dataset"
    ref: str = Field(min_length=1, max_length=220)


Input = Annotated[ValueInput | OutputInput | DatasetInput, Field(discriminator="kind")]


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=STEP_NAME)
    function: str = Field(pattern=FUNCTION, description="module:qualname, run by the worker")
    code_digest: str = Field(pattern=DIGEST, description="sha256 of the step's code")
    inputs: dict[Annotated[str, Field(pattern=ARG_NAME)], Input] = Field(
        default_factory=dict, max_length=100
    )
    outputs: int = Field(1, ge=1, le=MAX_OUTPUTS, description="values the function returns")
    cpus: float = Field(1.0, gt=0, le=4096)
    gpus: int = Field(0, ge=0, le=64)
    memory: str | None = Field(None, max_length=32)
    pool: str | None = Field(None, pattern=POOL)
    retries: int = Field(0, ge=0, le=20)
    timeout: str | None = Field(None, max_length=32)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        from plinth.compute.resources import parse_memory

        return _parsed(value, parse_memory)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: str | None) -> str | None:
        from plinth.compute.resources import parse_duration

        return _parsed(value, parse_duration)


def _parsed(value: str | None, parse: Any) -> str | None:
    """A job's resource as its job would take it, or ValueError now, not at its start."""
    from plinth.errors import InvalidInput

    if value is not None:
        try:
            if parse(value) <= 0:
                raise ValueError(f"{value!r}: give an amount above zero")
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
    return value


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=PIPELINE_NAME)
    function: str = Field(pattern=FUNCTION)
    params: dict[Annotated[str, Field(pattern=ARG_NAME)], Any] = Field(
        default_factory=dict, max_length=200, description="what the pipeline was called with"
    )
    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STEPS)

    @field_validator("params")
    @classmethod
    def _plain(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _json_size(value, "params")

    @model_validator(mode="after")
    def _a_dag(self) -> PipelineSpec:
        """Names unique; a step reads only steps before it (so the graph has no cycle)
        and outputs they have."""
        seen: dict[str, int] = {}
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}")
            for arg, source in step.inputs.items():
                if isinstance(source, OutputInput):
                    if source.step not in seen:
                        raise ValueError(
                            f"step {step.name!r} argument {arg!r} reads {source.step!r}, "
                            "which is not a step before it"
                        )
                    if source.index >= seen[source.step]:
                        raise ValueError(
                            f"step {step.name!r} argument {arg!r} reads output "
                            f"{source.index} of {source.step!r}, which returns "
                            f"{seen[source.step]}"
                        )
            seen[step.name] = step.outputs
        return self

    def upstream(self, step: StepSpec) -> list[str]:
        return sorted({i.step for i in step.inputs.values() if isinstance(i, OutputInput)})


class PipelineRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: PipelineSpec
    snapshot: Snapshot = Field(description="the working directory the steps run in")
    no_cache: StrictBool = Field(False, description="run every step, reusing nothing")


class ResolvedInput(BaseModel):
    """An argument as the worker fetches it: a value, the files of an output (artifacts
    ``path/…`` of tracked run ``run_id``) or a pinned dataset version."""

    kind: Literal["value", "output", "dataset"]
    value: Any = None
    run_id: str | None = None
    path: str | None = None
    digest: str | None = None
    ref: str | None = Field(None, description="NAME@VERSION")


class Step(BaseModel):
    name: str
    function: str
    code_digest: str = Field(description="of the code traced; the worker checks its snapshot's")
    status: StepStatus
    upstream: list[str]
    cpus: float
    gpus: int
    outputs: int
    cache_key: str | None = Field(None, description="set once its inputs are known")
    cached: bool = Field(False, description="its outputs were reused, nothing ran")
    cached_from: str | None = Field(None, description="the pipeline run whose step made them")
    job_id: str | None = Field(None, description="the compute job that ran it")
    run_id: str | None = Field(None, description="the tracked run holding its outputs")
    outputs_digest: str | None = None
    datasets: dict[str, str] = Field(
        default_factory=dict, description="argument: NAME@VERSION read"
    )
    inputs: dict[str, ResolvedInput] | None = Field(
        None, description="what each argument is, once it is submitted"
    )
    reason: str | None = None
    started_at: float | None = None
    ended_at: float | None = None


class PipelineRun(BaseModel):
    id: str
    project: str
    name: str
    function: str
    status: RunStatus
    reason: str | None
    user: str
    params: dict[str, Any]
    no_cache: bool
    trigger: str | None = Field(None, description="the trigger that started it")
    snapshot: Snapshot
    created_at: float
    ended_at: float | None
    steps: list[Step]

    @property
    def ended(self) -> bool:
        return self.status != "running"

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


class PipelineRunSummary(BaseModel):
    id: str
    project: str
    name: str
    status: RunStatus
    user: str
    trigger: str | None
    created_at: float
    ended_at: float | None
    steps: int
    cached: int
    failed: int


class PipelineRunPage(BaseModel):
    runs: list[PipelineRunSummary]
    next_cursor: str | None = None


class PipelineRunsQuery(BaseModel):
    name: str | None = Field(None, pattern=PIPELINE_NAME)
    status: RunStatus | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=40)


class TriggerCreate(BaseModel):
    """Start ``spec`` on a cron schedule (``cron``, UTC) or whenever dataset
    ``dataset`` gets a new version (``dataset``): exactly one of the two."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=TRIGGER_NAME)
    spec: PipelineSpec
    snapshot: Snapshot
    cron: str | None = Field(None, min_length=9, max_length=120)
    dataset: str | None = Field(None, min_length=1, max_length=200)
    no_cache: StrictBool = False

    @model_validator(mode="after")
    def _one(self) -> TriggerCreate:
        if (self.cron is None) == (self.dataset is None):
            raise ValueError("give a trigger either cron or dataset, not both or neither")
        return self


class Trigger(BaseModel):
    name: str
    project: str
    pipeline: str
    cron: str | None
    dataset: str | None
    user: str
    created_at: float
    next_at: float | None = Field(None, description="cron: when it fires next")
    seen_version: int | None = Field(None, description="dataset: the newest version seen")
    fired_at: float | None
    fired: int = Field(description="runs it has started")
    last_run: str | None
