"""Every route declares the permission it needs, through one dependency.

``Requires(permission)`` authenticates the request (through the app's
``Authenticator``), checks the principal holds the permission on the platform, and
records a refusal in the audit trail. Roles per project are checked further by the
services, which know the project. A test walks every route and fails on one that
declares no permission, or more than one.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Depends
from fastapi.dependencies.models import Dependant
from starlette.requests import HTTPConnection

from plinth.api.context import Caller, services_of
from plinth.core.access import (
    ANONYMOUS,
    Authenticator,
    Credentials,
    Permission,
    Principal,
    allows,
    scope_limit,
)
from plinth.errors import PermissionDenied

S = TypeVar("S")
SESSION_COOKIE = "plinth_session"
CSRF_HEADER = "x-csrf-token"


class Requires:
    """The dependency through which a route declares, and enforces, its permission."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, connection: HTTPConnection) -> Principal:
        source = connection.client.host if connection.client else ""
        if self.permission is Permission.PUBLIC:
            return ANONYMOUS.from_address(source)
        services = services_of(connection)
        credentials = Credentials(
            authorization=connection.headers.get("authorization"),
            session_cookie=connection.cookies.get(SESSION_COOKIE),
            csrf_token=connection.headers.get(CSRF_HEADER),
            method=connection.scope.get("method", "GET"),
            source=source,
        )
        authenticator = services.get(Authenticator)  # type: ignore[type-abstract]
        principal = authenticator.known(credentials)
        if principal is None:  # a token or a session to look up: off the event loop
            principal = await services.blocking.run(authenticator.authenticate, credentials)
        if not allows(principal, self.permission):
            denied = PermissionDenied(_refusal(principal, self.permission))
            action = f"{credentials.method} {connection.url.path}"
            await services.blocking.run(services.platform.audit.refusal, principal, action, denied)
            raise denied
        connection.state.principal = principal
        return principal


_OUT_OF_SCOPE = {
    Permission.AUTHENTICATED: "it cannot manage tokens, passwords or users",
    Permission.PLATFORM_READ: "it cannot read the platform's audit trail or metrics",
    Permission.PLATFORM_ADMIN: "it cannot manage users",
}


def _refusal(principal: Principal, permission: Permission) -> str:
    if principal.scope_project_id is not None:
        return f"{scope_limit(principal)}: {_OUT_OF_SCOPE[permission]}"
    if permission in (Permission.PLATFORM_READ, Permission.PLATFORM_ADMIN):
        return f"{principal.name} is not a platform admin"
    return f"{principal.name} may not {permission.value}"


def declared_permissions(dependant: Dependant) -> list[Permission]:
    """Every permission a route's dependencies declare through ``Requires`` (a test
    checks that each route declares exactly one)."""
    found = [d.call.permission for d in dependant.dependencies if isinstance(d.call, Requires)]
    for sub in dependant.dependencies:
        found += declared_permissions(sub)
    return found


def requires(permission: Permission) -> Any:
    """``dependencies=[requires(Permission.PROJECT_READ)]`` on a route."""
    return Depends(Requires(permission))


def caller(service: type[S], permission: Permission) -> Any:
    """``Annotated[Caller[X], caller(X, Permission.PROJECT_READ)]`` on a route: it
    declares (and enforces) the permission, then builds the route's ``Caller``."""

    async def dependency(
        connection: HTTPConnection, principal: Principal = Depends(Requires(permission))
    ) -> Caller[S]:
        services = services_of(connection)
        return Caller(services.get(service), principal, services.blocking)

    dependency.plinth_caller = (service, permission)  # type: ignore[attr-defined]  # api/lean.py
    return Depends(dependency)
