"""Build the app: services, routers, the one error→HTTP table, middleware, metrics."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from plinth import __version__
from plinth.core.access import Permission
from plinth.core.blobs import open_store
from plinth.core.db import Database
from plinth.core.encrypted import Keyring
from plinth.governance.identity import IdentityService
from plinth.governance.keys import current_master_key
from plinth.governance.members import MembersService
from plinth.governance.routes import identity_router
from plinth.governance.routes import router as governance_router
from plinth.governance.secrets import SecretsService
from plinth.governance.service import AuditService
from plinth.governance.sessions import SessionService
from plinth.server.auth import requires
from plinth.server.blocking import Blocking
from plinth.server.errors import CatchAll, PlinthJSONResponse, install_error_handlers
from plinth.server.middleware import BodyLimit, RequestMetrics, SecurityHeaders
from plinth.settings import Settings
from plinth.tracking.routes import router as tracking_router
from plinth.tracking.service import TrackingService

EMBEDDED_HOST = "embedded.plinth"  # the Host the in-process client sends


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
    keyring = Keyring(db, current_master_key(settings))
    return TrackingService(db, blobs, settings, keyring)


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
        tracking.recover()
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
    app.state.audit = AuditService(tracking.db)
    app.state.identity = IdentityService(tracking.db, tracking)
    app.state.sessions = SessionService(tracking.db)
    app.state.secrets = SecretsService(tracking.db, tracking, tracking.keyring)
    app.state.members = MembersService(tracking.db, tracking)
    app.state.blocking = blocking
    registry = CollectorRegistry()
    install_error_handlers(app)
    app.include_router(tracking_router)
    app.include_router(governance_router)
    app.include_router(identity_router)

    @app.get("/healthz", include_in_schema=False, dependencies=[requires(Permission.PUBLIC)])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", include_in_schema=False, dependencies=[requires(Permission.PLATFORM_READ)])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    from plinth.ui.login import router as login_router
    from plinth.ui.routes import router as ui_router

    app.include_router(login_router)
    app.include_router(ui_router)
    app.add_middleware(CatchAll)  # innermost: sees what the exception handlers did not
    app.add_middleware(
        BodyLimit,
        limit=settings.server.max_request_bytes,
        upload_limit=settings.server.max_artifact_bytes,
    )
    app.add_middleware(SecurityHeaders, docs_path=app.docs_url or "")
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    hosts = [*settings.server.allowed_hosts, *([EMBEDDED_HOST] if embedded else [])]
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)  # outermost
    app.add_middleware(RequestMetrics, registry=registry)
    return app
