"""Assemble the app from the capabilities: their services, routers and background
work, over the HTTP plumbing of ``plinth.api``."""

from __future__ import annotations

import contextlib
import html
import importlib.resources
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from plinth import __version__
from plinth.api import lean
from plinth.api.auth import requires
from plinth.api.blocking import Blocking
from plinth.api.context import Services, all_routes
from plinth.api.errors import CatchAll, PlinthJSONResponse, install_error_handlers
from plinth.api.middleware import BodyLimit, RequestMetrics, SecurityHeaders, declared_limits
from plinth.api.openapi import document_errors
from plinth.api.readiness import Readiness
from plinth.api.text import StorableText
from plinth.api.uploads import Uploads
from plinth.capabilities import declared
from plinth.core.access import Permission
from plinth.core.capability import Periodic, build_service, load
from plinth.core.platform import Platform
from plinth.errors import NotFound
from plinth.settings import Settings

EMBEDDED_HOST = "embedded.plinth"  # the Host the in-process client sends
DOCS_PATH = "/api/v1/docs"
# Swagger UI's files, served from the fastapi-offline package: the docs page works offline.
_DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
# The docs page runs no inline script (its CSP allows none): Swagger UI starts from a
# file, which reads the OpenAPI document's URL from the page. No validator: it is remote.
_DOCS_START = b"""const box = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: box.dataset.openapi,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""
_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Plinth API</title>
<link rel="stylesheet" href="{docs}/swagger-ui.css">
<link rel="icon" href="{docs}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi="{openapi}"></div>
<script src="{docs}/swagger-ui-bundle.js"></script>
<script src="{docs}/start.js"></script>
</body>
</html>
"""
log = logging.getLogger("plinth.server")


def build_services(platform: Platform, blocking: Blocking) -> Services:
    """One instance of every capability's services, in declaration order."""
    built: dict[type, Any] = {}
    for capability in declared():
        for path in capability.services:
            cls = load(path)
            built[cls] = build_service(cls, platform, built)
    server = platform.settings.server
    uploads = Uploads(threads=server.upload_threads, per_principal=server.uploads_per_principal)
    return Services(platform, blocking, [*built.values(), uploads])


def _call(services: Services, path: str) -> Any:
    """Run a service method named ``"module:Service.method"``."""
    module, _, attribute = path.partition(":")
    cls_name, _, method = attribute.rpartition(".")
    return getattr(services.get(load(f"{module}:{cls_name}")), method)()


def _every(services: Services, periodic: Periodic, stop: threading.Event) -> None:
    interval = periodic.every(services.platform.settings)
    while not stop.wait(interval):
        try:
            _call(services, periodic.task)
        except Exception as exc:  # the next round tries again
            log.warning("%s failed: %s", periodic.task, exc)


def create_app(settings: Settings | None = None, *, embedded: bool = False) -> FastAPI:
    """The app; ``embedded`` runs service calls inline (see api/blocking.py)."""
    settings = settings or Settings()
    platform = Platform.open(settings, embedded=embedded)
    services = build_services(platform, Blocking(inline=embedded))
    capabilities = declared()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for capability in capabilities:
            for task in capability.startup:
                _call(services, task)
        stop = threading.Event()
        for capability in capabilities:
            for periodic in capability.periodic:
                threading.Thread(
                    target=_every, args=(services, periodic, stop), daemon=True
                ).start()
        yield
        stop.set()
        for capability in reversed(capabilities):
            for task in capability.shutdown:
                _call(services, task)
        services.blocking.shutdown()
        platform.close()  # its connections go back now, not when collected

    app = FastAPI(
        title="Plinth",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # our own page below, with Swagger UI from the package, not a CDN
        redoc_url=None,
        default_response_class=PlinthJSONResponse,
    )
    app.state.services = services
    install_error_handlers(app)
    for capability in capabilities:
        for router in capability.routers:
            app.include_router(load(router))
    document_errors(app)
    registry = CollectorRegistry()
    readiness = Readiness({"database": platform.db.ping, "blob store": platform.blobs.ping})
    _add_platform_routes(app, registry, readiness)
    _add_docs_routes(app)
    _add_middleware(app, settings, embedded, registry)
    lean.install(app)
    return app


def _add_platform_routes(app: FastAPI, registry: CollectorRegistry, readiness: Readiness) -> None:
    @app.get("/healthz", include_in_schema=False, dependencies=[requires(Permission.PUBLIC)])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", include_in_schema=False, dependencies=[requires(Permission.PUBLIC)])
    async def readyz() -> Response:
        return await readiness.answer()

    @app.get("/metrics", include_in_schema=False, dependencies=[requires(Permission.PLATFORM_READ)])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _add_docs_routes(app: FastAPI) -> None:
    public = [requires(Permission.PUBLIC)]

    page = _DOCS_PAGE.format(docs=DOCS_PATH, openapi=html.escape(app.openapi_url or ""))

    @app.get(DOCS_PATH, include_in_schema=False, dependencies=public)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(DOCS_PATH + "/{asset}", include_in_schema=False, dependencies=public)
    async def docs_asset(asset: str) -> Response:
        if asset == "start.js":
            return Response(_DOCS_START, media_type="text/javascript")
        if asset not in _DOCS_ASSETS:
            raise NotFound(f"no API docs asset {asset!r}")
        path = importlib.resources.files("fastapi_offline") / "static" / asset
        return FileResponse(str(path), media_type=_DOCS_ASSETS[asset])


def _add_middleware(
    app: FastAPI, settings: Settings, embedded: bool, registry: CollectorRegistry
) -> None:
    server = settings.server
    app.add_middleware(CatchAll)  # innermost: sees what the exception handlers did not
    app.add_middleware(StorableText)  # inside BodyLimit: scans only bodies within limits
    app.add_middleware(
        BodyLimit,
        limit=server.max_request_bytes,
        declared=declared_limits(list(all_routes(app.routes)), server),
        idle_seconds=server.upload_idle_seconds,
    )
    app.add_middleware(SecurityHeaders)
    if server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    hosts = [*server.allowed_hosts, *([EMBEDDED_HOST] if embedded else [])]
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)  # outermost
    app.add_middleware(RequestMetrics, registry=registry, access_log=not embedded)
