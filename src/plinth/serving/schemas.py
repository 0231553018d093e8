"""Wire types of deployments, shared by the server, the SDK and the CLI.

A deployment serves one registered model. Its ``spec`` says which versions take
traffic and in what share (``split``), which version sees a copy of every request
without answering (``shadow``), and how many replicas run. Every model is named by a
``models:/`` URI and pinned, when the spec is written, to the version number it meant
then: an alias that moves later does not move a deployment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# Where a model that can choose (pytorch) runs: auto is CUDA when the replica has one.
DEVICE = r"^(auto|cpu|cuda(:[0-9]{1,3})?)$"
Device = Annotated[str, Field(pattern=DEVICE, max_length=8)]
Uri = Annotated[str, Field(max_length=500, pattern=r"^models:/")]
MAX_REPLICAS = 32
Runtime = Literal["local", "memory"]


class Pinned(BaseModel):
    """A model version as the spec holds it: the URI given and the version it meant."""

    uri: str
    version: int
    run_id: str | None = None  # lineage: run → model version → deployment


class SplitEntry(Pinned):
    weight: int = Field(ge=0, le=100)


class DeploymentSpec(BaseModel):
    model: str  # the registered model's name; every version below is one of its
    split: list[SplitEntry]
    shadow: Pinned | None = None
    replicas: int = Field(ge=0, le=MAX_REPLICAS)
    min_replicas: int = Field(ge=0, le=MAX_REPLICAS)
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    record_sample: float = Field(0.0, ge=0.0, le=1.0)  # share of predictions recorded
    device: Device = "auto"

    def versions(self) -> list[int]:
        """Every version a replica must hold (split and shadow), each once."""
        found = [e.version for e in self.split]
        if self.shadow is not None:
            found.append(self.shadow.version)
        return sorted(set(found))


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    model: Uri
    replicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    min_replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS)
    max_replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS)
    port: int | None = Field(None, ge=1024, le=65535)  # None: a free one
    runtime: Runtime = "local"
    record_sample: float = Field(0.0, ge=0.0, le=1.0)
    device: Device = "auto"
    reason: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _bounds(self) -> DeploymentCreate:
        low = self.min_replicas if self.min_replicas is not None else min(1, self.replicas)
        high = self.max_replicas if self.max_replicas is not None else max(1, self.replicas)
        if not low <= self.replicas <= high:
            raise ValueError(f"replicas must lie between min ({low}) and max ({high})")
        return self


class DeploymentUpdate(BaseModel):
    """A canary (a version with ``weight`` percent of the traffic, the rest staying
    where it is), a shadow (``shadow_off`` removes it), or new replica bounds."""

    model_config = ConfigDict(extra="forbid")
    canary: Uri | None = None
    weight: int | None = Field(None, ge=1, le=99, strict=True, description="percent: 1 to 99")
    shadow: Uri | None = None
    shadow_off: StrictBool = False
    min_replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS)
    max_replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS)
    record_sample: float | None = Field(None, ge=0.0, le=1.0)
    reason: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _pairs(self) -> DeploymentUpdate:
        if (self.canary is None) != (self.weight is None):
            raise ValueError("a canary takes a weight, and a weight a canary")
        if self.shadow is not None and self.shadow_off:
            raise ValueError("give a shadow or shadow_off, not both")
        return self


class DeploymentScale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(ge=0, le=MAX_REPLICAS)
    reason: str = Field("", max_length=2000)


class DeploymentChange(BaseModel):
    """Promote or roll back, with an optional reason."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class Replica(BaseModel):
    replica: int
    pid: int | None
    state: str
    restarts: int
    started_at: float | None


class Deployment(BaseModel):
    project: str
    name: str
    url: str  # where it answers the same protocols as ``plinth serve``
    port: int
    runtime: str
    status: str
    generation: int
    model: str
    split: list[SplitEntry]
    shadow: Pinned | None
    desired_replicas: int
    record_sample: float  # share of predictions recorded (home/serving/records/)
    device: str = "auto"  # where a pytorch model runs in each replica
    min_replicas: int
    max_replicas: int
    replicas: list[Replica] = Field(default_factory=list)  # what runs now
    created_at: float
    updated_at: float
    created_by: str
    last_change: DeploymentEvent | None = None  # what changed last, by whom, and why


class DeploymentEvent(BaseModel):
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    actor: str
    at: float
    reason: str


class RecordsQuery(BaseModel):
    """Which prediction records to read, as query parameters."""

    limit: int = Field(100, ge=1, le=10_000)
    since: datetime | None = Field(
        None,
        description="only predictions made at or after this time: ISO 8601 (UTC when "
        "it has no offset) or seconds since the epoch",
    )
    version: int | None = Field(None, ge=1, description="only the answers of this version")
    shadow: bool | None = Field(
        None, description="true: only the shadow's answers; false: only those returned"
    )
    order: Literal["desc", "asc"] = Field("desc", description="newest (desc) or oldest first")
    cursor: str | None = Field(None, max_length=1000, description="a page's next_cursor")


class PredictionRecord(BaseModel):
    """One answered prediction, as a replica recorded it."""

    prediction_id: str = Field(description="also the answer's X-Plinth-Prediction-Id header")
    version: int | str | None = Field(description="the model version that answered")
    model: str | None = None
    at: datetime | None = Field(None, description="when the request arrived")
    recorded_at: datetime | None = Field(None, description="when it was written: pages' order")
    status: int | None = None  # the HTTP status of the answer
    latency_ms: float | None = None
    shadow: bool = False  # the shadow's answer to a copy of the request, never returned
    request_id: str | None = None  # the v2 request's own id, when it gave one
    inputs: Any = None
    outputs: Any = None
    inputs_truncated: bool = False  # left out: over the size limit, or not JSON a page can send
    outputs_truncated: bool = False


class PredictionRecords(BaseModel):
    records: list[PredictionRecord]
    next_cursor: str | None = Field(
        None, description="pass as cursor for the next page; null when there is no more"
    )
    skipped: int = Field(0, description="damaged lines passed over (not records)")


Deployment.model_rebuild()
