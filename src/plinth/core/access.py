"""Who is asking, and what they may do.

Every service call acts for a ``Principal``. Until the first admin exists, every request
is the home's ``LOCAL`` user, who may do anything (the server binds loopback only). From
then on a request carries a token, and the principal is its user.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING

from plinth.errors import PermissionDenied, PlinthError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class Permission(StrEnum):
    """What a route needs; every route declares one (a test walks them all)."""

    PUBLIC = "public"  # anyone, even without credentials: /healthz
    AUTHENTICATED = "authenticated"  # any signed-in user: their own tokens
    PROJECT_READ = "project:read"  # a project's runs, metrics and artifacts
    PROJECT_WRITE = "project:write"  # create and change them
    PROJECT_ADMIN = "project:admin"  # a project's members
    PLATFORM_READ = "platform:read"  # the audit trail, Prometheus metrics
    PLATFORM_ADMIN = "platform:admin"  # users, the first admin


@dataclass(frozen=True)
class Principal:
    name: str
    user_id: str | None = None
    token_id: str | None = None
    is_admin: bool = False
    source: str = ""  # the client's address, for the audit trail
    # A project-scoped token: only this project (id, and name for messages), with at
    # most this role.
    scope_project_id: str | None = None
    scope_project: str | None = None
    scope_role: Role | None = None
    session_id: str | None = None  # the web session a request came with, if any

    def from_address(self, source: str) -> Principal:
        return replace(self, source=source)


LOCAL = Principal(name="local", is_admin=True)
ANONYMOUS = Principal(name="anonymous")
_ADMIN_ONLY = {Permission.PLATFORM_READ, Permission.PLATFORM_ADMIN}
_PROJECT_WORK = {Permission.PROJECT_READ, Permission.PROJECT_WRITE, Permission.PROJECT_ADMIN}


def allows(principal: Principal, permission: Permission) -> bool:
    """Whether the principal holds the permission on the platform. Roles per project
    (viewer, editor, admin) narrow project permissions further once memberships exist."""
    if permission is Permission.PUBLIC:
        return True
    if principal.is_admin and principal.scope_project_id is None:
        return True
    if principal is ANONYMOUS or principal.user_id is None:
        return False
    if principal.scope_project_id is not None:  # a scoped token does project work only
        return permission in _PROJECT_WORK
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


def authorize(
    conn: Connection,
    principal: Principal,
    project_id: str,
    need: Need,
    hidden: PlinthError,
    role_of: Callable[[Connection, Principal, str], Role | None],
) -> None:
    """Allow, or raise: ``hidden`` (the caller's NotFound, worded as for an object that
    does not exist, so a project one has no role in is no existence oracle) or
    PermissionDenied for a role too small."""
    if principal.scope_project_id not in (None, project_id):
        raise hidden  # a project-scoped token sees nothing else
    if principal.is_admin:
        role = principal.scope_role or Role.ADMIN
    else:
        found = role_of(conn, principal, project_id)
        if found is None:
            raise hidden
        role = found
        if principal.scope_role is not None and _RANK[principal.scope_role] < _RANK[role]:
            role = principal.scope_role
    if _RANK[role] < need:
        who = (
            scope_limit(principal)
            if role is principal.scope_role
            else f"{principal.name} is {article(role.value)} {role.value} of this project"
        )
        raise PermissionDenied(
            f"{who}, and {article(role.value)} {role.value} cannot {_VERB[need]}"
        )


_VERB = {Need.READ: "read", Need.WRITE: "write", Need.ADMIN: "administer it"}


def scope_limit(principal: Principal) -> str:
    """How a refusal names a project-scoped token's limits."""
    role = principal.scope_role.value if principal.scope_role else "its role"
    return f"this token is limited to {role} in project {principal.scope_project!r}"


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


@dataclass(frozen=True)
class Credentials:
    """What a request presents: a bearer token, or a web session's cookie and the
    CSRF token an unsafe request must echo."""

    authorization: str | None
    session_cookie: str | None
    csrf_token: str | None
    method: str
    source: str  # the client's address


class Authenticator(ABC):
    """Turns credentials into a principal; the identity service is the one the app
    uses. The HTTP layer asks for it by this type, and so knows no capability."""

    @abstractmethod
    def authenticate(self, credentials: Credentials) -> Principal:
        """The principal, or Unauthenticated (recorded in the audit trail)."""

    def known(self, credentials: Credentials) -> Principal | None:
        """The principal when it is known without I/O (say, auth is off), else None:
        the caller then runs ``authenticate``, which may read the database, off its
        event loop."""
        return None

    @abstractmethod
    def auth_enabled(self) -> bool:
        """Whether requests need credentials (false only before the first admin)."""
