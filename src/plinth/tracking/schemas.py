"""Wire types of tracking, shared by the server, the SDK and the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal, SupportsIndex, overload
from urllib.parse import unquote

from pydantic import AfterValidator, BaseModel, Field, Strict, model_validator

from plinth.core.names import PROJECT_NAME, check_project_name
from plinth.errors import InvalidInput, Unprocessable

RUN_ID = r"^[0-9a-f]{8,32}$"  # 32 hex digits; GET takes a unique prefix of 8 or more
DIGEST = r"^[0-9a-f]{64}$"  # sha256, hex
_KEY = re.compile(r"^[\w\-./: ]{1,250}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"[A-Za-z]:")


def check_key(key: str) -> str:
    if not _KEY.match(key):
        check_utf8(key, "a metric, param or tag key")
        raise InvalidInput(
            f"a metric, param or tag key is 1-250 letters, digits, spaces or '_-./:'; got {key!r}"
        )
    return key


def check_artifact_path(path: str) -> str:
    """Refuse anything that could point outside a run's artifact namespace.

    Names never reach a filesystem on the server (blobs are keyed by digest), but a
    client writes downloads under them, so the rules hold everywhere: relative,
    forward slashes, no empty, '.' or '..' segments, no control characters, and the
    same after URL-decoding so an encoded traversal cannot slip through twice; and
    valid UTF-8 as sent, so that two different names are never stored as one.
    """
    check_utf8(path, "artifact path")
    seen = path
    for _ in range(3):
        _check_plain_path(seen)
        if "%" not in seen:  # nothing to decode (a dataset's thousand paths, mostly)
            return path
        decoded = unquote(seen)
        if decoded == seen:
            return path
        seen = decoded
    raise InvalidInput(f"artifact path is URL-encoded more than twice: {path!r}")


def check_utf8(text: str, what: str) -> str:
    """Refuse text holding U+FFFD: decoding puts it where the bytes sent (a URL's
    ``%ff``, an overlong ``%c0%ae``) were not UTF-8, so different names would arrive
    as one. The character sent as itself is refused too: it cannot be told apart."""
    if "\ufffd" in text:
        raise InvalidInput(
            f"{what} is not valid UTF-8 (U+FFFD stands for bytes that were not): {text!a}"
        )
    return text


def _check_plain_path(path: str) -> None:
    if not path or len(path) > 1000:
        raise InvalidInput("artifact path must be 1-1000 characters")
    if "\\" in path or _CONTROL.search(path):
        raise InvalidInput(
            f"artifact path may not contain backslashes or control characters: {path!r}"
        )
    if path.startswith("/") or _DRIVE.match(path):
        raise InvalidInput(f"artifact path must be relative: {path!r}")
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        raise InvalidInput(f"artifact path may not contain empty, '.' or '..' segments: {path!r}")


def check_batch_size(data: dict[str, Any], holds: str, advice: str) -> None:
    """Refuse (422) a request over the limits below, naming the limit, before a
    million points are validated one by one. ``holds`` and ``advice`` word the
    message: "a batch holds at most 10,000 points; got 1,000,000: split it"."""
    series = data.get("metrics")
    series = [m for m in series if isinstance(m, dict)] if isinstance(series, list) else []
    points = sum(max(_length(m.get(c)) for c in ("steps", "values", "timestamps")) for m in series)
    params, tags = _mapping(data.get("params")), _mapping(data.get("tags"))
    for what, got, limit in (
        ("metric series", len(series), MAX_BATCH_SERIES),
        ("points", points, MAX_BATCH_POINTS),
        ("params", len(params), MAX_BATCH_PARAMS),
        ("tags", len(tags), MAX_BATCH_TAGS),
    ):
        if got > limit:
            raise Unprocessable(f"{holds} at most {limit:,} {what}; got {got:,}: {advice}")
    keys = [*params, *tags, *(m.get("key") for m in series)]
    for key in keys:
        if isinstance(key, str) and len(key) > MAX_KEY_LENGTH:
            raise Unprocessable(
                f"a key holds at most {MAX_KEY_LENGTH:,} characters; got {len(key):,}"
            )
    for key, value in params.items():
        if _deeper_than(value, MAX_PARAM_DEPTH):
            raise Unprocessable(
                f"params.{key}: a param value nests at most {MAX_PARAM_DEPTH} lists or objects"
            )
        _value_fits(f"params.{key}: a param value (as JSON)", _json_length(value))
    for key, value in tags.items():
        _value_fits(f"tags.{key}: a tag value", len(value) if isinstance(value, str) else 0)


def _value_fits(what: str, length: int) -> None:
    if length > MAX_VALUE_LENGTH:
        raise Unprocessable(f"{what} holds at most {MAX_VALUE_LENGTH:,} characters; got {length:,}")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest in ``value`` more than ``limit`` deep."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            inner
            for v in level
            if isinstance(v, list | dict)
            for inner in (v.values() if isinstance(v, dict) else v)
        ]
        if not level:
            return False
    return True


def _length(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _json_length(value: Any) -> int:
    """The length of the JSON text the service stores for a param."""
    try:
        return len(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):  # not JSON: validation refuses it elsewhere
        return 0


# The check words its refusal better than a pattern would; the schema shows the pattern.
ProjectName = Annotated[
    str,
    AfterValidator(check_project_name),
    Field(json_schema_extra={"pattern": PROJECT_NAME, "maxLength": 200}),
]
Key = Annotated[str, AfterValidator(check_key)]
ArtifactPath = Annotated[str, AfterValidator(check_artifact_path)]
RunStatus = Literal["running", "finished", "failed", "killed"]
TERMINAL: frozenset[str] = frozenset({"finished", "failed", "killed"})


# What one request may carry. A batch holds the database's single writer (SQLite has
# one) while it is stored, so none may be large enough to make other writers wait for
# seconds. The limits are part of the wire contract: the SDK splits larger batches
# itself (tracking/client.py), so they are constants both sides know.
MAX_BATCH_POINTS = 10_000
MAX_BATCH_SERIES = 1_000
MAX_BATCH_PARAMS = 1_000
MAX_BATCH_TAGS = 1_000
MAX_KEY_LENGTH = 250
MAX_VALUE_LENGTH = 65_536  # characters of a tag value, or of a param value as JSON
MAX_PARAM_DEPTH = 32  # lists and objects within a param value

TagValue = Annotated[str, Field(max_length=MAX_VALUE_LENGTH)]
Params = Annotated[
    dict[Key, Any],
    Field(
        max_length=MAX_BATCH_PARAMS,
        description=f"at most {MAX_BATCH_PARAMS:,}, each at most {MAX_VALUE_LENGTH:,} "
        "characters as JSON",
    ),
]
Tags = Annotated[
    dict[Key, TagValue], Field(max_length=MAX_BATCH_TAGS, description=f"at most {MAX_BATCH_TAGS:,}")
]
PARENT = "the run this one is nested in, a run of the same project"


class Run(BaseModel):
    id: str
    project: str
    name: str
    status: RunStatus
    start_time: float
    end_time: float | None
    parent_id: str | None = Field(None, description=PARENT)
    deleted_at: float | None = Field(
        None, description="when the run was deleted: it is kept, restorable, out of searches"
    )
    params: dict[str, Any] = {}
    tags: dict[str, str] = {}
    metrics: dict[str, float] = Field({}, description="the latest value of each metric")


class ResumedRun(Run):
    steps: dict[str, int] = Field(
        {}, description="the latest step of each metric, so automatic steps continue after it"
    )


class CreatedRun(Run):
    batch: str | None = Field(
        None,
        description="the id of the batch the request carried, applied with it (or before): "
        "an SDK that sent one and gets no id back is talking to a server that ignores it",
    )


class EndedRun(CreatedRun):
    pass


def default_run_name(run_id: str) -> str:
    """A run's name when it is given none: the same on the server and in the SDK, which
    names a run before the create it holds back is sent."""
    return f"run-{run_id[:8]}"


class MetricSeries(BaseModel):
    """Points of one metric, column by column: a few lists of numbers parse and store
    far faster than thousands of small objects."""

    key: Key
    steps: Annotated[
        list[Annotated[int, Field(ge=-(2**63), lt=2**63)]], Field(max_length=MAX_BATCH_POINTS)
    ]
    # numbers only (NaN and the infinities as JSON's bare tokens): true is not 1.0, nor
    # "1.5" a number; strict costs no more than lax on a long series
    values: Annotated[list[Annotated[float, Strict()]], Field(max_length=MAX_BATCH_POINTS)]
    timestamps: Annotated[  # seconds since the epoch, as a run's start and end time
        list[Annotated[float, Field(ge=0, lt=2**37, allow_inf_nan=False)]],
        Field(max_length=MAX_BATCH_POINTS),
    ]

    @model_validator(mode="after")
    def _same_lengths(self) -> MetricSeries:
        if not len(self.steps) == len(self.values) == len(self.timestamps):
            raise ValueError("steps, values and timestamps must have the same length")
        return self


class LogBatch(BaseModel):
    """All-or-nothing; a batch whose ``batch_id`` was applied before is applied once.

    A batch over the limits its fields state is refused (422) and must be split; the
    SDK splits them itself.
    """

    batch_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    metrics: list[MetricSeries] = Field(
        [],
        max_length=MAX_BATCH_SERIES,
        description=f"at most {MAX_BATCH_SERIES:,} series of at most {MAX_BATCH_POINTS:,} "
        "points in all",
    )
    params: Params = {}
    tags: Tags = {}

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_batch_size(data, "a batch holds", "split it")
        return data


def _moment(description: str) -> Any:
    """An optional time in seconds since the epoch, as a run's start and end are."""
    return Field(None, ge=0, lt=2**37, allow_inf_nan=False, description=description)


class RunUpdate(BaseModel):
    status: Literal["finished", "failed", "killed"]
    end_time: float | None = _moment(
        "when the run ended, in seconds since the epoch: for an import; now when left out"
    )
    batch: LogBatch | None = Field(
        None,
        description="a last batch to apply with the end, in the same transaction (applied "
        "once by its id, as on /batches): a run's end carries its last points",
    )


class RunCreate(BaseModel):
    id: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="chosen by the client (32 lowercase hex) so that a retried create "
        "returns the run it made instead of making another",
    )
    project: ProjectName
    name: str | None = Field(None, max_length=250)
    params: Params = {}
    tags: Tags = {}
    parent_id: str | None = Field(None, max_length=32, description=PARENT)
    start_time: float | None = _moment(
        "when the run began, in seconds since the epoch: for runs brought in "
        "from elsewhere (an import), or started before the SDK sent the create; now when "
        "left out"
    )
    batch: LogBatch | None = Field(
        None,
        description="a first batch to apply with the create, in the same transaction (once "
        "by its id, as on /batches): the SDK holds a new run's create back until its first "
        "batch is due or the run ends, so a short run is one request",
    )
    status: RunStatus = Field(
        "running",
        description="finished, failed or killed: the run is created ended, its whole life "
        "in one request (a short run, an import); the end is audited as runs.end",
    )
    end_time: float | None = _moment("with an ended status, when the run ended; now when left out")

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_batch_size(data, "a run is created with", "log the rest with log_batch")
        return data

    @model_validator(mode="after")
    def _ended(self) -> RunCreate:
        if self.end_time is not None and self.status == "running":
            raise ValueError("end_time is for a run created ended: finished, failed or killed")
        return self


class LogResult(BaseModel):
    applied: bool = Field(description="false when this batch id was applied before")


class SearchQuery(BaseModel):
    project: ProjectName
    filter: str = Field("", max_length=4000)
    order_by: str = Field("", max_length=1000)
    limit: int = Field(100, ge=1, le=10_000)
    page_token: str | None = None
    lifecycle: Literal["active", "deleted", "all"] = Field(
        "active", description="the runs searched: not deleted (the default), deleted, or all"
    )


class RunPage(BaseModel):
    """One page of runs, which is also a sequence of them (``for run in page``,
    ``len(page)``, ``page[0]``, ``page[:3]``), as MLflow's ``PagedList`` is."""

    runs: list[Run]
    next_page_token: str | None = None

    def __iter__(self) -> Iterator[Run]:  # type: ignore[override]
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    @overload
    def __getitem__(self, index: SupportsIndex) -> Run: ...
    @overload
    def __getitem__(self, index: slice) -> list[Run]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> Run | list[Run]:
        return self.runs[index]

    @property
    def token(self) -> str | None:
        """``next_page_token`` by the name MLflow's ``PagedList`` gives it."""
        return self.next_page_token


class MetricHistory(BaseModel):
    """A metric's points by step, then time, as three columns of one length (the JSON
    form; ``Accept: application/vnd.plinth.metric-history`` gets the same as binary
    arrays, see ``tracking/history.py``)."""

    run_id: str
    key: str
    steps: list[int]
    timestamps: list[float]
    values: list[float | Literal["NaN", "Infinity", "-Infinity"]] = Field(
        description="non-finite values as the strings NaN, Infinity and -Infinity"
    )


class Artifact(BaseModel):
    path: str
    digest: str = Field(description="sha256 of the content (the plaintext, if encrypted)")
    size: int
    created_at: float
    encrypted: bool = Field(False, description="stored encrypted at rest")


class ArtifactRegister(BaseModel):
    """Record content the store already holds under a new name (no upload)."""

    path: ArtifactPath
    digest: str = Field(pattern=DIGEST)
    size: int = Field(ge=0)
