"""Pages of the model registry: a project's models, one version's page, and the two
changes a person makes there (point an alias at this version, archive or restore it).

Every call goes through the registry's services as the request's principal, so the
services decide who may change what: a refusal (a viewer moving an alias, an archived
version taking one) is shown on the version page itself, with the service's status.
An accepted change redirects back to the page (POST/redirect/GET).

The forms carry a CSRF token of their own, checked here: a random value in a hidden
field that must match a SameSite=Strict cookie set with the page, as the login form
does. That guards a server without logins too, where no session token exists. With
a session, ui.js also sends the session's token in ``X-CSRF-Token``, which the
authenticator requires of every unsafe request, as for logging out. A request with
an ``Authorization`` header (a script's token) needs neither: no browser adds one on
its own.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from plinth.api.auth import requires
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.errors import Conflict, InvalidInput, PermissionDenied, PlinthError
from plinth.registry import schemas as s
from plinth.registry.aliases import AliasService
from plinth.registry.card import ModelCardService
from plinth.registry.service import RegistryService
from plinth.registry.uri import MODEL_NAME
from plinth.ui.routes import PageRoute, _service, render
from plinth.ui.views import url_segment

FORM_CSRF_COOKIE = "plinth_form_csrf"
FORM_CSRF_SECONDS = 12 * 3600
READ = [requires(Permission.PROJECT_READ)]
WRITE = [requires(Permission.PROJECT_WRITE)]
# What the service may refuse a change with, shown on the page rather than on its own.
SHOWN_ON_PAGE = (PermissionDenied, Conflict, InvalidInput)

Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
Name = Annotated[str, Path(pattern=MODEL_NAME, max_length=200)]
Version = Annotated[int, Path(ge=1, lt=2**31)]
# writeOnly: the token is checked, never stored or shown.
CsrfField = Annotated[str, Form(max_length=100, json_schema_extra={"writeOnly": True})]

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def version_url(project: str, name: str, version: int) -> str:
    return f"/projects/{url_segment(project)}/models/{url_segment(name)}/versions/{version}"


@router.get("/projects/{project}/models", response_class=HTMLResponse, dependencies=READ)
def models_page(request: Request, project: Project) -> HTMLResponse:
    models = _service(request, RegistryService).list_models(project)
    return render("models.html", project=project, models=models, version_url=version_url)


@router.get(
    "/projects/{project}/models/{name}/versions/{version}",
    response_class=HTMLResponse,
    dependencies=READ,
)
def version_page(request: Request, project: Project, name: Name, version: Version) -> Response:
    return _version_page(request, project, name, version)


@router.post("/projects/{project}/models/{name}/versions/{version}/alias", dependencies=WRITE)
def move_alias(
    request: Request,
    project: Project,
    name: Name,
    version: Version,
    alias: Annotated[str, Form(max_length=64)],
    reason: Annotated[str, Form(max_length=2000)] = "",
    csrf: CsrfField = "",
) -> Response:
    """Point ``alias`` at this version, with the reason kept in its history."""
    move = s.AliasSet(version=version, reason=reason)
    aliases = _service(request, AliasService)
    change = functools.partial(aliases.set_alias, project, name, alias, move)
    typed = {"alias": alias, "reason": reason}
    return _change(request, project, name, version, csrf, change, typed)


@router.post("/projects/{project}/models/{name}/versions/{version}/status", dependencies=WRITE)
def set_status(
    request: Request,
    project: Project,
    name: Name,
    version: Version,
    status: Annotated[Literal["ready", "archived"], Form()],
    csrf: CsrfField = "",
) -> Response:
    """Archive this version (it keeps its files, takes no alias) or restore it."""
    update = s.ModelVersionUpdate(status=status)
    registry = _service(request, RegistryService)
    change = functools.partial(registry.update_version, project, name, version, update)
    return _change(request, project, name, version, csrf, change, {})


def _change(
    request: Request,
    project: str,
    name: str,
    version: int,
    csrf: str,
    change: Callable[[], Any],
    typed: dict[str, str],
) -> Response:
    """Make the change and go back to the page; or show the page with why not (and
    what was typed, to try again)."""
    try:
        _check_form_token(request, csrf)
        change()
    except SHOWN_ON_PAGE as exc:
        return _version_page(request, project, name, version, refusal=exc, typed=typed)
    return RedirectResponse(version_url(project, name, version), status_code=303)


def _check_form_token(request: Request, sent: str) -> None:
    if "authorization" in request.headers:  # a script's token: not a browser's cookie
        return
    expected = request.cookies.get(FORM_CSRF_COOKIE, "")
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if not (sent and expected and hmac.compare_digest(sent.encode(), expected.encode())):
        raise PermissionDenied("this form has expired or came from another site; try again")


def _card(request: Request, project: str, name: str, version: int) -> Markup:
    """The version's model card as the registry renders it: its template escapes every
    value users wrote, so its HTML goes into the page as it is."""
    card = _service(request, ModelCardService)
    return Markup(card.model_card(project, name, version, "html"))


def _version_page(
    request: Request,
    project: str,
    name: str,
    version: int,
    *,
    refusal: PlinthError | None = None,
    typed: dict[str, str] | None = None,
) -> Response:
    registry = _service(request, RegistryService)
    found = registry.get_version(project, name, version)
    token = request.cookies.get(FORM_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        "model_version.html",
        refusal.status_code if refusal else 200,
        v=found,
        files=registry.version_files(project, name, version),
        versions=registry.list_versions(project, name),
        history=_service(request, AliasService).alias_history(project, name),
        card=_card(request, project, name, version),
        refusal=refusal.message if refusal else None,
        typed=typed or {},
        csrf=token,
        version_url=version_url,
        here=version_url(project, name, version),
    )
    if request.cookies.get(FORM_CSRF_COOKIE) != token:
        response.set_cookie(
            FORM_CSRF_COOKIE,
            token,
            max_age=FORM_CSRF_SECONDS,
            path="/projects",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response
