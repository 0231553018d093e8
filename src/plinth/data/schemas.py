"""Wire types of datasets, shared by the server, the SDK and the CLI."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from plinth.errors import Unprocessable
from plinth.tracking.schemas import DIGEST, RUN_ID, check_artifact_path

MAX_FILES = 100_000  # per version
MAX_COLUMNS = 10_000  # per table
MAX_ARCHIVE_FILES = 10_000  # per batch download
MAX_BINS = 100
SAMPLE_ROWS = 5  # offending rows a failing rule reports
MAX_PROFILED_COLUMNS = 1_000
FORMATS = ("parquet", "csv", "jsonl")
Digest = Annotated[str, Field(pattern=DIGEST)]
FilePath = Annotated[str, AfterValidator(check_artifact_path)]
MAX_ROWS = 2**46  # 100,000 files' sum stays a database integer
Count = Annotated[int, Field(ge=0, le=MAX_ROWS)]
# A profile comes from the pusher's machine: its figures are checked, so that what a
# page or the CLI computes from them (shares, bars) is always a number.
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=1000)
    type: str = Field(max_length=1000)  # Arrow's name for it: int64, string, timestamp[us]…
    nullable: StrictBool = True


class Table(BaseModel):
    """What a tabular file holds: its format, row count and schema (Arrow types)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["parquet", "csv", "jsonl"]
    rows: Count
    columns: list[Column] = Field(max_length=MAX_COLUMNS)


class Histogram(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edges: list[Finite] = Field(max_length=MAX_BINS + 1)
    # estimated from the sample
    counts: list[Annotated[float, Field(ge=0, le=MAX_ROWS, allow_inf_nan=False)]] = Field(
        max_length=MAX_BINS
    )

    @model_validator(mode="after")
    def _bins(self) -> Histogram:
        if (self.edges or self.counts) and len(self.edges) != len(self.counts) + 1:
            raise ValueError(f"{len(self.counts)} bins need {len(self.counts) + 1} edges")
        if any(b < a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("the edges must not decrease")
        return self


class TopValue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(max_length=1000)
    count: int = Field(ge=1, le=MAX_ROWS)


class ColumnProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=1000)
    type: str = Field(max_length=1000)
    kind: Literal["numeric", "categorical", "temporal", "other"]
    count: Count  # values that are not null
    nulls: Count
    min: Finite | Annotated[str, Field(max_length=1000)] | None = None
    max: Finite | Annotated[str, Field(max_length=1000)] | None = None
    mean: Finite | None = None
    std: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    quantiles: dict[Annotated[str, Field(pattern=r"^p[0-9]{1,3}$")], Finite] = Field(
        default_factory=dict, max_length=20
    )
    histogram: Histogram | None = None
    distinct: Count | None = None  # categories: how many (exact), unless over the tracked
    distinct_over: Count | None = None  # categories: more distinct values than this
    top: list[TopValue] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _consistent(self) -> ColumnProfile:
        if sum(t.count for t in self.top) > self.count:
            raise ValueError(f"its top values count more than its {self.count} values")
        if self.distinct is not None and len(self.top) > self.distinct:
            raise ValueError(f"{len(self.top)} top values of {self.distinct} distinct ones")
        low, high = self.min, self.max
        if isinstance(low, float) and isinstance(high, float) and low > high:
            raise ValueError(f"min {low} is above max {high}")
        return self


class Profile(BaseModel):
    """What a tabular file's data looked like (see ``plinth.data.profile``)."""

    model_config = ConfigDict(extra="forbid")
    rows: Count
    sampled: Count  # rows behind the quantiles and histograms
    columns: list[ColumnProfile] = Field(max_length=MAX_PROFILED_COLUMNS)
    columns_left_out: Count = 0

    @model_validator(mode="after")
    def _within_rows(self) -> Profile:
        if self.sampled > self.rows:
            raise ValueError(f"{self.sampled} rows sampled of {self.rows}")
        for i, c in enumerate(self.columns):
            if c.count + c.nulls != self.rows:
                raise ValueError(
                    f"column {i} ({c.name[:100]!r}): {c.count} values and {c.nulls} nulls "
                    f"in {self.rows} rows"
                )
        return self


def _profile_refused(exc: ValidationError) -> Unprocessable:
    """A pushed profile that does not hold (a NaN, a negative count, more values than
    rows): 422, naming the file and the figure."""
    first = exc.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:
        return Unprocessable(f"the profiles are refused: {message}")
    path, *at = first["loc"]
    where = ".".join(str(p) for p in at)
    return Unprocessable(
        f"the profile of {path!r} is refused: {where + ': ' if where else ''}{message}"
    )


class DatasetFile(BaseModel):
    """One file of a version: its path inside the dataset, its content, and for a
    tabular file its table."""

    model_config = ConfigDict(extra="forbid")
    path: FilePath
    digest: Digest
    size: int = Field(ge=0)
    table: Table | None = None


Severity = Literal["block", "warn"]
RuleName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
TYPE_FAMILIES = ("integer", "floating", "numeric", "string", "boolean", "temporal")


class _Rule(BaseModel):
    """What every rule has: a name (a default is made from what it checks), whether a
    failure stops the version (``block``) or is recorded (``warn``), and which files it
    reads (a glob of paths; every tabular file by default)."""

    model_config = ConfigDict(extra="forbid")
    name: RuleName | None = None
    severity: Severity = "block"
    files: str = Field("*", max_length=1000)


class _ColumnRule(_Rule):
    column: str = Field(max_length=1000)


class TypeRule(_ColumnRule):
    check: Literal["type"]
    type: str = Field(max_length=200, description=f"an Arrow type, or one of {TYPE_FAMILIES}")


class RangeRule(_ColumnRule):
    check: Literal["range"]
    min: Finite | None = None
    max: Finite | None = None


def _scalar(value: Any) -> Any:
    if isinstance(value, dict | list | tuple | set):
        raise ValueError(
            f"an allowed value is text, a number or true/false, not {type(value).__name__} "
            f"{str(value)[:100]}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"an allowed number is finite, not {value}")
    return value


AllowedValue = Annotated[
    Annotated[str, Field(max_length=1000)]
    | Annotated[int, Field(ge=-(2**63), lt=2**64)]
    | Finite
    | bool,
    BeforeValidator(_scalar),
]
_KINDS = {"text": "text", "a number": "numbers", "true/false": "true/false"}


def value_kind(value: Any) -> str:
    """What a column must hold for an allowed value to be compared with its values."""
    if isinstance(value, bool):
        return "true/false"
    return "text" if isinstance(value, str) else "a number"


class AllowedRule(_ColumnRule):
    """The values a column may hold: all text (a text column's), all numbers (a
    numeric column's) or all true/false (a boolean column's)."""

    check: Literal["allowed"]
    values: list[AllowedValue] = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _one_kind(self) -> AllowedRule:
        kinds = sorted({_KINDS[value_kind(v)] for v in self.values})
        if len(kinds) > 1:
            raise ValueError(
                f"the allowed values mix {' and '.join(kinds)}; a column holds one kind "
                "(quote numbers meant as text: '1')"
            )
        return self


class UniqueRule(_ColumnRule):
    check: Literal["unique"]


class NullsRule(_ColumnRule):
    check: Literal["nulls"]
    max_fraction: float = Field(ge=0, le=1)


class RowsRule(_Rule):
    check: Literal["rows"]
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)


Rule = Annotated[
    TypeRule | RangeRule | AllowedRule | UniqueRule | NullsRule | RowsRule,
    Field(discriminator="check"),
]


class RuleSet(BaseModel):
    """A dataset's validation rules, checked on every push where the data is read."""

    model_config = ConfigDict(extra="forbid")
    rules: list[Rule] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _names_unique(self) -> RuleSet:
        names = [rule_name(r) for r in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two rules are named {twice[0]!r}; name them apart")
        return self


def rule_name(rule: Any) -> str:
    if rule.name:
        return str(rule.name)
    column = getattr(rule, "column", None)
    return f"{column}-{rule.check}" if column else str(rule.check)


class Rules(BaseModel):
    """A dataset's rules as stored, with the digest a push's report must name."""

    rules: list[Rule]
    digest: str  # sha256 of the rules' canonical JSON ("" when none)
    updated_at: float | None = None
    updated_by: str | None = None


class RuleResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rule: str = Field(max_length=200)
    file: str = Field(max_length=1000)
    severity: Severity
    passed: StrictBool
    failing: int = Field(0, ge=0)  # rows (or 1 for a file-wide rule)
    message: str = Field("", max_length=2000)
    samples: list[dict[str, Any]] = Field(default_factory=list, max_length=SAMPLE_ROWS)


class ValidationReport(BaseModel):
    """What a push found: each rule's result on each file it read."""

    model_config = ConfigDict(extra="forbid")
    rules_digest: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    results: list[RuleResult] = Field(default_factory=list, max_length=100_000)

    @property
    def blocking(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed and r.severity == "block"]

    @property
    def warnings(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed and r.severity == "warn"]


class VersionCreate(BaseModel):
    """The manifest of a new version. Every file's content must be in the project
    already (``ContentQuery`` says which to upload first)."""

    model_config = ConfigDict(extra="forbid")
    files: list[DatasetFile] = Field(min_length=1, max_length=MAX_FILES)
    message: str = Field("", max_length=5000)
    profiles: dict[FilePath, Profile] = Field(default_factory=dict, max_length=MAX_FILES)
    validation: ValidationReport | None = None

    @field_validator("profiles", mode="wrap")
    @classmethod
    def _profiles_hold(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            raise _profile_refused(exc) from None

    @model_validator(mode="after")
    def _paths_unique(self) -> VersionCreate:
        seen: set[str] = set()
        folders: set[str] = set()
        for f in self.files:
            if f.path in seen:
                raise ValueError(f"the path {f.path!r} is listed twice")
            seen.add(f.path)
            parts = f.path.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        clash = sorted(seen & folders)
        if clash:
            raise ValueError(f"{clash[0]!r} is both a file and a folder")
        stray = sorted(set(self.profiles) - seen)
        if stray:
            raise ValueError(f"a profile of {stray[0]!r}, which is not a file of the version")
        return self


class ContentQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    digests: list[Digest] = Field(max_length=MAX_FILES)


class ContentMissing(BaseModel):
    """The digests the project does not hold: upload those before creating a version."""

    missing: list[str]


class Content(BaseModel):
    digest: str
    size: int


class ContentBatch(BaseModel):
    """What a batch upload stored, in the order it came."""

    stored: list[Content]


class ArchiveRequest(BaseModel):
    """Files of a version to fetch in one tar stream (members named by path)."""

    model_config = ConfigDict(extra="forbid")
    paths: list[FilePath] = Field(min_length=1, max_length=MAX_ARCHIVE_FILES)

    @model_validator(mode="after")
    def _once_each(self) -> ArchiveRequest:
        """A path named twice would send its file twice: 10,000 copies of one file."""
        if len(set(self.paths)) != len(self.paths):
            again = next(p for i, p in enumerate(self.paths) if p in self.paths[:i])
            raise ValueError(f"each file once: {again!r} is named more than once")
        return self


class DatasetUse(BaseModel):
    """A run that read a dataset version (lineage: dataset version → run)."""

    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(pattern=RUN_ID, max_length=32)


class Dataset(BaseModel):
    project: str
    name: str
    description: str
    created_at: float
    updated_at: float
    latest_version: int | None
    versions: int


class DatasetVersion(BaseModel):
    project: str
    name: str
    version: int
    ref: str  # NAME@VERSION
    digest: str  # sha256 over the manifest of its files
    message: str
    files: int
    size: int  # bytes, all files
    rows: int | None  # all tabular files' rows; None without any
    created_at: float
    created_by: str
    created: bool = True  # False: the same files as the newest version, nothing new made
    validation: ValidationReport | None = None


class ColumnChange(BaseModel):
    name: str
    change: Literal["added", "removed", "changed"]
    old: str | None = None  # type, with "not null" when the column is not nullable
    new: str | None = None


class FileChange(BaseModel):
    path: str
    change: Literal["added", "removed", "changed"]
    old: DatasetFile | None = None
    new: DatasetFile | None = None
    columns: list[ColumnChange] = Field(default_factory=list)


class DatasetDiff(BaseModel):
    project: str
    name: str
    old: int
    new: int
    added: int
    removed: int
    changed: int
    unchanged: int
    rows: tuple[int | None, int | None]
    changes: list[FileChange]
