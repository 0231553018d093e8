"""Who a request comes from, and whether the route lets them in.

Every route declares the permission it needs with ``requires`` (a test fails on a route
that does not). Until the first admin exists every request is the home's local user,
who holds every permission (the server binds loopback only); from then on a request
needs a token, except for the public routes. Denials are in the audit trail.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from starlette.requests import Request

from plinth.core import audit
from plinth.core.access import ANONYMOUS, Permission, Principal, allows
from plinth.errors import PermissionDenied


class Requires:
    """The dependency through which a route declares, and enforces, its permission."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Principal:
        source = request.client.host if request.client else ""
        if self.permission is Permission.PUBLIC:
            return ANONYMOUS.from_address(source)
        identity = request.app.state.identity
        blocking = request.app.state.blocking
        principal: Principal = await blocking.run(
            identity.authenticate, request.headers.get("authorization"), source
        )
        if not allows(principal, self.permission):
            denied = PermissionDenied(f"{principal.name} may not {self.permission.value}")
            await blocking.run(
                audit.record_refusal,
                identity.db,
                principal,
                f"{request.method} {request.url.path}",
                denied,
            )
            raise denied
        request.state.principal = principal
        return principal


def requires(permission: Permission) -> Any:
    """``dependencies=[requires(Permission.PROJECT_READ)]`` on a route."""
    return Depends(Requires(permission))
