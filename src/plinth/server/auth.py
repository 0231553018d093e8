"""Who a request comes from, and whether the route lets them in.

Every route declares the permission it needs with ``requires`` (a test fails on a route
that does not). Until the first admin exists every request is the home's local user,
who holds every permission (the server binds loopback only); from then on a request
needs a token, except for the public routes. Denials are in the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Depends
from starlette.requests import Request

from plinth.core import audit
from plinth.core.access import ANONYMOUS, Permission, Principal, allows
from plinth.errors import PermissionDenied, PlinthError
from plinth.governance.sessions import SESSION_COOKIE

T = TypeVar("T")


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
        authorization = request.headers.get("authorization")
        cookie = request.cookies.get(SESSION_COOKIE)
        if authorization is None and cookie and await blocking.run(identity.auth_enabled):
            principal = await blocking.run(_from_session, request, cookie, source)
        else:
            principal = await blocking.run(identity.authenticate, authorization, source)
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


_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _from_session(request: Request, cookie: str, source: str) -> Principal:
    """The session's user; an unsafe request must also echo the session's CSRF token."""
    sessions = request.app.state.sessions
    try:
        session = sessions.resolve(cookie, source)
        if request.method not in _SAFE_METHODS:
            sessions.check_csrf(session, request.headers.get("x-csrf-token"))
    except PlinthError as exc:
        audit.record_refusal(sessions.db, ANONYMOUS.from_address(source), "session", exc)
        raise
    principal: Principal = session.principal
    return principal


def requires(permission: Permission) -> Any:
    """``dependencies=[requires(Permission.PROJECT_READ)]`` on a route."""
    return Depends(Requires(permission))


def caller(context: Callable[[Request, Principal], T], permission: Permission) -> Any:
    """``Depends`` that builds a route's ``context(request, principal)`` once the request
    holds ``permission``: how a router hands its routes their services and caller."""

    async def dependency(
        request: Request, principal: Principal = Depends(Requires(permission))
    ) -> T:
        return context(request, principal)

    return Depends(dependency)
