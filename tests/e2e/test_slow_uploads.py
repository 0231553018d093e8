"""Slow uploads cannot starve a real ``plinth server``.

About forty uploads that each send one byte and stall used to hold every thread of
the pool the server shares: pages, static files and new uploads stopped answering.
Now an upload takes one of its principal's few slots (429 beyond them), runs on a
pool of its own, and a body that sends nothing for ``upload_idle_seconds`` is cut
off (408), leaving nothing behind.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plinth.client import Client
from plinth.settings import ServerSettings
from tests.conftest import make_settings
from tests.processes import Processes, Server

pytestmark = pytest.mark.slow

STALLED = 40
SLOTS = ServerSettings().uploads_per_principal  # the default cap: 8 uploads at once
IDLE_SECONDS = 8.0
PROMPT = 2.5  # "promptly" on a busy 2-core CI machine; a starved request waits IDLE_SECONDS


@dataclass
class Home:
    path: Path
    attacker: str  # tokens
    other: str
    attacker_run: str
    other_run: str


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    """A home with an admin and two users, each with a run of their own."""
    path = tmp_path / "home"
    with Client(settings=make_settings(path)) as local:
        root = local.init_admin("root").token.token
    tokens, runs = [], []
    with Client(settings=make_settings(path).model_copy(update={"token": root})) as admin:
        for name in ("attacker", "other"):
            tokens.append(admin.create_user(name).token.token)
    for token in tokens:
        with Client(settings=make_settings(path).model_copy(update={"token": token})) as user:
            runs.append(user.create_run(f"uploads-of-{token[4:12]}").id)
    yield Home(path, tokens[0], tokens[1], runs[0], runs[1])


def stall(server: Server, token: str, run_id: str, name: str) -> socket.socket:
    """Start an upload of a megabyte, send one byte of it, and send nothing more."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"PUT /api/v1/runs/{run_id}/artifacts/{name} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {1 << 20}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"x")
    return sock


def wait_for_answers(
    socks: list[socket.socket], count: int, deadline: float
) -> list[socket.socket]:
    """Wait until ``count`` of ``socks`` have an answer to read (or the deadline)."""
    ready: list[socket.socket] = []
    while len(ready) < count and time.monotonic() < deadline:
        waiting = [s for s in socks if s not in ready]
        ready += select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))[0]
    return ready


def status_of(sock: socket.socket, timeout: float) -> int:
    """The status the server answered on ``sock``, waiting up to ``timeout``."""
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)  # type: ignore[arg-type]
    try:
        response.begin()
        return response.status
    finally:
        sock.close()


def request(
    server: Server, method: str, path: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, float, bytes]:
    """Status, seconds taken and body, for a request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, time.monotonic() - started, response.read()
    finally:
        conn.close()


def partial_files(home: Path) -> list[str]:
    """Unfinished uploads: a writer's temp file, or content not yet promoted (tmp/)."""
    root = home / "artifacts"
    found = []
    for folder, _, names in os.walk(root):
        unpromoted = Path(folder).relative_to(root).parts[:1] == ("tmp",)
        found += [n for n in names if unpromoted or n.startswith(".tmp-")]
    return found


def test_stalled_uploads_leave_pages_files_api_and_other_uploads_answering(
    processes: Processes, home: Home
) -> None:
    server = processes.server(home.path, PLINTH_SERVER__UPLOAD_IDLE_SECONDS=str(IDLE_SECONDS))
    began = time.monotonic()
    stalled = [
        stall(server, home.attacker, home.attacker_run, f"slow-{i}.bin") for i in range(STALLED)
    ]
    refused_at_once = wait_for_answers(stalled, STALLED - SLOTS, deadline=began + IDLE_SECONDS)
    assert len(refused_at_once) == STALLED - SLOTS  # the rest hold every slot they may

    upload = f"/api/v1/runs/{home.other_run}/artifacts/quick.bin"
    answers = {
        **everything_else(server, home),
        "another principal's upload": request(server, "PUT", upload, home.other, b"quick"),
    }
    assert time.monotonic() - began < IDLE_SECONDS, "the checks ran after the stalls ended"
    assert_prompt(answers, {"another principal's upload": 201})

    statuses = [status_of(sock, timeout=IDLE_SECONDS + 10) for sock in stalled]
    assert sorted(statuses) == [408] * SLOTS + [429] * (STALLED - SLOTS), statuses
    assert time.monotonic() - began < IDLE_SECONDS + 5, "a stalled upload was not cut off"
    path = f"/api/v1/runs/{home.attacker_run}/artifacts"
    status, _, listed = request(server, "GET", path, home.attacker)
    assert (status, json.loads(listed)) == (200, [])
    assert partial_files(home.path) == []


def test_a_full_upload_pool_leaves_pages_files_and_api_answering(
    processes: Processes, home: Home
) -> None:
    """Pages and static files do not share the upload pool: with every upload thread
    held by a stalled body (a cap raised to let one principal do it), they answer."""
    server = processes.server(
        home.path,
        PLINTH_SERVER__UPLOAD_IDLE_SECONDS=str(IDLE_SECONDS),
        PLINTH_SERVER__UPLOADS_PER_PRINCIPAL=str(STALLED),
        PLINTH_SERVER__UPLOAD_THREADS=str(STALLED),  # as many as anyio's shared pool has
    )
    began = time.monotonic()
    stalled = [
        stall(server, home.attacker, home.attacker_run, f"slow-{i}.bin") for i in range(STALLED)
    ]
    time.sleep(0.5)  # no answer comes back to wait for: every upload holds a thread
    answers = everything_else(server, home)
    assert time.monotonic() - began < IDLE_SECONDS, "the checks ran after the stalls ended"
    assert_prompt(answers, {})
    statuses = [status_of(sock, timeout=IDLE_SECONDS + 10) for sock in stalled]
    assert statuses == [408] * STALLED
    assert partial_files(home.path) == []


def everything_else(server: Server, home: Home) -> dict[str, tuple[int, float, bytes]]:
    return {
        "the projects page": request(server, "GET", "/", home.other),
        "a static file": request(server, "GET", "/ui/static/style.css"),
        "the API": request(server, "GET", f"/api/v1/runs/{home.other_run}", home.other),
    }


def assert_prompt(answers: dict[str, tuple[int, float, bytes]], statuses: dict[str, int]) -> None:
    expected = {"the projects page": 200, "a static file": 200, "the API": 200, **statuses}
    assert {what: answer[0] for what, answer in answers.items()} == expected
    late = {what: round(answer[1], 2) for what, answer in answers.items() if answer[1] > PROMPT}
    assert late == {}, f"answered late while {STALLED} uploads stalled: {late}"
