"""Who is asking, and what they may do.

Every service call acts for a ``Principal``. Until the first admin exists, every request
is the home's ``LOCAL`` user, who may do anything (the server binds loopback only). From
then on a request carries a token, and the principal is its user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum, StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core.db import metadata
from plinth.errors import PermissionDenied, PlinthError


class Permission(StrEnum):
    """What a route needs; every route declares one (a test walks them all)."""

    PUBLIC = "public"  # anyone, even without credentials: /healthz
    AUTHENTICATED = "authenticated"  # any signed-in user: their own tokens
    PROJECT_READ = "project:read"  # a project's runs, metrics and artifacts
    PROJECT_WRITE = "project:write"  # create and change them
    PLATFORM_READ = "platform:read"  # the audit trail, Prometheus metrics
    PLATFORM_ADMIN = "platform:admin"  # users, the first admin


@dataclass(frozen=True)
class Principal:
    name: str
    user_id: str | None = None
    token_id: str | None = None
    is_admin: bool = False
    source: str = ""  # the client's address, for the audit trail
    # A project-scoped token: only this project, with at most this role.
    scope_project_id: str | None = None
    scope_role: Role | None = None

    def from_address(self, source: str) -> Principal:
        return replace(self, source=source)


LOCAL = Principal(name="local", is_admin=True)
ANONYMOUS = Principal(name="anonymous")
_ADMIN_ONLY = {Permission.PLATFORM_READ, Permission.PLATFORM_ADMIN}


def allows(principal: Principal, permission: Permission) -> bool:
    """Whether the principal holds the permission on the platform. Roles per project
    (viewer, editor, admin) narrow project permissions further once memberships exist."""
    if permission is Permission.PUBLIC:
        return True
    if principal.is_admin and principal.scope_project_id is None:
        return True
    if principal is ANONYMOUS or principal.user_id is None:
        return False
    return permission not in _ADMIN_ONLY


class Role(StrEnum):
    """A user's role in one project; each includes the ones before it."""

    VIEWER = "viewer"  # read
    EDITOR = "editor"  # write runs, artifacts
    ADMIN = "admin"  # members


class Need(IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3


_RANK = {Role.VIEWER: Need.READ, Role.EDITOR: Need.WRITE, Role.ADMIN: Need.ADMIN}

# Roles per project. Project ids come from tracking's projects; core names no capability.
memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Index("ix_memberships_user", "user_id"),
)


def role_of(conn: Connection, principal: Principal, project_id: str) -> Role | None:
    if principal.user_id is None:
        return None
    role = conn.execute(
        sa.select(memberships.c.role).where(
            memberships.c.project_id == project_id, memberships.c.user_id == principal.user_id
        )
    ).scalar()
    return Role(role) if role else None


def authorize(
    conn: Connection, principal: Principal, project_id: str, need: Need, hidden: PlinthError
) -> None:
    """Allow, or raise: ``hidden`` (the caller's NotFound, worded as for an object that
    does not exist, so a project one has no role in is no existence oracle) or
    PermissionDenied for a role too small."""
    if principal.scope_project_id not in (None, project_id):
        raise hidden  # a project-scoped token sees nothing else
    if principal.is_admin:
        role = principal.scope_role or Role.ADMIN
    else:
        role = role_of(conn, principal, project_id)  # type: ignore[assignment]
        if role is None:
            raise hidden
        if principal.scope_role is not None and _RANK[principal.scope_role] < _RANK[role]:
            role = principal.scope_role
    if _RANK[role] < need:
        raise PermissionDenied(
            f"{principal.name} is a {role.value} of this project; that cannot {need.name.lower()}"
        )


def grant(conn: Connection, project_id: str, user_id: str, role: Role) -> None:
    conn.execute(
        memberships.delete().where(
            memberships.c.project_id == project_id, memberships.c.user_id == user_id
        )
    )
    conn.execute(
        memberships.insert().values(project_id=project_id, user_id=user_id, role=role.value)
    )


def visible_projects(principal: Principal) -> Any:
    """A WHERE clause on project ids the principal may read, or None for all."""
    if principal.scope_project_id is not None:
        return [principal.scope_project_id]
    if principal.is_admin:
        return None
    return sa.select(memberships.c.project_id).where(
        memberships.c.user_id == (principal.user_id or "")
    )
