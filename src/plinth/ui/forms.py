"""The UI's forms that change things: a form token bound to a cookie of this site.

A page that holds a form sets ``plinth_form_csrf`` (SameSite=Strict, HttpOnly, under
/projects) and puts the same value in a hidden field; the POST must bring both. That
guards a server without logins too, where nothing else would stop a page on another
site from posting to a local Plinth. A request carrying a bearer token (a script's,
never sent by a browser on its own) needs no form token.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import Response

from plinth.errors import Conflict, InvalidInput, PermissionDenied

FORM_CSRF_COOKIE = "plinth_form_csrf"
FORM_CSRF_SECONDS = 12 * 3600
# What a service may refuse a change with, shown on the page rather than on its own.
SHOWN_ON_PAGE = (PermissionDenied, Conflict, InvalidInput)
CsrfField = Annotated[str, Form(max_length=100, json_schema_extra={"writeOnly": True})]


def check_form_token(request: Request, sent: str) -> None:
    # A bearer token is a script's, never sent by a browser on its own (unlike Basic
    # credentials a browser repeats for a proxy in front of Plinth).
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    if not cookie_matches(request, FORM_CSRF_COOKIE, sent):
        raise PermissionDenied("this form has expired or came from another site; try again")


def cookie_matches(request: Request, cookie: str, sent: str) -> bool:
    """Whether a form's hidden value is the one its cookie holds (double submit)."""
    expected = request.cookies.get(cookie, "")
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    return bool(sent and expected) and hmac.compare_digest(sent.encode(), expected.encode())


def set_token_cookie(
    request: Request, response: Response, cookie: str, token: str, seconds: int, path: str
) -> None:
    """The cookie a form's token is checked against: this site's pages only."""
    response.set_cookie(
        cookie,
        token,
        max_age=seconds,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def form_token(request: Request) -> str:
    """The token the page's forms carry: the cookie's, or a new one."""
    return request.cookies.get(FORM_CSRF_COOKIE) or secrets.token_urlsafe(32)


def keep_form_token(request: Request, response: Response, token: str) -> Response:
    """Set the cookie when the page made a new token."""
    if request.cookies.get(FORM_CSRF_COOKIE) != token:
        set_token_cookie(request, response, FORM_CSRF_COOKIE, token, FORM_CSRF_SECONDS, "/projects")
    return response
