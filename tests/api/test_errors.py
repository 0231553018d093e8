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


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"project": ', "Expecting value at character 12"),
        (b"[" * 100_000 + b"]" * 100_000, "its arrays and objects nest too deeply"),
        (b'{"project": "caf\xe9"}', "it is not UTF-8 text (byte 16)"),
    ],
)
def test_a_body_that_is_not_json_is_invalid_input(
    client: Client, project: str, body: bytes, reason: str
) -> None:
    """As every other bad input: a 400 of type InvalidInput, saying what is wrong;
    the same from a lean route (``POST /runs``) and a FastAPI one."""
    from tests.conftest import raw_http

    http = raw_http(client)
    run = client.create_run(project)
    for path in ("/api/v1/runs", "/api/v1/runs/search", f"/api/v1/runs/{run.id}/batches"):
        answer = http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json() == {
            "error": {
                "type": "InvalidInput",
                "message": f"the request body is not valid JSON: {reason}",
            }
        }, path


def test_a_body_that_stops_arriving_is_a_request_timeout() -> None:
    """408, typed as the SDK's ``RequestTimeout``."""
    import asyncio
    from collections.abc import AsyncIterator

    from plinth.api.middleware import BodyLimit
    from plinth.errors import RequestTimeout, from_response

    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=1 << 20, declared=[], idle_seconds=0.05)

    @app.post("/things")
    async def things(thing: dict[str, int]) -> dict[str, int]:
        return thing

    async def stalling() -> AsyncIterator[bytes]:
        yield b'{"a": '
        await asyncio.sleep(5)
        yield b"1}"

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.post("/things", content=stalling())

    answer = asyncio.run(call())
    assert answer.status_code == 408
    error = answer.json()["error"]
    assert error == {
        "type": "RequestTimeout",
        "message": "no request bytes for 0.05 s; send faster or retry",
    }
    assert isinstance(from_response(error["type"], error["message"], 408), RequestTimeout)
