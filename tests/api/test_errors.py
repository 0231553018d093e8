"""The one error table: unexpected exceptions become JSON 500s, and nothing leaks."""

from __future__ import annotations

import logging
import subprocess
import sys

import httpx
import pytest
from fastapi import FastAPI

from plinth.api.errors import CatchAll, install_error_handlers
from plinth.client import Client


def test_an_unexpected_error_is_a_json_500_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(CatchAll)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret connection string postgresql://u:pw@db")

    @app.get("/fine")
    async def fine() -> dict[str, bool]:
        return {"ok": True}

    async def call() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return [await http.get("/boom"), await http.get("/fine")]

    import asyncio

    with caplog.at_level(logging.ERROR, logger="plinth.server"):
        boom_response, fine_response = asyncio.run(call())
    assert boom_response.status_code == 500
    assert boom_response.json() == {
        "error": {"type": "PlinthError", "message": "internal error; see the server log"}
    }
    assert "secret" not in boom_response.text
    assert "secret connection string" in caplog.text  # the operator still sees it
    assert fine_response.json() == {"ok": True}


def test_server_refuses_to_listen_beyond_loopback_without_auth(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [sys.executable, "-m", "plinth", "server", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PLINTH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 1
    assert "refusing to serve on 0.0.0.0 without authentication" in out.stderr
    assert "plinth admin init" in out.stderr


def test_no_route_takes_a_pickle(client: Client, project: str) -> None:
    """Every route that takes a body answers a pickle with 415 before reading it, and
    nothing is stored (the API never unpickles; the model server refuses it too)."""
    import pickle

    from fastapi.routing import APIRoute

    from plinth.api.context import all_routes
    from plinth.server.app import create_app
    from tests.conftest import raw_http

    run = client.create_run(project)
    before = client.get_run(run.id)
    http = raw_http(client)
    body = pickle.dumps({"project": project})
    routes = [
        (method, route.path_format)
        for route in all_routes(create_app(client.settings).routes)
        if isinstance(route, APIRoute)
        for method in route.methods
        if method in ("POST", "PUT", "PATCH")
    ]
    assert len(routes) > 20
    for kind in ("application/python-pickle", "application/x-pickle; protocol=5"):
        for method, path in routes:
            url = path.replace("{run_id}", run.id).replace("{project}", project)
            url = url.replace("{path:path}", "a.pkl").replace("{", "x").replace("}", "")
            answer = http.request(method, url, content=body, headers={"Content-Type": kind})
            assert answer.status_code == 415, (method, path, answer.text[:200])
            error = answer.json().get("error") or answer.json()  # MLflow's shape under /mlflow
            assert "never unpickled" in error["message"]
    assert client.get_run(run.id) == before
    assert client.list_artifacts(run.id) == []
