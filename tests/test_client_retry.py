"""The SDK rides out an outage, never repeats what is not safe to repeat, and says in
one line when it cannot reach Plinth.

The retry rules are unit-tested over httpx's ``MockTransport`` (the transport logic
above the HTTP interface); the rest runs against the real parts: a ``plinth server``
killed and restarted, a closed port, ``python -m http.server``, the ``plinth`` CLI.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import plinth.client
from plinth import Client
from plinth.core.access import LOCAL
from plinth.core.platform import Platform
from plinth.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PlinthError,
    ServiceUnavailable,
    TooManyRequests,
)
from plinth.settings import ClientSettings
from plinth.tracking import history
from plinth.tracking import schemas as s
from plinth.tracking.service import TrackingService
from plinth.wire import KeepAlive
from tests.conftest import make_settings, raw_http
from tests.processes import REPO, child_env, started
from tests.services import free_port, wait_for_port

RUN = {"id": "a" * 32, "project": "p", "name": "n", "status": "running", "start_time": 1.0}
RUN |= {"end_time": None}
ARTIFACT = {"path": "m.bin", "digest": "0" * 64, "size": 1, "created_at": 1.0}
Handler = Callable[[httpx.Request, int], httpx.Response]


def _answer(request: httpx.Request) -> httpx.Response:
    """What a healthy Plinth answers to each call under test."""
    path, method = request.url.path, request.method
    if path.endswith("/heartbeat"):
        return httpx.Response(204)
    if path.endswith("/metrics"):
        body = history.to_binary(history.Columns([], [], []))
        return httpx.Response(200, content=body, headers={"Content-Type": history.MEDIA_TYPE})
    bodies: list[tuple[str, Any]] = [
        ("/batches", {"applied": True}),
        ("/search", {"runs": []}),
        ("/artifacts", [] if method == "GET" else ARTIFACT),
    ]
    body = next((b for suffix, b in bodies if path.endswith(suffix)), RUN)
    return httpx.Response(200, json=body)


def _unavailable(status: int = 503) -> httpx.Response:
    error = {"type": "ServiceUnavailable", "message": "the database is unavailable"}
    return httpx.Response(status, json={"error": error}, headers={"Retry-After": "5"})


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plinth.client, "BACKOFF_FIRST_S", 0.01)


@pytest.fixture
def mocked(tmp_path: Path, fast_backoff: None) -> Iterator[Callable[..., tuple[Client, list]]]:
    """``mocked(handler, retry_seconds)``: a remote client whose server is ``handler``,
    called with each request and its number; returns the client and the requests."""
    clients: list[Client] = []

    def make(handler: Handler, retry_seconds: float = 30.0) -> tuple[Client, list]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            request.read()
            return handler(request, len(seen))

        settings = make_settings(tmp_path).model_copy(
            update={
                "url": "http://plinth.test",
                "client": ClientSettings(retry_seconds=retry_seconds),
            }
        )
        client = Client(settings=settings)
        raw_http(client).close()
        client._transport.http = httpx.Client(
            base_url="http://plinth.test", transport=httpx.MockTransport(record)
        )
        client._transport._whole = None  # every request through the mock
        clients.append(client)
        return client, seen

    yield make
    for client in clients:
        client.close()


# 1. what is retried -----------------------------------------------------------------------

IDEMPOTENT_CALLS: dict[str, Callable[[Client], object]] = {
    "get_run": lambda c: c.get_run("r1"),
    "search_runs": lambda c: c.search_runs("p"),
    "metric_history": lambda c: c.metric_history("r1", "m"),
    "list_artifacts": lambda c: c.list_artifacts("r1"),
    "create_run": lambda c: c.create_run("p", "n", {"lr": 0.1}),
    "log_batch": lambda c: c.log_batch("r1", metrics=[{"key": "m", "value": 1.0}]),
    "end_run": lambda c: c.end_run("r1"),
    "heartbeat": lambda c: c.heartbeat("r1"),
    "register_artifact": lambda c: c.register_artifact("r1", "m.bin", "0" * 64, 1),
}


def _outage(request: httpx.Request, n: int) -> httpx.Response:
    """A server restart as a client sees it: errors of each kind, then answers."""
    if n == 3:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
    if n == 4:
        raise httpx.RemoteProtocolError("Server disconnected", request=request)
    return _unavailable({1: 503, 2: 502, 5: 504}[n]) if n <= 5 else _answer(request)


@pytest.mark.parametrize("call", IDEMPOTENT_CALLS.values(), ids=list(IDEMPOTENT_CALLS))
def test_idempotent_calls_retry_through_an_outage_sending_the_same_request(
    mocked: Callable[..., tuple[Client, list]], call: Callable[[Client], object]
) -> None:
    client, seen = mocked(_outage)
    call(client)
    assert len(seen) == 6
    assert len({(r.method, r.url, r.content) for r in seen}) == 1  # the same id, batch id…


def test_create_run_carries_a_fresh_client_id(mocked: Callable[..., tuple[Client, list]]) -> None:
    client, seen = mocked(lambda request, n: _answer(request))
    client.create_run("p")
    client.create_run("p")
    ids = [re.search(rb'"id":"([0-9a-f]+)"', r.content) for r in seen]
    assert all(m and len(m.group(1)) == 32 for m in ids)
    assert ids[0].group(1) != ids[1].group(1)  # type: ignore[union-attr]


def test_calls_that_are_not_idempotent_are_never_resent_blindly(
    mocked: Callable[..., tuple[Client, list]], tmp_path: Path
) -> None:
    client, seen = mocked(lambda request, n: _unavailable())
    with pytest.raises(ServiceUnavailable, match="the database is unavailable"):
        client._transport.request("POST", "/api/v1/tokens", json={"name": "t"})
    assert len(seen) == 1

    def lost_midway(request: httpx.Request, n: int) -> httpx.Response:
        if n == 2:  # sent, maybe applied, answer lost: sending again could double it
            raise httpx.ReadError("connection reset", request=request)
        return _answer(request)

    client, seen = mocked(lost_midway)
    client.get_run("r1")
    with pytest.raises(ServiceUnavailable, match="connection reset"):
        client._transport.request("POST", "/api/v1/tokens", json={})
    assert len(seen) == 2


def _upload_it(request: httpx.Request) -> httpx.Response | None:
    """The server's answer to naming content it does not hold yet: upload it."""
    if request.method == "POST" and request.url.path.endswith("/artifacts"):
        error = {"type": "BlobMissing", "message": "upload it"}
        return httpx.Response(404, json={"error": error})
    return None


def test_an_upload_is_sent_again_whole_through_an_outage_and_a_busy_answer(
    mocked: Callable[..., tuple[Client, list]], tmp_path: Path
) -> None:
    """An upload names its content by digest, and a name once committed keeps its
    content: sending it again is safe, so it is, from the file's first byte."""

    def flaky(request: httpx.Request, n: int) -> httpx.Response:
        if (missing := _upload_it(request)) is not None:
            return missing
        if n == 2:
            return _unavailable()
        if n == 3:  # the server restarted mid-body
            raise httpx.ReadError("connection reset", request=request)
        if n == 4:  # this principal's upload slots are all busy, for a second
            error = {"type": "TooManyRequests", "message": "uploads in progress"}
            return httpx.Response(429, json={"error": error}, headers={"Retry-After": "0"})
        return httpx.Response(200, json=ARTIFACT)

    client, seen = mocked(flaky)
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 100_000)
    client.log_artifact("r1", model)
    assert [r.method for r in seen] == ["POST", "PUT", "PUT", "PUT", "PUT"]
    assert {r.content for r in seen[1:]} == {model.read_bytes()}


def test_a_429_without_a_short_retry_after_is_not_waited_for(
    mocked: Callable[..., tuple[Client, list]], tmp_path: Path
) -> None:
    """Too many failed logins (no Retry-After), or a wait longer than the SDK's: the
    caller hears of it at once."""
    for headers in ({}, {"Retry-After": "60"}, {"Retry-After": "soon"}):

        def busy(request: httpx.Request, n: int, headers: dict[str, str] = headers) -> Any:
            if (missing := _upload_it(request)) is not None:
                return missing
            error = {"type": "TooManyRequests", "message": "wait a minute"}
            return httpx.Response(429, json={"error": error}, headers=headers)

        client, seen = mocked(busy)
        model = tmp_path / "model.bin"
        model.write_bytes(b"weights")
        with pytest.raises(TooManyRequests, match="wait a minute"):
            client.log_artifact("r1", model)
        assert [r.method for r in seen] == ["POST", "PUT"]


@contextmanager
def one_slot_held(client: Client, run_id: str, seconds: float) -> Iterator[None]:
    """The principal's only upload slot held by a stalled upload of the same principal
    for ``seconds`` from entry; the stalled upload itself lands after that."""
    sending, release, answers = threading.Event(), threading.Event(), []

    def stalled() -> Iterator[bytes]:
        yield b"x"
        sending.set()
        release.wait(10)
        yield b"y"

    def hold() -> None:
        headers = {"X-Plinth-Digest": hashlib.sha256(b"xy").hexdigest(), "Content-Length": "2"}
        url = f"/api/v1/runs/{run_id}/artifacts/stalled.bin"
        answers.append(raw_http(client).put(url, content=stalled(), headers=headers))

    holder = threading.Thread(target=hold)
    holder.start()
    assert sending.wait(10)
    timer = threading.Timer(seconds, release.set)
    timer.start()
    try:
        yield
    finally:
        release.set()
        holder.join()
        timer.cancel()
    assert answers[0].status_code == 201


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[Client]:
    """An embedded client whose server lets a principal run one upload at a time."""
    from plinth.settings import ServerSettings

    settings = make_settings(tmp_path / "home", server=ServerSettings(uploads_per_principal=1))
    with Client(settings=settings) as client:
        yield client


def test_an_upload_over_its_principals_limit_waits_its_turn(
    one_slot: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real server, its one slot held: the SDK's upload is answered 429 with
    Retry-After, waits, and lands whole once the slot is free."""
    run = one_slot.create_run("p")
    model = tmp_path / "model.bin"
    model.write_bytes(uuid.uuid4().bytes * 1000)
    began = time.monotonic()
    with one_slot_held(one_slot, run.id, 1.0):
        [stored] = one_slot.log_artifact(run.id, model)
    assert time.monotonic() - began >= 0.9  # it waited for the slot …
    assert "HTTP 429; retrying" in caplog.text  # … having been told to
    assert stored.size == model.stat().st_size
    assert {a.path for a in one_slot.list_artifacts(run.id)} == {"stalled.bin", "model.bin"}
    target = one_slot.download_artifact(run.id, "model.bin", tmp_path / "back")
    assert target.read_bytes() == model.read_bytes()


def test_a_push_over_its_principals_limit_waits_and_lands_whole(
    one_slot: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A push uploads several bodies at once (large files alone, small ones in
    batches): past the principal's limit they wait their turn rather than fail."""
    from plinth.data import client as data_client
    from plinth.data import packs

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data_client, "SMALL", 4096)
        patch.setattr(packs, "BATCH_FILES", 3)
        files = {f"s{i}.bin": uuid.uuid4().bytes * (i + 1) for i in range(7)}
        files |= {f"big{i}.bin": uuid.uuid4().bytes * 600 for i in range(3)}
        data = tmp_path / "data"
        data.mkdir()
        for name, content in files.items():
            (data / name).write_bytes(content)
        run = one_slot.create_run("p")
        with one_slot_held(one_slot, run.id, 1.0):
            version = one_slot.push_dataset("p", "churn", data)
    assert "HTTP 429; retrying" in caplog.text
    assert version.version == 1
    one_slot.pull_dataset("p", "churn", tmp_path / "out")
    for name, content in files.items():
        assert (tmp_path / "out" / "data" / name).read_bytes() == content


def test_a_request_that_never_left_is_sent_again_whatever_it_is(
    mocked: Callable[..., tuple[Client, list]],
) -> None:
    def refused_once(request: httpx.Request, n: int) -> httpx.Response:
        if n == 2:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return _answer(request)

    client, seen = mocked(refused_once)
    client.get_run("r1")
    client._transport.request("POST", "/api/v1/tokens", json={})
    assert [r.method for r in seen] == ["GET", "POST", "POST"]


def test_the_retry_window_is_a_setting_and_the_outage_is_logged_once(
    mocked: Callable[..., tuple[Client, list]], caplog: pytest.LogCaptureFixture
) -> None:
    client, seen = mocked(lambda request, n: _unavailable(), retry_seconds=1.0)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="plinth.client"):
        with pytest.raises(ServiceUnavailable, match="the database is unavailable"):
            client.get_run("r1")
        with pytest.raises(ServiceUnavailable):
            client.get_run("r1")
    assert 2.0 <= time.monotonic() - began < 10.0  # two windows of 1 s, not a minute
    assert len(seen) > 4
    retrying = [
        r.getMessage()
        for r in caplog.records
        if r.name == "plinth.client" and "retrying" in r.getMessage()
    ]
    assert retrying == ["plinth: Plinth at http://plinth.test: HTTP 503; retrying for up to 1 s"]


def test_the_default_window_outlasts_a_database_restart() -> None:
    assert ClientSettings().retry_seconds >= 60


# 2. a real server restart -----------------------------------------------------------------


@pytest.mark.slow
def test_the_sdk_rides_out_a_server_restart_without_losing_or_doubling(tmp_path: Path) -> None:
    with started(tmp_path) as processes:
        server = processes.server(tmp_path / "home")
        client = Client(url=server.url)
        run = client.create_run("restart")
        server.kill()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["run"] = client.get_run(run.id).id
                outcome["created"] = client.create_run("restart", "during").id
                batch = [{"key": "m", "value": 1.0, "step": 1}]
                outcome["applied"] = client.log_batch(run.id, metrics=batch, batch_id="b-000001")
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=work)
        worker.start()
        time.sleep(2)
        assert worker.is_alive(), outcome  # waiting for the server, not failed
        server.start()
        worker.join(timeout=60)
        assert "error" not in outcome, outcome
        assert outcome["run"] == run.id and outcome["applied"] is True
        assert sorted(r.name for r in client.search_runs("restart").runs) == sorted(
            [run.name, "during"]
        )
        assert len(client.metric_history(run.id, "m")) == 1
        client.close()


@pytest.mark.slow
def test_served_json_calls_keep_their_connections_and_drop_the_ones_a_server_closed(
    tmp_path: Path,
) -> None:
    with started(tmp_path) as processes:
        server = processes.server(tmp_path / "home")
        settings = make_settings(tmp_path / "sdk").model_copy(
            update={"url": server.url, "client": ClientSettings(retry_seconds=0)}
        )
        client = Client(settings=settings)  # no retries: a stale connection would show
        wire = client._transport._whole
        assert isinstance(wire, KeepAlive)
        run = client.create_run("wire")
        [conn] = wire._idle
        for _ in range(3):
            assert client.get_run(run.id).id == run.id
        assert wire._idle == [conn] and conn.sock is not None  # one connection, kept

        with ThreadPoolExecutor(4) as pool:  # concurrent callers: a connection each
            names = list(pool.map(lambda i: client.create_run("wire", f"r{i}").name, range(8)))
        assert sorted(names) == [f"r{i}" for i in range(8)]
        assert 1 <= len(wire._idle) <= 4

        server.kill()
        server.start()  # every kept connection is closed now, from the other end
        client.log_batch(run.id, metrics=[{"key": "m", "value": 1.0, "step": 0}])
        assert client.create_run("wire", "after").name == "after"
        assert len(client.metric_history(run.id, "m")) == 1
        with pytest.raises(NotFound):  # a path httpx must encode goes through httpx
            client._transport.request("GET", "/api/v1/runs/caf\u00e9")
        client.close()
        assert wire._idle == []


# 3. a create retried never makes a second run -----------------------------------------------


def test_creating_a_run_again_with_its_id_returns_it(client: Client, project: str) -> None:
    run_id = uuid.uuid4().hex
    first = client.create_run(project, "first", {"lr": 0.1}, id=run_id)
    again = client.create_run(project, "second", id=run_id)
    assert again.id == first.id == run_id
    assert again.name == "first" and again.params == {"lr": 0.1}
    assert [r.id for r in client.search_runs(project).runs] == [run_id]
    with pytest.raises(Conflict, match="is taken"):
        client.create_run(f"{project}-other", id=run_id)
    answer = raw_http(client).post("/api/v1/runs", json={"project": project, "id": "ABC"})
    assert answer.status_code == 400


def test_concurrent_creates_with_one_id_make_one_run(platform: Platform, project: str) -> None:
    service = TrackingService(platform)
    request = s.RunCreate(id=uuid.uuid4().hex, project=project)
    service.create_run(s.RunCreate(project=project), principal=LOCAL)  # the project exists
    barrier = threading.Barrier(4)
    made: list[str] = []

    def create() -> None:
        barrier.wait()
        made.append(service.create_run(request, principal=LOCAL).id)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert made == [request.id] * 4
    runs = service.search_runs(s.SearchQuery(project=project), principal=LOCAL).runs
    assert sum(r.id == request.id for r in runs) == 1


# 4. one line, naming the URL, for every connection problem -----------------------------------


def test_a_server_never_reached_is_reported_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with Client(url=url) as client, pytest.raises(ServiceUnavailable) as caught:
        client.get_run("r1")
    assert caught.value.message == f"cannot reach Plinth at {url}: connection refused"
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("url", ["localhost:8765", "ftp://host/x", "http://", "http://h:99999"])
def test_a_bad_url_is_refused_naming_it(url: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(f"not a Plinth server URL: {url!r}")):
        Client(url=url)


@pytest.fixture
def html_server(tmp_path: Path) -> Iterator[str]:
    """``python -m http.server``: a real server that is not Plinth."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _plinth(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plinth", *args],
        env=child_env(PLINTH_URL=url, COLUMNS="200"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_the_cli_names_the_url_in_one_line_for_each_connection_problem(html_server: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    cases = [
        (closed, ["runs", "show", "r1"], f"cannot reach Plinth at {closed}: connection refused"),
        (
            "localhost:8765",
            ["runs", "list", "-p", "x"],
            "not a Plinth server URL: 'localhost:8765'",
        ),
        (
            html_server,
            ["runs", "show", "r1"],
            f"{html_server} did not answer as a Plinth server (HTTP 404, text/html)",
        ),
        (
            html_server,
            ["runs", "list", "-p", "x"],
            f"{html_server} did not answer as a Plinth server (HTTP 501, text/html)",
        ),
    ]
    for url, args, message in cases:
        out = _plinth(url, *args)
        assert out.returncode == 1, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_a_non_plinth_answer_to_a_read_is_one_clear_error(html_server: str) -> None:
    with (
        Client(url=html_server) as client,
        pytest.raises(PlinthError, match="did not answer as a Plinth server"),
    ):
        client._transport.request("GET", "/")  # 200, but HTML
