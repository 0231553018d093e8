"""The HTTP surface of a real ``plinth server``, spoken to with ``http.client``.

No client-side library sits in between: request targets go on the wire exactly as
written here (no dot-segment removal, no re-encoding), as an attacker would send them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import Server, started

pytestmark = pytest.mark.slow

BODY_LIMIT = 10_000
TOKEN = f"escape-{uuid.uuid4().hex[:12]}"


def call(
    server: Server,
    method: str,
    target: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request; an iterator body goes out chunked, without Content-Length."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, target, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def call_json(server: Server, method: str, target: str, payload: Any) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    status, _, raw = call(server, method, target, body, {"Content-Type": "application/json"})
    return status, json.loads(raw) if raw else None


def error_type(raw: bytes) -> str:
    err = json.loads(raw)["error"]
    assert isinstance(err["message"], str) and err["message"]
    return str(err["type"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("http")
    with started(workdir) as processes:
        yield processes.server(workdir / "home", PLINTH_SERVER__MAX_REQUEST_BYTES=str(BODY_LIMIT))


def new_run(server: Server) -> str:
    status, run = call_json(server, "POST", "/api/v1/runs", {"project": "http"})
    assert status == 201, run
    return str(run["id"])


def home_files(server: Server) -> dict[str, int]:
    """Every file under the home but the database's own, with its size."""
    return {
        str(p.relative_to(server.home)): p.stat().st_size
        for p in server.home.rglob("*")
        if p.is_file() and not p.name.startswith("plinth.db")
    }


# artifact names that try to leave the run's namespace ---------------------------------

BAD_NAMES = [
    f"../{TOKEN}",
    f"../../../../../../tmp/{TOKEN}",
    f"a/../../{TOKEN}",
    f"./{TOKEN}",
    f"a//{TOKEN}",
    f"%2e%2e/{TOKEN}",
    f"%2E%2E%2F{TOKEN}",
    f"..%2f..%2f{TOKEN}",
    f"%252e%252e/{TOKEN}",
    f"%252e%252e%252f{TOKEN}",
    f"%25252e%25252e%25252f{TOKEN}",
    f"..\\{TOKEN}",
    f"a\\..\\..\\{TOKEN}",
    f"%5c..%5c{TOKEN}",
    f"%255c..%255c{TOKEN}",
    f"/tmp/{TOKEN}",
    f"%2ftmp%2f{TOKEN}",
    f"%252ftmp%252f{TOKEN}",
    f"C:/{TOKEN}",
    f"C:%5c{TOKEN}",
    f"{TOKEN}%00.txt",
    f"{TOKEN}%0a.txt",
]


def test_a_plain_name_uploads_and_downloads(server: Server) -> None:
    """The control: the same route takes a good name, so refusals below are real."""
    run_id = new_run(server)
    body = b"fine content"
    target = f"/api/v1/runs/{run_id}/artifacts/dir/model.txt"
    status, _, raw = call(server, "PUT", target, body)
    assert status == 201, raw
    assert json.loads(raw)["digest"] == hashlib.sha256(body).hexdigest()
    assert call(server, "GET", target)[::2] == (200, body)


def test_traversal_names_are_refused_and_write_nothing(server: Server) -> None:
    run_id = new_run(server)
    before = home_files(server)
    body = f"written by a traversal attempt {TOKEN}".encode()
    digest = hashlib.sha256(body).hexdigest()
    base = f"/api/v1/runs/{run_id}/artifacts/"
    accepted = []
    for name in BAD_NAMES:
        for method in ("PUT", "GET"):
            status, _, raw = call(server, method, base + name, body if method == "PUT" else None)
            if status not in (400, 404, 422):  # 422: a NUL (%00), refused for every route
                accepted.append((method, name, status, raw[:200]))
            else:
                assert error_type(raw) in ("InvalidInput", "NotFound", "Unprocessable"), raw
    assert not accepted, accepted

    # The JSON route names content by digest: the same names are refused there too.
    for name in ("../x", "a/../../x", "..\\x", "/etc/x", "C:\\x", "%2e%2e/x", "%252e%252e/x"):
        status, err = call_json(
            server, "POST", base.rstrip("/"), {"path": name, "digest": digest, "size": len(body)}
        )
        assert status == 400 and err["error"]["type"] == "InvalidInput", (name, err)

    status, _, raw = call(server, "GET", base.rstrip("/"))
    assert (status, json.loads(raw)) == (200, [])
    assert home_files(server) == before
    assert not [p for p in server.home.parent.rglob(f"*{TOKEN}*")]
    assert not Path(f"/tmp/{TOKEN}").exists()


# service endpoints -------------------------------------------------------------------------


def test_healthz(server: Server) -> None:
    status, _, raw = call(server, "GET", "/healthz")
    assert status == 200 and json.loads(raw)["status"] == "ok"


def test_metrics_count_requests(server: Server) -> None:
    call(server, "GET", "/healthz")
    status, headers, raw = call(server, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = raw.decode()
    assert "plinth_http_requests_total{" in text
    assert 'route="/healthz"' in text


def test_openapi_lists_the_runs_paths(server: Server) -> None:
    status, _, raw = call(server, "GET", "/api/v1/openapi.json")
    assert status == 200
    spec = json.loads(raw)
    assert spec["openapi"].startswith("3.")
    paths = set(spec["paths"])
    assert {
        "/api/v1/runs",
        "/api/v1/runs/search",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/batches",
        "/api/v1/runs/{run_id}/metrics",
        "/api/v1/runs/{run_id}/artifacts",
        "/api/v1/runs/{run_id}/artifacts/{path}",
    } <= paths


# limits and errors -------------------------------------------------------------------------


def _run_create(size: int) -> bytes:
    """A valid run-creation body of about ``size`` bytes."""
    return json.dumps({"project": "http", "tags": {"pad": "x" * (size - 40)}}).encode()


def test_body_over_the_limit_is_413(server: Server) -> None:
    json_headers = {"Content-Type": "application/json"}
    status, _, raw = call(
        server, "POST", "/api/v1/runs", _run_create(BODY_LIMIT - 500), json_headers
    )
    assert status == 201, raw

    big = _run_create(2 * BODY_LIMIT)
    status, _, raw = call(server, "POST", "/api/v1/runs", big, json_headers)
    assert status == 413 and error_type(raw) == "PayloadTooLarge"

    # Without Content-Length the limit holds while the body is read.
    chunks = iter([big[i : i + 1000] for i in range(0, len(big), 1000)])
    status, _, raw = call(server, "POST", "/api/v1/runs", chunks, json_headers)
    assert status == 413 and error_type(raw) == "PayloadTooLarge"

    run_id = new_run(server)
    batch = {
        "batch_id": uuid.uuid4().hex,
        "metrics": [{"key": "m", "value": 1.0, "step": i, "timestamp": 1.0} for i in range(500)],
    }
    status, err = call_json(server, "POST", f"/api/v1/runs/{run_id}/batches", batch)
    assert status == 413 and err["error"]["type"] == "PayloadTooLarge"

    # Artifact uploads stream to the store and have a limit of their own.
    target = f"/api/v1/runs/{run_id}/artifacts/big.bin"
    status, _, raw = call(server, "PUT", target, b"\0" * (3 * BODY_LIMIT))
    assert status == 201, raw


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("PATCH", ""),
        ("POST", "/heartbeat"),
        ("POST", "/batches"),
        ("GET", "/metrics?key=loss"),
        ("GET", "/artifacts"),
        ("GET", "/artifacts/model.bin"),
        ("PUT", "/artifacts/model.bin"),
    ],
)
def test_unknown_run_is_404_with_a_json_error(server: Server, method: str, suffix: str) -> None:
    bodies = {
        "PATCH": json.dumps({"status": "finished"}).encode(),
        "POST": json.dumps({"batch_id": uuid.uuid4().hex}).encode(),
        "PUT": b"content",
    }
    target = f"/api/v1/runs/{uuid.uuid4().hex}{suffix}"
    headers = {"Content-Type": "application/json"}
    status, headers, raw = call(server, method, target, bodies.get(method), headers)
    assert status == 404, raw
    assert headers["content-type"] == "application/json"
    assert error_type(raw) == "NotFound"


def test_unknown_route_is_404_with_a_json_error(server: Server) -> None:
    status, _, raw = call(server, "GET", "/api/v1/no-such-thing")
    assert status == 404 and error_type(raw) == "NotFound"
