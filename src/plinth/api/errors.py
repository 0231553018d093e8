"""Errors become HTTP responses here, and only here.

A ``PlinthError`` answers with its class's status and ``{"error": {"type", "message"}}``;
request validation failures are 400s of type ``InvalidInput``; anything unexpected is
a JSON 500 whose details go to the server log, never to the caller.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from plinth.api.context import all_routes
from plinth.errors import PlinthError

log = logging.getLogger("plinth.server")
_HTTP_KINDS = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}


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


def error_response(kind: str, message: str, status: int, **kwargs: Any) -> PlinthJSONResponse:
    return PlinthJSONResponse({"error": {"type": kind, "message": message}}, status, **kwargs)


def describe(errors: Any) -> str:
    """Pydantic's validation errors as one readable line."""
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PlinthError)
    async def plinth_error(_req: Request, exc: PlinthError) -> Response:
        return error_response(type(exc).__name__, exc.message, exc.status_code)

    @app.exception_handler(HTTPException)
    async def http_error(req: Request, exc: HTTPException) -> Response:
        kind = _HTTP_KINDS.get(exc.status_code, "PlinthError")
        message, headers = str(exc.detail), exc.headers
        if exc.status_code == 405 and (allow := allow_header(req)):
            message = f"{req.method} is not allowed here; use {allow['Allow']}"
            headers = {**(headers or {}), **allow}
        return error_response(kind, message, exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def invalid(_req: Request, exc: RequestValidationError | ValidationError) -> Response:
        return error_response("InvalidInput", describe(exc.errors()), 400)


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
        except Exception:
            log.exception("unexpected error in %s %s", scope["method"], scope["path"])
            if started:  # the response is under way: nothing better can be sent
                raise
            response = error_response("PlinthError", "internal error; see the server log", 500)
            await response(scope, receive, send)
