"""The OpenAPI document tells the truth: the errors each operation can answer, with
Plinth's error body; name patterns; strict booleans; and a 405's ``Allow``."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, Strict

from plinth.api.context import all_routes
from plinth.client import Client
from plinth.core.names import PROJECT_NAME
from plinth.governance.schemas import SECRET_NAME, TOKEN_ID, USER_NAME
from plinth.server.app import create_app
from plinth.settings import Settings
from plinth.tracking.schemas import RUN_ID
from tests.conftest import make_settings, raw_http

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
MLFLOW_ERROR_BODY = {"$ref": "#/components/schemas/MlflowErrorBody"}
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home")


@pytest.fixture
def doc(client: Client) -> dict[str, Any]:
    """The document as a caller reads it."""
    response = raw_http(client).get("/api/v1/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in doc["paths"].items():
        for method, operation in ops.items():
            yield method.upper(), path, operation


def statuses(doc: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(s) for s in doc["paths"][path][method.lower()]["responses"]}


def test_every_operation_documents_its_errors_with_the_error_body(doc: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(doc)  # FastAPI's 422: never sent
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
    mlflow_error = doc["components"]["schemas"]["MlflowErrorBody"]
    assert mlflow_error["required"] == ["error_code", "message"]
    for method, path, operation in operations(doc):
        responses = operation["responses"]
        shape = MLFLOW_ERROR_BODY if path.startswith("/mlflow/") else ERROR_BODY
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == shape
        assert {"401", "403", "503"} <= set(responses), (method, path)
        if operation.get("parameters") or operation.get("requestBody"):
            assert {"400", "422"} <= set(responses), (method, path)
        if operation.get("requestBody"):
            assert {"408", "413"} <= set(responses), (method, path)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v1/tokens", {200, 401, 403, 503}),
        ("GET", "/api/v1/runs/{run_id}", {200, 400, 401, 403, 404, 422, 503}),
        ("POST", "/api/v1/runs/search", {200, 400, 401, 403, 404, 408, 413, 422, 503}),
        ("POST", "/api/v1/runs/{run_id}/heartbeat", {204, 400, 401, 403, 404, 422, 503, 507}),
        ("POST", "/api/v1/projects", {201, 400, 401, 403, 408, 409, 413, 422, 503, 507}),
        ("POST", "/api/v1/runs", {201, 400, 401, 403, 404, 408, 409, 413, 422, 503, 507}),
        (
            "PUT",
            "/api/v1/runs/{run_id}/artifacts/{path}",
            {201, 400, 401, 403, 404, 408, 409, 413, 422, 429, 503, 507},
        ),
    ],
)
def test_the_errors_follow_from_what_a_route_declares(
    doc: dict[str, Any], method: str, path: str, expected: set[int]
) -> None:
    assert statuses(doc, method, path) == expected


def test_names_carry_their_patterns(doc: dict[str, Any]) -> None:
    in_paths = {
        p["name"]: p["schema"]
        for _, path, operation in operations(doc)
        for p in operation.get("parameters", [])
        if p["in"] == "path" and ("/secrets/" in path or p["name"] != "name")
    }
    assert in_paths["project"] == {
        "type": "string",
        "pattern": PROJECT_NAME,
        "maxLength": 200,
        "title": "Project",
    }
    assert in_paths["user"]["pattern"] == USER_NAME
    assert in_paths["name"]["pattern"] == SECRET_NAME
    assert in_paths["run_id"]["pattern"] == RUN_ID
    assert in_paths["token_id"]["pattern"] == TOKEN_ID
    assert in_paths["path"]["maxLength"] == 1000
    bodies = doc["components"]["schemas"]
    assert bodies["RunCreate"]["properties"]["project"]["pattern"] == PROJECT_NAME
    assert bodies["SearchQuery"]["properties"]["project"]["pattern"] == PROJECT_NAME
    assert bodies["ProjectCreate"]["properties"]["name"]["pattern"] == PROJECT_NAME
    assert bodies["TokenCreate"]["properties"]["project"]["anyOf"][0]["pattern"] == PROJECT_NAME
    assert bodies["UserCreate"]["properties"]["name"]["pattern"] == USER_NAME
    assert bodies["MemberAdd"]["properties"]["user"]["pattern"] == USER_NAME
    assert bodies["SecretSet"]["properties"]["name"]["pattern"] == SECRET_NAME


def test_a_name_against_its_pattern_is_a_400_and_an_unknown_id_a_404(client: Client) -> None:
    http = raw_http(client)
    refused = http.get("/api/v1/projects/-dash-first/members")
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "InvalidInput"
    assert "project" in refused.json()["error"]["message"]
    # Ids are the server's to give: one of another form names nothing.
    assert http.get("/api/v1/runs/not-an-id").json()["error"]["message"] == "no run 'not-an-id'"


@pytest.mark.parametrize("lax", ["yes", "true", 1, 0, "on"])
def test_a_boolean_is_true_or_false_nothing_else(settings: Settings, lax: Any) -> None:
    with Client(settings=settings) as local:
        token = local.init_admin("root").token.token
    with Client(settings=settings.model_copy(update={"token": token})) as root:
        http = raw_http(root)
        refused = http.post("/api/v1/users", json={"name": "bob", "is_admin": lax})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["type"] == "InvalidInput"
        created = http.post("/api/v1/users", json={"name": "bob", "is_admin": False})
        assert created.status_code == 201  # the refusal created nothing
        assert created.json()["user"]["is_admin"] is False


def test_every_boolean_of_every_request_body_is_strict(settings: Settings) -> None:
    app = create_app(settings)
    lax: list[str] = []
    for route in all_routes(app.routes):
        if isinstance(route, APIRoute) and route.body_field is not None:
            lax += _lax_booleans(route.body_field.field_info.annotation)
    assert lax == []


def _lax_booleans(annotation: Any, seen: set[type] | None = None) -> list[str]:
    """``Model.field`` for each bool a pydantic model (or one nested in it) would take
    from "yes" or 1."""
    seen = set() if seen is None else seen
    found: list[str] = []
    for arg in typing.get_args(annotation):
        found += _lax_booleans(arg, seen)
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return found
    if annotation in seen:
        return found
    seen.add(annotation)
    for name, field in annotation.model_fields.items():
        strict = any(isinstance(m, Strict) and m.strict for m in field.metadata)
        if bool in (field.annotation, *typing.get_args(field.annotation)) and not strict:
            found.append(f"{annotation.__name__}.{name}")
        found += _lax_booleans(field.annotation, seen)
    return found


def test_a_405_names_every_method_its_path_serves(client: Client, doc: dict[str, Any]) -> None:
    http = raw_http(client)
    templates = {
        re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"): {m.upper() for m in ops}
        for path, ops in doc["paths"].items()
    }
    for path in doc["paths"]:
        url = re.sub(r"\{[^}]+\}", "0123abcd", path)
        served = set().union(*(methods for t, methods in templates.items() if t.match(url)))
        for method in sorted(METHODS - served):
            response = http.request(method, url)
            assert response.status_code == 405, (method, url)
            assert set(response.headers["allow"].split(", ")) == served, (method, url)
            if method != "HEAD" and path.startswith("/mlflow/"):  # in MLflow's shape
                assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"
            elif method != "HEAD":
                assert response.json()["error"]["type"] == "MethodNotAllowed"
    # pages too: the login form is shown and posted to the same path
    assert raw_http(client).put("/login").headers["allow"] == "GET, POST"


def test_the_docs_page_loads_only_the_servers_own_files(client: Client) -> None:
    """Swagger UI from the package, started by a file: no CDN, no inline script."""
    http = raw_http(client)
    page = http.get("/api/v1/docs")
    assert page.status_code == 200
    assert 'data-openapi="/api/v1/openapi.json"' in page.text
    assert "://" not in page.text  # nothing from another site
    sources = re.findall(r"<script([^>]*)>", page.text)
    assert sources and all(re.fullmatch(r' src="/api/v1/docs/[\w.-]+"', s) for s in sources)
    policy = page.headers["content-security-policy"]  # the UI pages' own: nothing inline
    assert "default-src 'self';" in policy and "style-src 'self';" in policy
    for url in re.findall(r'(?:src|href)="(/api/v1/docs/[\w.-]+)"', page.text):
        assert http.get(url).status_code == 200, url
    assert "SwaggerUIBundle(" in http.get("/api/v1/docs/start.js").text
