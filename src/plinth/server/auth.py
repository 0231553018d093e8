"""Who a request comes from.

Every route declares the permission it needs with ``requires`` (a test fails on a route
that does not). Today every request is the home's single local user, who holds every
permission: the server binds loopback only (``plinth server`` refuses other addresses).
Tokens, sessions and roles replace the body of ``Requires`` when identities land;
routes and services already pass its principal on.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from starlette.requests import Request

from plinth.core.access import LOCAL, Permission, Principal, allows
from plinth.errors import PermissionDenied


class Requires:
    """The dependency through which a route declares, and enforces, its permission."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Principal:
        principal = LOCAL.from_address(request.client.host if request.client else "")
        if not allows(principal, self.permission):
            raise PermissionDenied(f"{principal.name} may not {self.permission.value}")
        request.state.principal = principal
        return principal


def requires(permission: Permission) -> Any:
    """``dependencies=[requires(Permission.PROJECT_READ)]`` on a route."""
    return Depends(Requires(permission))
