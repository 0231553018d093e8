from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

import plinth
from plinth.client import Client
from tests.conftest import raw_http


def test_upload_download_file_and_directory(client: Client, project: str, tmp_path: Path) -> None:
    run = client.create_run(project)
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(3 << 20))
    folder = tmp_path / "plots"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    client.log_artifact(run.id, model)
    client.log_artifact(run.id, folder)
    listed = {a.path: a for a in client.list_artifacts(run.id)}
    assert set(listed) == {"model.bin", "plots/a.txt", "plots/sub/b.txt"}
    assert listed["model.bin"].digest == hashlib.sha256(model.read_bytes()).hexdigest()
    out = client.download_artifact(run.id, "model.bin", tmp_path / "out")
    assert out.read_bytes() == model.read_bytes()
    client.download_artifact(run.id, "plots", tmp_path / "out2")
    assert (tmp_path / "out2" / "plots" / "sub" / "b.txt").read_text() == "b"


def test_identical_content_is_stored_once(client: Client, project: str, tmp_path: Path) -> None:
    a, b = client.create_run(project), client.create_run(project)
    f = tmp_path / "same.bin"
    f.write_bytes(b"x" * 100_000)
    client.log_artifact(a.id, f)
    client.log_artifact(b.id, f, "copy.bin")
    blobs_root = client.settings.home / "artifacts" / "sha256"
    stored = [p for p in blobs_root.rglob("*") if p.is_file()]
    assert len(stored) == 1


def test_corrupted_blob_is_detected_on_download(
    client: Client, project: str, tmp_path: Path
) -> None:
    run = client.create_run(project)
    f = tmp_path / "m.bin"
    f.write_bytes(b"good" * 1000)
    client.log_artifact(run.id, f)
    [blob] = [p for p in (client.settings.home / "artifacts").rglob("*") if p.is_file()]
    blob.write_bytes(b"evil" * 1000)
    with pytest.raises(plinth.CorruptArtifact):
        client.download_artifact(run.id, "m.bin", tmp_path / "out")
    assert not (tmp_path / "out" / "m.bin").exists()
    assert list((tmp_path / "out").iterdir()) == []


BAD_NAMES = [
    "../escape",
    "a/../../b",
    "/etc/passwd",
    "a\\b",
    "a\x00b",
    "%2e%2e/x",
    "a/%2E%2E/%2e%2e/x",
    "%252e%252e/x",
    "a//b",
    "./a",
    "C:/x",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_artifact_names_are_refused_and_write_nothing(
    client: Client, project: str, tmp_path: Path, name: str
) -> None:
    run = client.create_run(project)
    before = sorted(p for p in tmp_path.rglob("*"))
    http = raw_http(client)
    from urllib.parse import quote

    # every character escaped, so no client-side normalisation hides the traversal
    response = http.put(
        f"/api/v1/runs/{run.id}/artifacts/{quote(name, safe='%')}", content=b"payload"
    )
    assert response.status_code in (400, 404, 422), response.text  # 422: a NUL
    assert response.json()["error"]["type"] in ("InvalidInput", "NotFound", "Unprocessable")
    with pytest.raises(plinth.InvalidInput):
        client.log_artifact(run.id, __file__, name)
    assert client.list_artifacts(run.id) == []
    artifacts = client.settings.home / "artifacts"
    assert not artifacts.exists() or not any(p.is_file() for p in artifacts.rglob("*"))
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", BAD_NAMES)
def test_artifact_path_rules(name: str) -> None:
    from plinth.tracking.schemas import check_artifact_path

    with pytest.raises(plinth.InvalidInput):
        check_artifact_path(name)


def test_upload_with_wrong_digest_is_refused(client: Client, project: str) -> None:
    run = client.create_run(project)
    response = raw_http(client).put(
        f"/api/v1/runs/{run.id}/artifacts/x.bin",
        content=b"hello",
        headers={"X-Plinth-Digest": "0" * 64},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "DigestMismatch"
    assert client.list_artifacts(run.id) == []


def test_register_unknown_digest_asks_for_upload(client: Client, project: str) -> None:
    run = client.create_run(project)
    with pytest.raises(plinth.BlobMissing):
        client.register_artifact(run.id, "x", "a" * 64, 1)


def test_upload_to_unknown_run_is_404(client: Client, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"z")
    with pytest.raises(plinth.NotFound):
        client.log_artifact("f" * 32, f)


def test_missing_local_file_is_a_clear_error(client: Client, project: str) -> None:
    run = client.create_run(project)
    with pytest.raises(plinth.InvalidInput, match="no such file"):
        client.log_artifact(run.id, "/nonexistent/file")


def test_oversized_json_body_is_413(settings, project: str) -> None:  # type: ignore[no-untyped-def]
    settings.server.max_request_bytes = 10_000
    with Client(settings=settings) as client:
        run = client.create_run(project)
        points = [{"key": "m", "value": 1.0, "step": i, "timestamp": 1.0} for i in range(1000)]
        with pytest.raises(plinth.PayloadTooLarge):
            client.log_batch(run.id, metrics=points)
        # chunked (no Content-Length) bodies are counted as they arrive
        body = (b'{"batch_id":"abcdefgh","metrics":[' + b" " * 20_000 + b"]}",)
        response = raw_http(client).post(
            f"/api/v1/runs/{run.id}/batches",
            content=iter(body),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert client.metric_history(run.id, "m") == []


def test_errors_are_json_with_type_and_message(client: Client) -> None:
    response = raw_http(client).get("/api/v1/runs/" + "0" * 32)
    assert response.status_code == 404
    assert response.json() == {"error": {"type": "NotFound", "message": f"no run {'0' * 32!r}"}}
    response = raw_http(client).post("/api/v1/runs", json={"project": 5})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "InvalidInput"
    assert isinstance(response, httpx.Response)


@pytest.mark.parametrize("raw", ["%ff%fe", "%c0%ae%c0%ae%c0%afx", "a/%80.txt", "%ef%bf%bd"])
def test_a_path_that_is_not_utf8_is_refused_not_replaced(
    client: Client, project: str, raw: str
) -> None:
    """Decoding a URL puts U+FFFD for each byte that is not UTF-8, so different names
    would be stored as one: refused (U+FFFD sent as itself too), and nothing stored."""
    run = client.create_run(project)
    response = raw_http(client).put(f"/api/v1/runs/{run.id}/artifacts/{raw}", content=b"x")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "InvalidInput"
    assert error["message"].startswith("artifact path is not valid UTF-8"), error
    assert client.list_artifacts(run.id) == []
    with pytest.raises(plinth.InvalidInput, match="not valid UTF-8"):
        client.log_artifact(run.id, __file__, "a\ufffd")


def test_every_route_naming_a_file_or_key_refuses_bytes_not_utf8(
    client: Client, project: str
) -> None:
    """One validator for paths (``check_artifact_path``) and one for keys: runs' files,
    model and dataset files, MLflow's artifacts, model version tags."""
    run = client.create_run(project)
    http = raw_http(client)
    models = f"/api/v1/projects/{project}/models/m/versions/1"
    mlflow = "/mlflow/api/2.0/mlflow"
    found = http.get(f"{mlflow}/experiments/get-by-name", params={"experiment_name": project})
    experiment = found.json()["experiment"]["experiment_id"]
    answers = [
        http.get(f"/api/v1/runs/{run.id}/artifacts/a%ff"),
        http.get(f"{models}/files/a%ff"),
        http.get(f"/api/v1/projects/{project}/datasets/d/versions/1/files/a%ff"),
        http.put(
            f"{mlflow}-artifacts/artifacts/{experiment}/{run.id}/artifacts/a%ff", content=b"x"
        ),
        http.put(f"{models}/tags/k%ff", json={"value": "v"}),
    ]
    for response in answers:
        assert response.status_code == 400, (response.url, response.text)
        assert "not valid UTF-8" in response.text, (response.url, response.text)


def test_a_name_holding_a_percent_sign_is_still_a_name(client: Client, project: str) -> None:
    """Only what was sent is held to UTF-8; the decoding that looks for an encoded
    traversal makes U+FFFD of a literal ``%ff`` itself."""
    run = client.create_run(project)
    response = raw_http(client).put(f"/api/v1/runs/{run.id}/artifacts/100%25ff.txt", content=b"x")
    assert response.status_code == 201, response.text
    assert [a.path for a in client.list_artifacts(run.id)] == ["100%ff.txt"]
