"""Who is asking: the principal every service call acts for.

Until identities exist (governance), every request is the one ``LOCAL`` user of an
embedded home or of a server bound to loopback; services already take the principal
so that authorization and audit have a single place to land.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Permission(StrEnum):
    """What a route needs; every route declares one (a test walks them all)."""

    PUBLIC = "public"  # anyone, even without credentials: /healthz
    PROJECT_READ = "project:read"  # a project's runs, metrics and artifacts
    PROJECT_WRITE = "project:write"  # create and change them
    PLATFORM_READ = "platform:read"  # the audit trail, Prometheus metrics


@dataclass(frozen=True)
class Principal:
    name: str
    token_id: str | None = None
    source: str = ""  # the client's address, for the audit trail

    def from_address(self, source: str) -> Principal:
        return replace(self, source=source)


LOCAL = Principal(name="local")


def allows(principal: Principal, permission: Permission) -> bool:
    """Whether the principal holds the permission. The local user holds them all; roles
    per project decide for everyone else once identities exist."""
    return principal.name == LOCAL.name or permission is Permission.PUBLIC
