"""Errors become HTTP responses here, and only here.

A ``PlinthError`` answers with its class's status and ``{"error": {"type", "message"}}``;
request validation failures, a body that is not JSON among them, are 400s of type
``InvalidInput``; Starlette's HTTP errors are typed as the class of their status
(a stalled body's 408, ``RequestTimeout``). A failing backend is a fault of the
service, not a bug: a database that is down or restarting, an object store that does
not answer, a disk that fails I/O or is full become 503 (507 for a full disk) with
``Retry-After`` and one line in the log (see ``backend_fault``). Anything else
unexpected is a JSON 500 whose details go to the server log, never to the caller.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from plinth.api.context import all_routes
from plinth.core.db import causes, database_fault
from plinth.errors import InsufficientStorage, PlinthError, ServiceUnavailable

log = logging.getLogger("plinth.server")
_HTTP_KINDS = {
    400: "InvalidInput",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    413: "PayloadTooLarge",
    422: "Unprocessable",
}
# Seconds a client should wait before asking again: a database restart or a
# fail-over takes a few; a full disk needs someone to free space.
RETRY_AFTER = {503: 5, 507: 60}
_FULL = (errno.ENOSPC, errno.EDQUOT)


class PlinthJSONResponse(JSONResponse):
    """JSON that keeps NaN and infinities (training losses do diverge)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


class ErrorDetail(BaseModel):
    type: str = Field(description="the error's class, e.g. NotFound; the SDK raises the same")
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class MlflowErrorBody(BaseModel):
    """The body of every error answer of the MLflow-compatible API (under ``/mlflow/``):
    MLflow's own shape, so that its client raises what its users expect."""

    error_code: str = Field(description="MLflow's code, e.g. RESOURCE_DOES_NOT_EXIST")
    message: str


def _retry_after(status: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``Retry-After`` among its headers for an outage (503, 507); a
    header the caller gave wins."""
    if status in RETRY_AFTER:
        headers = {"Retry-After": str(RETRY_AFTER[status]), **(kwargs.get("headers") or {})}
        return {**kwargs, "headers": headers}
    return kwargs


def error_response(kind: str, message: str, status: int, **kwargs: Any) -> PlinthJSONResponse:
    body = {"error": {"type": kind, "message": message}}
    return PlinthJSONResponse(body, status, **_retry_after(status, kwargs))


def backend_fault(exc: BaseException) -> PlinthError | None:
    """The service error a backend failure stands for, or None for a bug.

    Looks down the chain of causes, since drivers and libraries wrap what failed:
    SQLAlchemy wraps the DB-API error, s3fs a botocore one, botocore aiohttp's.
    """
    chain = list(causes(exc))
    for failed, error, message in _FAULTS:  # the most specific first
        if any(failed(cause) for cause in chain):
            return error(message)
    return None


def _full_disk(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) and exc.errno in _FULL) or database_fault(exc) == "full"


def _disk_failed(exc: BaseException) -> bool:
    """The server's own disk answered an I/O error (a failing device, a lost mount) or
    is read-only; not s3fs's EIO, which wraps the store's own answer (judged by that,
    as its cause)."""
    failed = isinstance(exc, OSError) and exc.errno in (errno.EIO, errno.EROFS)
    return failed and exc.__cause__ is None


def _database_down(exc: BaseException) -> bool:
    return database_fault(exc) == "down"


def _object_store_down(exc: BaseException) -> bool:
    botocore = sys.modules.get("botocore.exceptions")  # loaded if an S3 store is used
    aiohttp = sys.modules.get("aiohttp")
    fsspec = sys.modules.get("fsspec.exceptions")
    if botocore is not None:
        if isinstance(exc, botocore.ConnectionError | botocore.HTTPClientError):
            return True
        if isinstance(exc, botocore.ClientError):  # an answer: a 5xx is the store failing
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return int(status) >= 500
    return (aiohttp is not None and isinstance(exc, aiohttp.ClientError)) or (
        fsspec is not None and isinstance(exc, fsspec.FSTimeoutError)
    )


_FAULTS: tuple[tuple[Callable[[BaseException], bool], type[PlinthError], str], ...] = (
    (_full_disk, InsufficientStorage, "the server's disk is full; try again when space is freed"),
    (_database_down, ServiceUnavailable, "the database is unavailable; try again shortly"),
    (
        _object_store_down,
        ServiceUnavailable,
        "the artifact store is unavailable; try again shortly",
    ),
    (_disk_failed, ServiceUnavailable, "the server's storage failed to read or write; try again"),
)


# FastAPI's words (and ``lean.py``'s) for a body it could not parse but for its JSON
# syntax: the error that stopped it is the exception's cause.
_UNPARSED = "There was an error parsing the body"
_NOT_JSON = "the request body is not valid JSON"


def _unparsed_body(exc: HTTPException) -> str:
    """Why a body could not be parsed, as the caller can act on it."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return f"{_NOT_JSON}: it is not UTF-8 text (byte {cause.start})"
    if isinstance(cause, RecursionError):
        return f"{_NOT_JSON}: its arrays and objects nest too deeply"
    return f"{_NOT_JSON}: it could not be read"


def describe(errors: Any) -> str:
    """Pydantic's validation errors as one readable line."""
    return "; ".join(_described(err) for err in list(errors)[:5]) or "invalid request"


def _described(err: Any) -> str:
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid" and len(loc) == 2 and loc[0] == "body":
        reason = err.get("ctx", {}).get("error", err.get("msg"))  # of the whole body's syntax
        return f"{_NOT_JSON}: {reason} at character {loc[1]}"
    where = ".".join(str(p) for p in loc if p != "body")
    return f"{where}: {err.get('msg')}" if where else str(err.get("msg"))


# The MLflow-compatible API (``plinth/mlflow``) answers in MLflow's shape, so that the
# MLflow client raises what its users expect: {"error_code": …, "message": …}.
MLFLOW_PREFIX = "/mlflow/"
_MLFLOW_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "INVALID_PARAMETER_VALUE",
    415: "INVALID_PARAMETER_VALUE",
    422: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    507: "TEMPORARILY_UNAVAILABLE",
}


def error_for(
    path: str, kind: str, message: str, status: int, *, route: bool = True, **kwargs: Any
) -> PlinthJSONResponse:
    """``error_response``, or MLflow's error shape for a path of the MLflow API.
    ``route``: False when no route serves the path and method (MLflow's
    ``ENDPOINT_NOT_FOUND``)."""
    if not path.startswith(MLFLOW_PREFIX):
        return error_response(kind, message, status, **kwargs)
    code = _MLFLOW_CODES.get(status, "INTERNAL_ERROR")  # the status stays Plinth's
    if not route:
        code = "ENDPOINT_NOT_FOUND"
    body = {"error_code": code, "message": message}
    return PlinthJSONResponse(body, status, **_retry_after(status, kwargs))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PlinthError)
    async def plinth_error(req: Request, exc: PlinthError) -> Response:
        after = getattr(exc, "retry_after", None)
        headers = {} if after is None else {"Retry-After": str(after)}
        return error_for(
            req.url.path, type(exc).__name__, exc.message, exc.status_code, headers=headers
        )

    @app.exception_handler(HTTPException)
    async def http_error(req: Request, exc: HTTPException) -> Response:
        kind = _HTTP_KINDS.get(exc.status_code, "PlinthError")
        message, headers = str(exc.detail), exc.headers
        if exc.status_code == 400 and message == _UNPARSED:
            message = _unparsed_body(exc)
        if exc.status_code == 405 and (allow := allow_header(req)):
            message = f"{req.method} is not allowed here; use {allow['Allow']}"
            headers = {**(headers or {}), **allow}
        unrouted = exc.status_code == 405 or (
            exc.status_code == 404 and "endpoint" not in req.scope
        )
        return error_for(
            req.url.path, kind, message, exc.status_code, route=not unrouted, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def invalid(req: Request, exc: RequestValidationError | ValidationError) -> Response:
        return error_for(req.url.path, "InvalidInput", describe(exc.errors()), 400)


def allow_header(request: Request) -> dict[str, str]:
    """``Allow`` listing every method the path serves: Starlette names only those of
    the first route whose path matched, though another route may serve the same path
    with other methods."""
    probe = {
        "type": "http",
        "path": request.scope["path"],
        "root_path": request.scope.get("root_path", ""),
        "method": request.method,
    }
    methods: set[str] = set()
    for route in all_routes(request.app.routes):
        if getattr(route, "methods", None) and route.matches(probe)[0] is not Match.NONE:
            methods |= route.methods
    return {"Allow": ", ".join(sorted(methods))} if methods else {}


class CatchAll:
    """ASGI middleware: an unexpected exception becomes a JSON 500 on a connection that
    stays usable, and its traceback goes to the log."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception as exc:
            where = f"{scope['method']} {scope['path']}"
            fault = backend_fault(exc)
            if fault is None:
                log.exception("unexpected error in %s", where)
            else:  # an outage: one line per request, not a traceback
                log.warning("%s: %s (%s)", where, fault.message, one_line(exc))
            if started:  # the response is under way: nothing better can be sent
                raise
            if fault is None:
                fault = PlinthError("internal error; see the server log")
            response = error_for(
                scope["path"], type(fault).__name__, fault.message, fault.status_code
            )
            await response(scope, receive, send)


def one_line(exc: BaseException) -> str:
    """What failed, briefly: the exception's type and the first line of its text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
