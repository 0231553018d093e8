"""Content is shared underneath but never across projects, and a committed name is
immutable. Each test here failed before the kernel's artifact storage."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.client import Client
from plinth.settings import Settings
from tests.conftest import raw_http

SECRET = b"project B's model weights, which A must never read" * 100


@pytest.fixture
def two_tenants(own_settings: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Users a and b, each the only member of a project of their own; b holds SECRET."""
    settings = own_settings
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        tokens = {name: root.create_user(name).token.token for name in ("a", "b")}
    with as_user(tokens["a"]) as a, as_user(tokens["b"]) as b:
        secret = tmp_path / "secret.bin"
        secret.write_bytes(SECRET)
        b_run = b.create_run("b-project")
        b.log_artifact(b_run.id, secret)
        yield {"a": a, "b": b, "a_run": a.create_run("a-project").id, "b_run": b_run.id}


def test_knowing_a_digest_does_not_get_another_projects_bytes(
    two_tenants: dict[str, Any], tmp_path: Path
) -> None:
    a: Client = two_tenants["a"]
    run = two_tenants["a_run"]
    digest = hashlib.sha256(SECRET).hexdigest()
    with pytest.raises(plinth.BlobMissing):  # the same answer as for content nobody has
        a.register_artifact(run, "stolen.bin", digest, len(SECRET))
    with pytest.raises(plinth.BlobMissing):
        a.register_artifact(run, "nothing.bin", "e" * 64, len(SECRET))
    empty = raw_http(a).put(
        f"/api/v1/runs/{run}/artifacts/stolen.bin",
        content=b"",
        headers={"X-Plinth-Digest": digest, "Content-Type": "application/octet-stream"},
    )
    assert empty.status_code == 400 and empty.json()["error"]["type"] == "DigestMismatch"
    assert a.list_artifacts(run) == []


def test_sending_the_bytes_proves_them_and_stays_deduplicated(
    two_tenants: dict[str, Any], tmp_path: Path
) -> None:
    a: Client = two_tenants["a"]
    mine = tmp_path / "mine.bin"
    mine.write_bytes(SECRET)  # a holds the same bytes: sending them is no leak
    [artifact] = a.log_artifact(two_tenants["a_run"], mine)
    assert artifact.digest == hashlib.sha256(SECRET).hexdigest()
    out = a.download_artifact(two_tenants["a_run"], "mine.bin", tmp_path / "out")
    assert out.read_bytes() == SECRET
    second = a.create_run("a-project")
    a.register_artifact(second.id, "again.bin", artifact.digest, artifact.size)  # now a's


def test_a_committed_artifact_is_immutable(client: Client, project: str, tmp_path: Path) -> None:
    run = client.create_run(project)
    first, other = tmp_path / "v1.bin", tmp_path / "v2.bin"
    first.write_bytes(b"version one")
    other.write_bytes(b"version two")
    client.log_artifact(run.id, first, "model.bin")
    client.log_artifact(run.id, first, "model.bin")  # the same content again: fine
    with pytest.raises(plinth.Conflict, match="immutable"):
        client.log_artifact(run.id, other, "model.bin")
    digest = hashlib.sha256(b"version two").hexdigest()
    with pytest.raises(plinth.Conflict):
        client.register_artifact(run.id, "model.bin", digest, len(b"version two"))
    [kept] = client.list_artifacts(run.id)
    assert kept.digest == hashlib.sha256(b"version one").hexdigest()


def test_downloads_are_attachments_in_a_sandbox(
    client: Client, project: str, tmp_path: Path
) -> None:
    run = client.create_run(project)
    page = tmp_path / "report.html"
    page.write_text("<script>alert(document.cookie)</script>")
    client.log_artifact(run.id, page)
    response = raw_http(client).get(f"/api/v1/runs/{run.id}/artifacts/report.html")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith('attachment; filename="report.html"')
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["content-type"] == "application/octet-stream"


def test_secrets_never_create_a_project(client: Client) -> None:
    with pytest.raises(plinth.NotFound):
        client.set_secret("no-such-project", "KEY", "value")
    assert "no-such-project" not in [p.name for p in client.list_projects()]
