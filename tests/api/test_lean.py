"""The lean way to the hottest routes (api/lean.py) answers exactly as FastAPI does:
the same requests, sent once to the app as built and once to the same app without
its lean routes, get the same status and the same body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, FastAPI

from plinth.api import lean
from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.client import Client
from plinth.core.access import Permission
from plinth.server.app import create_app
from plinth.settings import Settings
from plinth.tracking.service import TrackingService
from tests.conftest import make_settings, raw_http

RUN_ID = "0123456789abcdef0123456789abcdef"
JSON = {"Content-Type": "application/json"}
Write = Annotated[Caller[TrackingService], caller(TrackingService, Permission.PROJECT_WRITE)]


def _without_lean(app: FastAPI) -> FastAPI:
    app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, lean.LeanRoute)]
    app.router._mark_routes_changed()
    return app


@pytest.fixture
def twins(own_settings: Settings) -> Iterator[dict[str, Any]]:
    """Two apps over one home, with a root's, a viewer's and an outsider's tokens and
    a run of project p."""
    settings = own_settings
    with Client(settings=settings) as anonymous:
        tokens = {"root": anonymous.init_admin("root").token.token}
    with Client(settings=settings.model_copy(update={"token": tokens["root"]})) as root:
        for name in ("viewer", "outsider"):
            tokens[name] = root.create_user(name).token.token
        run = root.create_run("p").id
        root.add_member("p", "viewer", "viewer")
    with Client(settings=settings) as first, Client(settings=settings) as second:
        _without_lean(second._transport._whole.app)
        yield {"lean": raw_http(first), "fastapi": raw_http(second), "tokens": tokens, "run": run}


def _same(twins: dict[str, Any], method: str, path: str, who: str = "root", **kw: Any) -> int:
    headers = {**kw.pop("headers", JSON), "Authorization": f"Bearer {twins['tokens'][who]}"}
    answers = [
        twins[way].request(method, path, headers=headers, **kw) for way in ("lean", "fastapi")
    ]
    (a, b) = [(r.status_code, _comparable(r)) for r in answers]
    assert a == b, (method, path, kw)
    return a[0]


def _comparable(response: Any) -> Any:
    body = response.json()
    if isinstance(body, dict):  # a made run differs in its id and times only
        body = {k: v for k, v in body.items() if k not in ("id", "name", "start_time", "end_time")}
    return body


def test_lean_routes_are_in_place(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "home"))
    taken = {
        (m, r.route.path)
        for r in app.router.routes
        if isinstance(r, lean.LeanRoute)
        for m in r.methods
    }
    assert taken == {
        ("POST", "/api/v1/runs"),
        ("PATCH", "/api/v1/runs/{run_id}"),
        ("POST", "/api/v1/runs/{run_id}/batches"),
    }


def test_runs_are_made_the_same(twins: dict[str, Any]) -> None:
    body = {"project": "p", "params": {"lr": 0.1}, "tags": {"t": "x"}}
    assert _same(twins, "POST", "/api/v1/runs", json=body) == 201
    assert _same(twins, "POST", "/api/v1/runs", content=b'{"project": "p"}') == 201


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b'{"project": 5}',
        b'{"project": "p", "params": {"": 1}}',
        b'{"project": "bad name!"}',
        b'{"id": "NOT-HEX", "project": "p"}',
        '{"project": "caf\xe9"}'.encode("latin-1"),  # not UTF-8
        json.dumps({"project": "p", "name": "x" * 300}).encode(),
    ],
)
def test_bad_bodies_are_refused_the_same(twins: dict[str, Any], content: bytes) -> None:
    assert _same(twins, "POST", "/api/v1/runs", content=content) in (400, 422)


def test_refusals_are_the_same(twins: dict[str, Any]) -> None:
    run = twins["run"]
    end = {"status": "finished"}
    batch = {"batch_id": "b0000001", "params": {"a": 1}}
    assert _same(twins, "POST", "/api/v1/runs", "viewer", json={"project": "p"}) == 403
    assert _same(twins, "POST", f"/api/v1/runs/{run}/batches", "viewer", json=batch) == 403
    assert _same(twins, "PATCH", f"/api/v1/runs/{run}", "outsider", json=end) == 404
    assert _same(twins, "PATCH", f"/api/v1/runs/{RUN_ID}", json=end) == 404
    assert _same(twins, "PATCH", f"/api/v1/runs/{run}", json={"status": "paused"}) == 400


def test_writes_land_once_either_way(twins: dict[str, Any]) -> None:
    run, root = twins["run"], {"Authorization": f"Bearer {twins['tokens']['root']}"}
    series = {"key": "m", "steps": [0], "values": [1.0], "timestamps": [1.0]}
    batch = {"batch_id": "b0000002", "metrics": [series]}
    path = f"/api/v1/runs/{run}/batches"
    sent = [twins[way].post(path, json=batch, headers=root) for way in ("lean", "fastapi", "lean")]
    assert [r.json() for r in sent] == [{"applied": True}, {"applied": False}, {"applied": False}]
    finished = twins["lean"].patch(f"/api/v1/runs/{run}", json={"status": "finished"}, headers=root)
    assert finished.status_code == 200
    assert (finished.json()["status"], finished.json()["metrics"]) == ("finished", {"m": 1.0})
    again = twins["fastapi"].patch(f"/api/v1/runs/{run}", json={"status": "finished"}, headers=root)
    assert _comparable(again) == _comparable(finished)


def test_other_requests_go_on_to_fastapi(twins: dict[str, Any]) -> None:
    form = {"headers": {"Content-Type": "text/plain"}, "content": b'{"project": "p"}'}
    assert _same(twins, "POST", "/api/v1/runs", **form) in (400, 422)
    assert _same(twins, "POST", "/api/v1/runs?x=1", json={"project": "p"}) == 201


def test_only_simple_routes_may_be_lean() -> None:
    router = APIRouter()

    @router.get("/things/{n}")
    @lean.lean
    async def numbered(n: int, c: Write) -> dict[str, int]:
        return {"n": n}

    app = FastAPI()
    app.include_router(router)
    with pytest.raises(TypeError, match="text"):
        lean.install(app)


def test_a_lean_route_may_not_take_what_an_earlier_route_answers() -> None:
    router = APIRouter()

    @router.post("/runs/{anything}")
    async def earlier() -> dict[str, str]:
        return {}

    @router.post("/runs/{run_id}", response_model=dict)
    @lean.lean
    async def later(run_id: str, c: Write) -> dict[str, str]:
        return {}

    app = FastAPI()
    app.include_router(router)
    with pytest.raises(TypeError, match="comes before"):
        lean.install(app)


def test_a_lean_route_may_not_sit_under_an_included_prefix() -> None:
    router = APIRouter()

    @router.post("/runs", response_model=dict)
    @lean.lean
    async def made(c: Write) -> dict[str, str]:
        return {}

    app = FastAPI()
    app.include_router(router, prefix="/api/v9")
    with pytest.raises(TypeError, match="prefix"):
        lean.install(app)


@pytest.mark.parametrize(
    "content", [b"[" * 100_000 + b"]" * 100_000, b'{"project": "p", "name": "\xff"}']
)
def test_a_body_that_cannot_be_parsed_is_a_400_either_way(
    twins: dict[str, Any], content: bytes
) -> None:
    assert _same(twins, "POST", "/api/v1/runs", content=content) == 400


def test_a_bad_body_is_refused_before_the_caller_is_known(twins: dict[str, Any]) -> None:
    twins["tokens"]["nobody"] = "plt_0000000000000000_unknown"
    assert _same(twins, "POST", "/api/v1/runs", "nobody", content=b"{") == 400
    assert _same(twins, "POST", "/api/v1/runs", "nobody", content=b"{}") == 401


def test_urls_are_still_made_by_route_name(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "home"))
    assert app.url_path_for("healthz") == "/healthz"
