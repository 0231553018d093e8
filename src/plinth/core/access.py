"""Who is asking, and what they may do.

Every service call acts for a ``Principal``. Until the first admin exists, every request
is the home's ``LOCAL`` user, who may do anything (the server binds loopback only). From
then on a request carries a token, and the principal is its user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


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

    def from_address(self, source: str) -> Principal:
        return replace(self, source=source)


LOCAL = Principal(name="local", is_admin=True)
ANONYMOUS = Principal(name="anonymous")
_ADMIN_ONLY = {Permission.PLATFORM_READ, Permission.PLATFORM_ADMIN}


def allows(principal: Principal, permission: Permission) -> bool:
    """Whether the principal holds the permission on the platform. Roles per project
    (viewer, editor, admin) narrow project permissions further once memberships exist."""
    if permission is Permission.PUBLIC or principal.is_admin:
        return True
    if principal is ANONYMOUS or principal.user_id is None:
        return False
    return permission not in _ADMIN_ONLY
