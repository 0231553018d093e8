"""Wire types of governance."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr, StrictBool, field_validator

from plinth.core.access import Role
from plinth.core.names import PROJECT_NAME, reserved_env, reserved_env_refusal

USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
TOKEN_ID = r"^[0-9a-f]{8,16}$"  # an id, or a unique prefix of one


class Project(BaseModel):
    id: str
    name: str
    created_at: float


class ProjectCreate(BaseModel):
    name: str = Field(pattern=PROJECT_NAME, description="global: one project per name")


class AuditEvent(BaseModel):
    id: int
    at: float
    actor: str
    token_id: str | None
    source: str
    project: str | None
    action: str = Field(description="e.g. runs.create, runs.log, artifacts.put")
    object: str | None
    outcome: str = Field(description="ok, or refused (with the error in details)")
    details: dict[str, Any]
    hash: str


class AuditQuery(BaseModel):
    project: str | None = Field(None, max_length=200)
    actor: str | None = Field(None, max_length=200)
    action: str | None = Field(None, max_length=100)
    since: float | None = Field(None, description="seconds since the epoch")
    until: float | None = None
    after_id: int = Field(0, ge=0, lt=2**63, description="continue after this event id")
    limit: int = Field(1000, ge=1, le=10_000)


class AuditPage(BaseModel):
    events: list[AuditEvent]
    next_after_id: int | None = Field(None, description="pass as after_id for more")


class AuditVerdict(BaseModel):
    ok: bool
    checked: int = Field(description="events verified before the verdict")
    head: str = Field(description="hash of the last good event: keep it elsewhere too")
    broken_at: int | None = Field(None, description="id of the first event that fails")
    reason: str = ""


class User(BaseModel):
    id: str
    name: str
    is_admin: bool
    created_at: float
    has_password: bool = Field(False, description="whether a password for the web UI is set")


class UserCreate(BaseModel):
    name: str = Field(pattern=USER_NAME)
    is_admin: StrictBool = False


class TokenCreate(BaseModel):
    name: str = Field("token", min_length=1, max_length=100)
    expires_in_days: float | None = Field(None, gt=0, le=3650)
    project: str | None = Field(
        None, pattern=PROJECT_NAME, max_length=200, description="scope to one project"
    )
    role: Role | None = Field(None, description="with at most this role (needs project)")


class Token(BaseModel):
    id: str
    name: str
    user: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    project: str | None = None
    role: Role | None = None


class NewToken(BaseModel):
    """The only time a token's secret is ever shown."""

    token: str = Field(description="send as 'Authorization: Bearer <token>'; kept nowhere")
    info: Token


class NewUser(BaseModel):
    user: User
    token: NewToken


class Member(BaseModel):
    user: str
    role: Role


class MemberAdd(BaseModel):
    user: str = Field(pattern=USER_NAME)
    role: Role


class PasswordSet(BaseModel):
    password: str = Field(min_length=1, max_length=1000)
    current_password: str | None = Field(
        None, max_length=1000, description="needed to change one's own password, once one is set"
    )


class SecretSet(BaseModel):
    name: str = Field(pattern=SECRET_NAME, description="e.g. AWS_KEY")
    value: SecretStr = Field(description="stored sealed; never returned")

    @field_validator("name")
    @classmethod
    def _usable(cls, name: str) -> str:
        """A job gets a secret under its own name: one it could never be given is refused."""
        if reserved_env(name):
            raise ValueError(reserved_env_refusal(name))
        return name


class SecretInfo(BaseModel):
    name: str
    updated_at: float


LINEAGE_URI = r"^(datasets|runs|models|deployments|predictions):/[^\s]{1,590}$"


class LineageNode(BaseModel):
    uri: str
    kind: str  # datasets | runs | models | deployments
    project: str


class LineageEdge(BaseModel):
    src: str
    dst: str
    relation: str  # read | produced | …


class LineageGraph(BaseModel):
    """The graph around ``root``: its nodes and edges, upstream and downstream."""

    root: str
    nodes: list[LineageNode]
    edges: list[LineageEdge]
