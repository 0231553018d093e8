"""Deny by default: every route the app has declares the permission it needs."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from plinth.api.auth import declared_permissions
from plinth.api.context import all_routes
from plinth.core.access import Permission
from plinth.server.app import create_app
from tests.conftest import make_settings

# The route FastAPI itself adds for the OpenAPI document, and static files.
ALLOWED_WITHOUT_DECLARATION = {"/api/v1/openapi.json", "/ui/static"}


def test_every_route_declares_exactly_one_permission(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "home"))
    undeclared, declared = [], {}
    for route in all_routes(app.routes):  # the routers' own lists, not the OpenAPI document
        if isinstance(route, APIRoute):
            permissions = declared_permissions(route.dependant)
            if len(permissions) != 1:
                undeclared.append((sorted(route.methods), route.path, permissions))
            else:
                for method in route.methods:
                    declared[(method, route.path)] = permissions[0]
        elif isinstance(route, Route | Mount) and route.path not in ALLOWED_WITHOUT_DECLARATION:
            undeclared.append((sorted(getattr(route, "methods", None) or []), route.path, []))
    assert undeclared == []
    assert declared[("GET", "/healthz")] is Permission.PUBLIC
    assert declared[("GET", "/api/v1/docs")] is Permission.PUBLIC
    assert declared[("POST", "/api/v1/runs")] is Permission.PROJECT_WRITE
    assert declared[("GET", "/api/v1/runs/{run_id}")] is Permission.PROJECT_READ
    assert declared[("GET", "/api/v1/audit")] is Permission.PLATFORM_READ
    assert declared[("POST", "/api/v1/users")] is Permission.PLATFORM_ADMIN
    assert declared[("POST", "/api/v1/tokens")] is Permission.AUTHENTICATED
    # nothing that changes state is declared public or as a mere read
    reads = {Permission.PUBLIC, Permission.PROJECT_READ, Permission.PLATFORM_READ}
    how_one_gets_in = {"/login", "/logout", "/api/v1/runs/search"}  # public by design
    mlflow = "/mlflow/api/2.0/mlflow"  # MLflow's searches are POSTs that only read
    how_one_gets_in |= {f"{mlflow}/{noun}/search" for noun in ("experiments", "runs")}
    how_one_gets_in |= {
        f"{mlflow}/logged-models/search",
        f"{mlflow}/registered-models/get-latest-versions",
        # a multipart upload's part: its URL (from an authorized ``mpu/create``) is the
        # credential, as a presigned S3 URL is
        "/mlflow/api/2.0/mlflow-artifacts/mpu/parts/{upload_id}/{part}",
        # a batch download of a dataset version's files names them in its body
        "/api/v1/projects/{project}/datasets/{name}/versions/{version}/archive",
    }
    for (method, path), permission in declared.items():
        if method in {"POST", "PUT", "PATCH", "DELETE"} and path not in how_one_gets_in:
            assert permission not in reads, (method, path)
