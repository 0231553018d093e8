"""A lean way through the app for the SDK's hottest routes.

A short run is one request (its create carries its points and its end; a longer run
adds batches and an end), and FastAPI's machinery around each (matching, dependency
solving, body parsing, response validation) cost about as much as the database work
behind it. A route marked ``@lean`` keeps its FastAPI
declaration (the OpenAPI document, the permission tests and every other caller see
it as before) and is also answered by a ``LeanRoute`` placed first in the app's
routes, which does the same steps directly:

- the same permission check (``Requires``, the route's one ``caller`` dependency);
- the body read through the same middleware, parsed as JSON and validated by the
  route's body model, failures raised as FastAPI raises them (same 400 text);
- the endpoint function itself, called with the same arguments;
- its answer serialised by the route's response model, with the route's status.

Only routes of that simple shape may be marked (path parameters as text, at most one
JSON body, one ``caller``); ``install`` refuses any other, and any route that would
not be the one FastAPI picks for the same request. A request it cannot take whole
(not JSON, a query string) goes on to FastAPI as before.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette._utils import get_route_path
from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, NoMatchFound

from plinth.api.auth import Requires
from plinth.api.context import Caller, all_routes, services_of
from plinth.api.errors import PlinthJSONResponse

F = TypeVar("F", bound=Callable[..., Any])
Scope = MutableMapping[str, Any]
_JSON = (b"application/json", b"application/json; charset=utf-8")


def lean(endpoint: F) -> F:
    """Mark a route to be answered the lean way (see the module's text)."""
    endpoint.__plinth_lean__ = True  # type: ignore[attr-defined]
    return endpoint


class LeanRoute(BaseRoute):
    def __init__(self, route: APIRoute) -> None:
        self.route = self.stands_in_for = route
        self.methods = frozenset(route.methods or ())
        self.body: tuple[str, TypeAdapter[Any]] | None = None
        self.caller: tuple[str, Requires, type] | None = None
        hints = typing.get_type_hints(route.endpoint, include_extras=True)
        hints.pop("return", None)
        for name, hint in hints.items():
            self._parameter(name, hint)
        if self.caller is None or route.dependencies:
            raise TypeError(f"{route.path}: a lean route has one caller and no other dependency")
        self.answer: TypeAdapter[Any] = TypeAdapter(route.response_model)
        self.status: int = route.status_code or 200

    def _parameter(self, name: str, hint: Any) -> None:
        path = self.route.path
        found = getattr(hint, "__metadata__", ())
        marks = [getattr(m, "dependency", None) for m in found]
        caller = [getattr(d, "plinth_caller", None) for d in marks if d is not None]
        if caller and caller[0] is not None and self.caller is None:
            service, permission = caller[0]
            self.caller = (name, Requires(permission), service)
        elif name in self.route.param_convertors and typing.get_origin(hint) in (
            None,
            typing.Annotated,
        ):
            base = hint.__origin__ if typing.get_origin(hint) is typing.Annotated else hint
            if (
                base is not str
                or type(self.route.param_convertors[name]).__name__ != "StringConvertor"
            ):
                raise TypeError(f"{path}: lean path parameters are text; {name} is not")
        elif isinstance(hint, type) and issubclass(hint, BaseModel) and self.body is None:
            self.body = (name, TypeAdapter(hint))
        else:
            raise TypeError(f"{path}: parameter {name} does not fit a lean route")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] not in self.methods or scope["query_string"]:
            return Match.NONE, {}
        found = self.route.path_regex.match(get_route_path(scope))
        if found is None:
            return Match.NONE, {}
        if self.body is not None:
            content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
            if content_type is None or content_type.lower() not in _JSON:
                return Match.NONE, {}  # FastAPI's own rules decide
        params = found.groupdict()
        return Match.FULL, {
            "endpoint": self.route.endpoint,
            "path_params": params,
            "route": self.route,
        }

    async def handle(self, scope: Scope, receive: Any, send: Any) -> None:
        """As FastAPI does, in its order: the body read and parsed as JSON, then the
        permission, then the body's validation."""
        assert self.caller is not None
        request = Request(scope, receive)
        data = await _json(request) if self.body is not None else None
        name, requires, service = self.caller
        principal = await requires(request)
        services = services_of(request)
        kwargs: dict[str, Any] = dict(scope["path_params"])
        kwargs[name] = Caller(services.get(service), principal, services.blocking)
        if self.body is not None:
            field, model = self.body
            kwargs[field] = _valid(model, data)
        result = await self.route.endpoint(**kwargs)
        content = self.answer.dump_python(result, mode="json", by_alias=True)
        await PlinthJSONResponse(content, status_code=self.status)(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)  # the route it stands in for has the name


_MISSING = object()


async def _json(request: Request) -> Any:
    """The body as JSON, refused as FastAPI refuses it; ``_MISSING`` for none."""
    try:
        body = await request.body()
        return json.loads(body) if body else _MISSING
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from exc
    except HTTPException:  # the body limits' 408, 413 and the text check's 422
        raise
    except Exception as exc:  # not text, nested past recursion, the client gone
        raise HTTPException(400, "There was an error parsing the body") from exc


def _valid(model: TypeAdapter[Any], data: Any) -> Any:
    """``data`` as ``model``, refused as FastAPI refuses it."""
    if data is _MISSING:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        return model.validate_python(data, from_attributes=True)  # as FastAPI does
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from exc


def install(app: FastAPI) -> list[LeanRoute]:
    """Put a ``LeanRoute`` first in ``app`` for every route marked ``@lean``."""
    routes = [r for r in all_routes(app.routes) if isinstance(r, APIRoute)]
    made = [LeanRoute(r) for r in routes if getattr(r.endpoint, "__plinth_lean__", False)]
    dressed = _dressed(app.routes) if not app.router.dependencies else {id(r) for r in routes}
    for route in made:
        if id(route.route) in dressed:
            raise TypeError(f"{route.route.path}: included with a prefix or dependencies")
        _check_first(route, routes)
    app.router.routes[:0] = made
    mark_changed = getattr(app.router, "_mark_routes_changed", None)
    if mark_changed is not None:
        mark_changed()
    return made


def _check_first(lean_route: LeanRoute, routes: list[APIRoute]) -> None:
    """``lean_route`` must answer only what FastAPI would give its route: no route
    before it may take the same method on a path it takes."""
    probe_path = lean_route.route.path_format
    for param in lean_route.route.param_convertors:
        probe_path = probe_path.replace("{" + param + "}", "0123456789abcdef0123456789abcdef")
    for method in lean_route.methods:
        scope = {"type": "http", "method": method, "path": probe_path, "root_path": ""}
        first = next(r for r in routes if r.matches(scope)[0] is Match.FULL)
        if first is not lean_route.route:
            raise TypeError(f"{method} {probe_path}: {first.path} comes before the lean route")


def _dressed(routes: list[Any]) -> set[int]:
    """The routes of routers included with a prefix or dependencies of their own: a
    lean route takes its path and permission from the route alone."""
    found: set[int] = set()  # ids: routes do not hash
    for route in routes:
        context = getattr(route, "include_context", None)
        if context is None:
            continue
        inner = route.original_router.routes
        if context.prefix or context.dependencies:
            found.update(id(r) for r in all_routes(inner))
        else:
            found |= _dressed(inner)
    return found
