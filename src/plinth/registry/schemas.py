"""Wire types of the registry, shared by the server, the SDK and the CLI."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from plinth.registry.uri import ALIAS
from plinth.tracking.schemas import RUN_ID, check_artifact_path, check_key

META_FILE = "MLmodel.json"  # written by every flavor beside its own files
MAX_META_BYTES = 1 << 20
CARD_FIELDS = ("intended_use", "limitations", "ethical_considerations", "training_data")
Flavor = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
TagKey = Annotated[str, AfterValidator(check_key)]
TagValue = Annotated[str, Field(max_length=5000)]


class ModelVersionRegister(BaseModel):
    """Register the files a run logged under ``artifact_path`` (with their MLmodel.json)
    as the next version of a model; the model is created by its first version."""

    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(pattern=RUN_ID, max_length=32)
    artifact_path: Annotated[str, AfterValidator(check_artifact_path)] = "model"
    description: str = Field("", max_length=5000)
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=100)


class ModelMetaFile(BaseModel):
    """What the registry reads of MLmodel.json: JSON, never code. The flavor's own
    options are kept for the loader, unread."""

    flavor: Flavor
    signature: dict[str, Any] | None = None
    unsafe_pickle: bool = False
    files: list[str] = Field(default_factory=list, max_length=10_000)


class ModelFile(BaseModel):
    path: str
    digest: str
    size: int


class CardFields(BaseModel):
    """The hand-written part of a model card."""

    model_config = ConfigDict(extra="forbid")
    intended_use: str | None = Field(None, max_length=20_000)
    limitations: str | None = Field(None, max_length=20_000)
    ethical_considerations: str | None = Field(None, max_length=20_000)
    training_data: str | None = Field(None, max_length=20_000)


class ModelVersion(BaseModel):
    project: str
    name: str
    version: int
    uri: str  # models:/PROJECT/NAME/VERSION
    digest: str  # sha256 over the manifest of its files
    run_id: str | None
    artifact_path: str
    flavor: str
    signature: dict[str, Any] | None
    needs_pickle: bool  # loading it runs pickle: served only once an admin marks it
    unsafe_pickle: bool  # marked by a project admin: may load in a serving worker
    status: Literal["ready", "archived"]
    description: str
    card: CardFields
    created_at: float
    created_by: str
    aliases: list[str]
    tags: dict[str, str]


class ModelVersionUpdate(BaseModel):
    """What may change on a version: never its files. ``unsafe_pickle`` takes a
    project admin."""

    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=5000)
    status: Literal["ready", "archived"] | None = None
    unsafe_pickle: StrictBool | None = None
    card: CardFields | None = None


class RegisteredModel(BaseModel):
    project: str
    name: str
    description: str
    created_at: float
    updated_at: float
    latest_version: int | None
    versions: int
    aliases: dict[str, int]


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, lt=2**31)
    reason: str = Field("", max_length=2000)


class AliasEvent(BaseModel):
    alias: str = Field(pattern=ALIAS)
    version: int | None  # None: removed
    previous: int | None  # None: new
    actor: str
    at: float
    reason: str


class TagSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: TagValue
