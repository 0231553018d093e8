"""The changes a person makes on a deployment's page: promote the canary, roll back,
set a canary, set or remove the shadow, scale, set the autoscaler's bounds, delete.

Each form posts here; the route checks the form token (forms.py), then that the
deployment is still the one the page showed, then makes the same service call the API,
the SDK and the CLI make, as the request's principal: the service decides who may
change what, validates the change and audits it. The page's forms carry the
``generation`` they showed; a change made meanwhile (by someone else, or by the
autoscaler) refuses the form with 409 rather than act on what the person did not see.
That check reads the deployment just before the service's call: a change landing
between the two is not caught here (the service's own compare-and-swap on
``generation`` keeps two writes from losing each other, not a stale page from acting);
closing it needs the service to take the expected generation.

A refusal (a viewer, a weight out of range, an unknown version, a stale page) is shown
on the deployment page with the service's status and what was typed, and changes
nothing; an accepted change redirects back to the page (or, after a delete, to the
project's deployments).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from plinth.api.errors import describe
from plinth.errors import Conflict, InvalidInput, NotFound, PermissionDenied, PlinthError
from plinth.registry.uri import ModelRef, check_alias
from plinth.serving import schemas as s
from plinth.serving.service import DeploymentService
from plinth.ui.deployments import (
    WRITE,
    Name,
    Project,
    deployment_page,
    deployment_url,
    deployments_url,
)
from plinth.ui.forms import SHOWN_ON_PAGE, CsrfField, check_form_token
from plinth.ui.routes import PageRoute, _service

Reason = Annotated[str, Form(max_length=2000)]
# The deployment's generation the page showed (absent: act on the deployment as it is).
Generation = Annotated[int | None, Form(ge=1, lt=2**63)]
VersionText = Annotated[str, Form(max_length=500)]  # 4, @champion or models:/…
Count = Annotated[int, Form(ge=-(2**31), lt=2**31)]  # the service's schema bounds it
M = TypeVar("M", bound=BaseModel)

router = APIRouter(include_in_schema=False, route_class=PageRoute)


class Sent:
    """What every change form sends: why, the generation the page showed, its token."""

    def __init__(
        self, reason: Reason = "", generation: Generation = None, csrf: CsrfField = ""
    ) -> None:
        self.reason, self.generation, self.csrf = reason, generation, csrf


SentFields = Annotated[Sent, Depends()]
Change = Callable[[s.Deployment], Any]  # the deployment as the page showed it


@router.post("/projects/{project}/deployments/{name}/promote", dependencies=WRITE)
def promote(request: Request, project: Project, name: Name, sent: SentFields) -> Response:
    """The canary takes the whole split."""
    service = _service(request, DeploymentService)
    change: Change = lambda d: service.promote_deployment(project, name, sent.reason)  # noqa: E731
    return _change(request, project, name, sent, "promote", {}, change)


@router.post("/projects/{project}/deployments/{name}/rollback", dependencies=WRITE)
def rollback(request: Request, project: Project, name: Name, sent: SentFields) -> Response:
    """Back to the split and shadow before the last change of them."""
    service = _service(request, DeploymentService)
    change: Change = lambda d: service.rollback_deployment(project, name, sent.reason)  # noqa: E731
    return _change(request, project, name, sent, "rollback", {}, change)


@router.post("/projects/{project}/deployments/{name}/canary", dependencies=WRITE)
def set_canary(
    request: Request,
    project: Project,
    name: Name,
    canary: VersionText,
    weight: Count,
    sent: SentFields,
) -> Response:
    """Send ``weight`` percent (1 to 99) to a version; the heaviest other keeps the rest."""
    service = _service(request, DeploymentService)

    def change(d: s.Deployment) -> Any:
        if not 1 <= weight <= 99:
            raise InvalidInput(
                f"weight: a canary takes 1 to 99 percent of the traffic, not {weight} "
                "(promote it to give it all)"
            )
        uri = model_uri(canary, d, "canary")
        update = _valid(s.DeploymentUpdate, canary=uri, weight=weight, reason=sent.reason)
        return service.update_deployment(project, name, update)

    typed = {"canary": canary, "weight": str(weight)}
    return _change(request, project, name, sent, "canary", typed, change)


@router.post("/projects/{project}/deployments/{name}/shadow", dependencies=WRITE)
def set_shadow(
    request: Request,
    project: Project,
    name: Name,
    sent: SentFields,
    shadow: VersionText = "",
    remove: Annotated[Literal["", "true"], Form()] = "",
) -> Response:
    """A version that sees a copy of every request (its answers recorded, never
    returned); or, with ``remove``, no shadow."""
    service = _service(request, DeploymentService)
    remove_it = remove == "true"  # the form's hidden field: only that text, no "yes" or 1

    def change(d: s.Deployment) -> Any:
        if remove_it and shadow.strip():
            raise InvalidInput("shadow: name a version to shadow, or remove the shadow; not both")
        if remove_it:
            update = _valid(s.DeploymentUpdate, shadow_off=True, reason=sent.reason)
        else:
            uri = model_uri(shadow, d, "shadow")
            update = _valid(s.DeploymentUpdate, shadow=uri, reason=sent.reason)
        return service.update_deployment(project, name, update)

    form = "shadow-off" if remove_it else "shadow"
    return _change(request, project, name, sent, form, {"shadow": shadow}, change)


@router.post("/projects/{project}/deployments/{name}/scale", dependencies=WRITE)
def scale(
    request: Request, project: Project, name: Name, replicas: Count, sent: SentFields
) -> Response:
    """Run ``replicas`` replicas (within the autoscaler's bounds)."""
    service = _service(request, DeploymentService)

    def change(d: s.Deployment) -> Any:
        wanted = _valid(s.DeploymentScale, replicas=replicas, reason=sent.reason)
        return service.scale_deployment(project, name, wanted)

    typed = {"replicas": str(replicas)}
    return _change(request, project, name, sent, "scale", typed, change)


@router.post("/projects/{project}/deployments/{name}/autoscale", dependencies=WRITE)
def set_bounds(
    request: Request,
    project: Project,
    name: Name,
    min_replicas: Count,
    max_replicas: Count,
    sent: SentFields,
) -> Response:
    """The autoscaler's bounds: it keeps the replicas between them."""
    service = _service(request, DeploymentService)
    bounds = {"min_replicas": min_replicas, "max_replicas": max_replicas}

    def change(d: s.Deployment) -> Any:
        update = _valid(s.DeploymentUpdate, **bounds, reason=sent.reason)
        return service.update_deployment(project, name, update)

    typed = {key: str(value) for key, value in bounds.items()}
    return _change(request, project, name, sent, "autoscale", typed, change)


@router.post("/projects/{project}/deployments/{name}/delete", dependencies=WRITE)
def delete(
    request: Request,
    project: Project,
    name: Name,
    sent: SentFields,
    confirm: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Stop the replicas and remove the deployment (its history stays), once the
    deployment's name is typed to confirm it."""
    service = _service(request, DeploymentService)

    def change(d: s.Deployment) -> Any:
        if confirm != name:
            raise InvalidInput(f"confirm: type the deployment's name ({name}) to delete it")
        service.delete_deployment(project, name, sent.reason)

    typed, listing = {"confirm": confirm}, deployments_url(project)
    return _change(request, project, name, sent, "delete", typed, change, then=listing)


def _change(
    request: Request,
    project: str,
    name: str,
    sent: Sent,
    form: str,
    typed: dict[str, str],
    change: Change,
    *,
    then: str | None = None,
) -> Response:
    """Make the change and go on (back to the page); or show the page with why not,
    and what was typed in ``form``, to try again."""

    def refused(exc: PlinthError) -> Response:
        shown = {**typed, "reason": sent.reason}
        return deployment_page(request, project, name, refusal=exc, form=form, typed=shown)

    try:
        check_form_token(request, sent.csrf)
    except PermissionDenied as exc:
        return refused(exc)
    # Read first: an outsider, or a deployment that is gone, gets the uniform 404 page.
    seen = _service(request, DeploymentService).get_deployment(project, name)
    try:
        if sent.generation is not None and sent.generation != seen.generation:
            raise Conflict(
                f"deployment {name!r} changed since this page showed it (generation "
                f"{sent.generation}, now {seen.generation}): look at it again and retry"
            )
        change(seen)
    except (*SHOWN_ON_PAGE, NotFound) as exc:  # NotFound here: the version named
        return refused(exc)
    return RedirectResponse(then or deployment_url(project, name), status_code=303)


_VERSION = re.compile(r"[0-9]{1,9}")


def model_uri(text: str, d: s.Deployment, field: str) -> str:
    """A version of the deployment's model as a ``models:/`` URI: from its number
    (``4``), an alias (``@challenger``) or a whole URI."""
    text = text.strip()
    if _VERSION.fullmatch(text):
        return str(ModelRef(d.project, d.model, version=int(text)))
    if text.startswith("@"):
        return str(ModelRef(d.project, d.model, alias=check_alias(text[1:])))
    if text.startswith("models:/"):
        return text
    raise InvalidInput(
        f"{field}: give a version of {d.model!r} (a number, an @alias or a models:/ URI), "
        f"not {text!r}"
    )


def _valid(schema: type[M], **fields: Any) -> M:
    """The service's own wire type, its refusal shown on the page like the service's."""
    try:
        return schema(**fields)
    except ValidationError as exc:
        raise InvalidInput(describe(exc.errors())) from None
