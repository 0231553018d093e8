"""The OpenAPI document tells the truth about errors.

Each operation lists the error answers it can give, all with Plinth's error body
(``ErrorBody``), and FastAPI's 422 ``HTTPValidationError`` is gone: Plinth never
sends it (a request that does not validate is a 400 ``InvalidInput``).

Which errors an operation can give follows from what its route declares, so a new
route is documented with no table to edit:

- any operation may find a backend down (503);
- one that needs a permission may meet missing credentials (401) or too few rights (403);
- one that takes input may get input that does not validate (400) or content that
  cannot be stored (422);
- one with a body may get one too large (413) or one that stalls (408); a streamed
  body also counts against the caller's uploads at once (429);
- one that names an object (a path parameter, a ``project`` in its body or query) may name
  one that does not exist or that the caller may not see (404);
- a write may find the disk full (507), and one whose body can disagree with what is
  stored may conflict with it (409).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from plinth.api.auth import declared_permissions
from plinth.api.context import all_routes
from plinth.api.errors import MLFLOW_PREFIX, ErrorBody, MlflowErrorBody
from plinth.api.uploads import BODY_LIMIT
from plinth.core.access import Permission

_REF = "#/components/schemas/"
_READS = {Permission.PUBLIC, Permission.PROJECT_READ, Permission.PLATFORM_READ}
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
_MEANING = {
    400: "Invalid input (InvalidInput): the request does not validate",
    401: "No valid credentials (Unauthenticated); needed once the home has an admin",
    403: "The caller may not do this (PermissionDenied)",
    404: "No such object, or one the caller may not see (NotFound)",
    408: "The request body stopped arriving",
    409: "Conflicts with what is stored (Conflict)",
    413: "The request body is over a limit (PayloadTooLarge)",
    422: "Content that cannot be stored, such as a lone surrogate or a NUL character, "
    "or a batch over its limits (Unprocessable)",
    429: "Too many requests of this kind from the caller at once (TooManyRequests)",
    503: "A backend (database or blob store) is unavailable: retry later",
    507: "The server's storage is full",
}


def document_errors(app: FastAPI) -> None:
    """From now on ``app.openapi()`` answers the document with its errors told."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_errors(generate(), all_routes(app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_errors(doc: dict[str, Any], routes: Any) -> dict[str, Any]:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for fastapi_own in ("HTTPValidationError", "ValidationError"):
        schemas.pop(fastapi_own, None)
    body = ErrorBody.model_json_schema(ref_template=_REF + "{model}")
    schemas.update(body.pop("$defs", {}), ErrorBody=body)
    schemas["MlflowErrorBody"] = MlflowErrorBody.model_json_schema()
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        shape = "MlflowErrorBody" if route.path_format.startswith(MLFLOW_PREFIX) else "ErrorBody"
        for method in route.methods or ():
            operation = doc["paths"][route.path_format][method.lower()]
            responses = operation["responses"]
            responses.pop("422", None)  # FastAPI's; Plinth's own 422 is below
            for status in sorted(errors_of(route, method, operation, schemas)):
                responses[str(status)] = {
                    "description": _MEANING[status],
                    "content": {"application/json": {"schema": {"$ref": _REF + shape}}},
                }
    return doc


def errors_of(
    route: APIRoute, method: str, operation: dict[str, Any], schemas: dict[str, Any]
) -> set[int]:
    """The error statuses an operation can answer (see the module's docstring)."""
    permission = permission_of(route.dependant)
    parameters, body = operation.get("parameters", []), operation.get("requestBody")
    found = {503}
    if permission is not Permission.PUBLIC:
        found |= {401, 403}
    if parameters or body:
        found |= {400, 422}
    if body:
        found |= {408, 413}
    if BODY_LIMIT in (route.openapi_extra or {}):
        found.add(429)
    by_query = {p["name"] for p in parameters if p["in"] == "query"}
    in_path = any(p["in"] == "path" for p in parameters)
    mlflow = route.path_format.startswith(MLFLOW_PREFIX)  # ids in queries and bodies
    if in_path or mlflow or "project" in by_query or "project" in _fields(body, schemas):
        found.add(404)
    if method in _UNSAFE and permission not in _READS:
        found |= {409, 507} if body else {507}
    return found


def permission_of(dependant: Dependant) -> Permission | None:
    """The permission a route declares, or None."""
    found = declared_permissions(dependant)
    return found[0] if found else None


def _fields(body: dict[str, Any] | None, schemas: dict[str, Any]) -> set[str]:
    """The top-level fields of a JSON request body."""
    schema = ((body or {}).get("content", {}).get("application/json") or {}).get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith(_REF):
        schema = schemas.get(ref.removeprefix(_REF), {})
    return set(schema.get("properties", {}))
