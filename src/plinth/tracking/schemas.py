"""Wire types of tracking, shared by the server, the SDK and the CLI."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import AfterValidator, BaseModel, Field, model_validator

from plinth.core.names import check_project_name
from plinth.errors import InvalidInput

_KEY = re.compile(r"^[\w\-./: ]{1,250}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise InvalidInput(
            f"a metric, param or tag key is 1-250 letters, digits, spaces or '_-./:'; got {key!r}"
        )
    return key


def check_artifact_path(path: str) -> str:
    """Refuse anything that could point outside a run's artifact namespace.

    Names never reach a filesystem on the server (blobs are keyed by digest), but a
    client writes downloads under them, so the rules hold everywhere: relative,
    forward slashes, no empty, '.' or '..' segments, no control characters, and the
    same after URL-decoding so an encoded traversal cannot slip through twice.
    """
    seen = path
    for _ in range(3):
        _check_plain_path(seen)
        decoded = unquote(seen)
        if decoded == seen:
            return path
        seen = decoded
    raise InvalidInput(f"artifact path is URL-encoded more than twice: {path!r}")


def _check_plain_path(path: str) -> None:
    if not path or len(path) > 1000:
        raise InvalidInput("artifact path must be 1-1000 characters")
    if "\\" in path or _CONTROL.search(path):
        raise InvalidInput(
            f"artifact path may not contain backslashes or control characters: {path!r}"
        )
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise InvalidInput(f"artifact path must be relative: {path!r}")
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        raise InvalidInput(f"artifact path may not contain empty, '.' or '..' segments: {path!r}")


ProjectName = Annotated[str, AfterValidator(check_project_name)]
Key = Annotated[str, AfterValidator(check_key)]
ArtifactPath = Annotated[str, AfterValidator(check_artifact_path)]
RunStatus = Literal["running", "finished", "failed", "killed"]
TERMINAL: frozenset[str] = frozenset({"finished", "failed", "killed"})


TagValue = Annotated[str, Field(max_length=65_536)]


class RunCreate(BaseModel):
    id: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="chosen by the client (32 lowercase hex) so that a retried create "
        "returns the run it made instead of making another",
    )
    project: ProjectName
    name: str | None = Field(None, max_length=250)
    params: dict[Key, Any] = {}
    tags: dict[Key, TagValue] = {}


class RunUpdate(BaseModel):
    status: Literal["finished", "failed", "killed"]


class Run(BaseModel):
    id: str
    project: str
    name: str
    status: RunStatus
    start_time: float
    end_time: float | None
    params: dict[str, Any] = {}
    tags: dict[str, str] = {}
    metrics: dict[str, float] = Field({}, description="the latest value of each metric")


class MetricSeries(BaseModel):
    """Points of one metric, column by column: a few lists of numbers parse and store
    far faster than thousands of small objects."""

    key: Key
    steps: list[Annotated[int, Field(ge=-(2**63), lt=2**63)]]
    values: list[float]
    timestamps: list[Annotated[float, Field(allow_inf_nan=False)]]

    @model_validator(mode="after")
    def _same_lengths(self) -> MetricSeries:
        if not len(self.steps) == len(self.values) == len(self.timestamps):
            raise ValueError("steps, values and timestamps must have the same length")
        return self


class LogBatch(BaseModel):
    """All-or-nothing; a batch whose ``batch_id`` was applied before is applied once."""

    batch_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    metrics: list[MetricSeries] = []
    params: dict[Key, Any] = {}
    tags: dict[Key, TagValue] = {}


class LogResult(BaseModel):
    applied: bool = Field(description="false when this batch id was applied before")


class SearchQuery(BaseModel):
    project: ProjectName
    filter: str = Field("", max_length=4000)
    order_by: str = Field("", max_length=1000)
    limit: int = Field(100, ge=1, le=10_000)
    page_token: str | None = None


class RunPage(BaseModel):
    runs: list[Run]
    next_page_token: str | None = None


class HistoryPoint(BaseModel):
    step: int
    timestamp: float
    value: float


class MetricHistory(BaseModel):
    run_id: str
    key: str
    points: list[HistoryPoint]


class Artifact(BaseModel):
    path: str
    digest: str = Field(description="sha256 of the content (the plaintext, if encrypted)")
    size: int
    created_at: float
    encrypted: bool = Field(False, description="stored encrypted at rest")


class ArtifactRegister(BaseModel):
    """Record content the store already holds under a new name (no upload)."""

    path: ArtifactPath
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
