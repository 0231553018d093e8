"""ASGI middleware: request-size limits, Prometheus request metrics and security
headers. They wrap; they never subclass the app."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException

from plinth.api.errors import error_for
from plinth.api.media import refuse_pickle
from plinth.api.uploads import BODY_LIMIT
from plinth.errors import UnsupportedMediaType

Scope = dict[str, Any]
access_log = logging.getLogger("plinth.access")


@dataclass(frozen=True)
class DeclaredLimit:
    """A route whose body streams, with a limit of its own (see api/uploads.py)."""

    path: re.Pattern[str]
    methods: frozenset[str]
    limit: int


def declared_limits(routes: list[Any], server: Any) -> list[DeclaredLimit]:
    """The routes that declare ``streamed_body(setting)``, with that setting's value."""
    found = []
    for route in routes:
        setting = (getattr(route, "openapi_extra", None) or {}).get(BODY_LIMIT)
        if setting is not None:
            limit = int(getattr(server, setting))
            found.append(DeclaredLimit(route.path_regex, frozenset(route.methods), limit))
    return found


class BodyLimit:
    """413 for bodies over the limit: at once from Content-Length, else while reading;
    408 for a body that stops sending bytes for ``idle_seconds``; 415 for a pickle,
    which no route ever parses (``api/media.py``).

    Routes that stream their body declare a limit of their own.
    """

    def __init__(
        self, app: Any, limit: int, declared: list[DeclaredLimit], idle_seconds: float
    ) -> None:
        self.app, self.limit, self.declared = app, limit, declared
        self.idle_seconds = idle_seconds

    def _limit(self, scope: Scope) -> int:
        for route in self.declared:
            if scope["method"] in route.methods and route.path.match(scope["path"]):
                return route.limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            refuse_pickle(headers.get(b"content-type", b"").decode("latin-1"))
        except UnsupportedMediaType as exc:
            await error_for(scope["path"], type(exc).__name__, exc.message, 415)(
                scope, receive, send
            )
            return
        limit = self._limit(scope)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            message = f"request body exceeds {limit} bytes"
            await error_for(scope["path"], "PayloadTooLarge", message, 413)(scope, receive, send)
            return
        received, body_done = 0, False

        async def guarded_receive() -> Any:
            nonlocal received, body_done
            if body_done:  # after the body: waiting for a disconnect is no stall
                return await receive()
            try:
                async with asyncio.timeout(self.idle_seconds):  # no task per chunk
                    message = await receive()
            except TimeoutError:
                # HTTPException passes through FastAPI's body parsing unchanged.
                raise HTTPException(
                    408, f"no request bytes for {self.idle_seconds:g} s; send faster or retry"
                ) from None
            received += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if received > limit:
                raise HTTPException(413, f"request body exceeds {limit} bytes")
            return message

        await self.app(scope, guarded_receive, send)


class RequestMetrics:
    """Prometheus counters and latencies per route and status; on a server, also one
    access-log line per request on ``plinth.access``: method, path, status and
    milliseconds. The path is the raw one as sent, without the query string (which may
    carry values a log should not keep), with anything unprintable escaped so that a
    request cannot forge lines of its own. Headers (tokens, cookies) are never logged."""

    def __init__(self, app: Any, registry: CollectorRegistry, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log
        self.requests = Counter(
            "plinth_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "plinth_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers if the app fails before responding

        async def recording_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(seconds)
            if self.access_log:
                access_log.info(
                    "%s %s %d %.1f ms", scope["method"], request_path(scope), status, seconds * 1e3
                )


def request_path(scope: Scope) -> str:
    """The path as the client sent it (percent-encoded, so printable), no query."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    path = path.partition("?")[0]
    return "".join(c if c.isprintable() and c.isascii() else quote(c) for c in path)


# Pages may load only their own scripts and styles (no inline ones: computed colors and
# widths are classes in the stylesheet); nothing may frame them.
_CSP = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Headers every response carries; a content security policy on every HTML response,
    the API docs page's too (Swagger UI, its files and its start-up served by the app).
    An answer to a request that carried a token or a session is not kept by the browser
    or a proxy (``Cache-Control: no-store``): run data and job logs must not outlive a
    logout in a cache; the UI's own static files may be."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        private = _credentialed(scope) and not scope["path"].startswith(_STATIC)

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + _HEADERS
                if any(_is_html(name, value) for name, value in headers):
                    headers.append((b"content-security-policy", _CSP))
                if private and not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_STATIC = "/ui/static/"


def _credentialed(scope: Scope) -> bool:
    """Whether the request carried a token or a cookie (a session)."""
    return any(name in (b"authorization", b"cookie") for name, _ in scope["headers"])


def _is_html(name: bytes, value: bytes) -> bool:
    """Whether a header says the body is HTML, whatever its charset or other params."""
    if name.lower() != b"content-type":
        return False
    return value.partition(b";")[0].strip().lower() == b"text/html"
