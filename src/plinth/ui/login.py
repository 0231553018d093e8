"""Logging in and out of the web UI (public routes: they are how one gets a session)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from plinth.api.auth import CSRF_HEADER, SESSION_COOKIE, requires
from plinth.api.context import services_of
from plinth.core.access import Permission
from plinth.errors import PlinthError
from plinth.governance.sessions import SESSION_SECONDS, SessionService
from plinth.ui.routes import render

router = APIRouter(include_in_schema=False, dependencies=[requires(Permission.PUBLIC)])


def _safe_next(target: str) -> str:
    """Only paths on this site: never ``//evil.example`` or ``https://…``."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(next: str = "/") -> HTMLResponse:
    return render("login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(
    request: Request,
    user: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    services = services_of(request)
    sessions = services.get(SessionService)
    source = request.client.host if request.client else ""
    try:
        session = await services.blocking.run(sessions.login, user, password, source)
    except PlinthError as exc:
        return render("login.html", exc.status_code, next=_safe_next(next), error=exc.message)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session.cookie,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.set_cookie(
        "plinth_csrf",
        session.csrf,
        max_age=SESSION_SECONDS,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Ends the session; needs the CSRF token like every unsafe request."""
    services = services_of(request)
    sessions = services.get(SessionService)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        source = request.client.host if request.client else ""
        session = await services.blocking.run(sessions.resolve, cookie, source)
        sessions.check_csrf(session, request.headers.get(CSRF_HEADER))
        await services.blocking.run(sessions.logout, cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie("plinth_csrf")
    return response
