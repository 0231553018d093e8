"""Build the app: services, routers, the one error→HTTP table, middleware, metrics."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from plinth import __version__
from plinth.core.blobs import open_store
from plinth.core.db import Database
from plinth.errors import PlinthError
from plinth.server.blocking import Blocking
from plinth.server.middleware import BodyLimit, RequestMetrics
from plinth.settings import Settings
from plinth.tracking.routes import router as tracking_router
from plinth.tracking.service import TrackingService


class PlinthJSONResponse(JSONResponse):
    """JSON that keeps NaN and infinities (training losses do diverge)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def _describe(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PlinthError)
    async def plinth_error(_req: Request, exc: PlinthError) -> Response:
        return PlinthJSONResponse(error_body(type(exc).__name__, exc.message), exc.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "NotFound", 405: "InvalidInput", 413: "PayloadTooLarge"}.get(
            exc.status_code, "PlinthError"
        )
        return PlinthJSONResponse(
            error_body(kind, str(exc.detail)), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_req: Request, exc: RequestValidationError) -> Response:
        return PlinthJSONResponse(error_body("InvalidInput", _describe(list(exc.errors()))), 400)

    @app.exception_handler(ValidationError)
    async def value_invalid(_req: Request, exc: ValidationError) -> Response:
        return PlinthJSONResponse(error_body("InvalidInput", _describe(list(exc.errors()))), 400)


def build_services(settings: Settings) -> TrackingService:
    db = Database(settings.resolved_database_url(), synchronous=settings.db_synchronous)
    db.migrate()
    secret = settings.s3.secret_access_key
    blobs = open_store(
        settings.resolved_artifacts_url(),
        s3_endpoint_url=settings.s3.endpoint_url,
        s3_region=settings.s3.region,
        s3_access_key_id=settings.s3.access_key_id,
        s3_secret_access_key=secret.get_secret_value() if secret else None,
    )
    return TrackingService(db, blobs, settings)


def _reaper(svc: TrackingService, stop: threading.Event) -> None:
    interval = max(1.0, svc.settings.tracking.stale_after_seconds / 4)
    while not stop.wait(interval):
        with contextlib.suppress(Exception):
            svc.reap_stale_runs()


def create_app(settings: Settings | None = None, *, embedded: bool = False) -> FastAPI:
    """The app; ``embedded`` runs service calls inline (see server/blocking.py)."""
    settings = settings or Settings()
    tracking = build_services(settings)
    blocking = Blocking(inline=embedded)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        tracking.reap_stale_runs()
        tracking.blobs.sweep_partial()
        thread = threading.Thread(target=_reaper, args=(tracking, stop), daemon=True)
        thread.start()
        yield
        stop.set()
        blocking.shutdown()

    app = FastAPI(
        title="Plinth",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        default_response_class=PlinthJSONResponse,
    )
    app.state.settings = settings
    app.state.tracking = tracking
    app.state.blocking = blocking
    registry = CollectorRegistry()
    install_error_handlers(app)
    app.include_router(tracking_router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    from plinth.ui.routes import router as ui_router

    app.include_router(ui_router)
    app.add_middleware(
        BodyLimit,
        limit=settings.server.max_request_bytes,
        upload_limit=settings.server.max_artifact_bytes,
    )
    app.add_middleware(RequestMetrics, registry=registry)
    return app
