"""Artifacts on S3, end to end through the SDK: the same calls, content-addressed keys."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.client import Client
from tests.conftest import S3_KEY, S3_SECRET, make_settings, raw_http

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_client(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> Iterator[Client]:
    settings = make_settings(
        tmp_path / "home",
        artifacts_url=f"s3://{s3_bucket}/prefix",
        s3={"endpoint_url": s3_endpoint, "access_key_id": S3_KEY, "secret_access_key": S3_SECRET},
    )
    with Client(settings=settings) as client:
        yield client


def test_artifact_round_trip_under_a_content_addressed_key(
    s3_client: Client, s3_fs: Any, s3_bucket: str, project: str, tmp_path: Path
) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(3 << 20))
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    first, second = s3_client.create_run(project), s3_client.create_run(project)
    [artifact] = s3_client.log_artifact(first.id, model)
    s3_client.log_artifact(second.id, model, "copy.bin")
    assert artifact.digest == digest
    out = s3_client.download_artifact(first.id, "model.bin", tmp_path / "out")
    assert out.read_bytes() == model.read_bytes()
    # stored once, under its digest, and nothing else in the bucket (no tmp/ objects)
    assert s3_fs.find(s3_bucket) == [f"{s3_bucket}/prefix/sha256/{digest[:2]}/{digest[2:]}"]


def test_corrupted_object_is_detected_on_download(
    s3_client: Client, s3_fs: Any, s3_bucket: str, project: str, tmp_path: Path
) -> None:
    run = s3_client.create_run(project)
    f = tmp_path / "m.bin"
    f.write_bytes(b"good" * 1000)
    [artifact] = s3_client.log_artifact(run.id, f)
    d = artifact.digest
    s3_fs.pipe(f"{s3_bucket}/prefix/sha256/{d[:2]}/{d[2:]}", b"evil" * 1000)
    with pytest.raises(plinth.CorruptArtifact):
        s3_client.download_artifact(run.id, "m.bin", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_mlflow_multipart_upload_on_s3_leaves_only_its_artifact(
    s3_client: Client, s3_fs: Any, s3_bucket: str, project: str
) -> None:
    """MLflow's multipart upload: its parts wait in the bucket under tmp/, are joined
    into one content-addressed object, and are gone after (abort too)."""
    http = raw_http(s3_client)
    api = "/mlflow/api/2.0/mlflow"
    experiment = http.post(f"{api}/experiments/create", json={"name": project}).json()
    run = http.post(f"{api}/runs/create", json={"experiment_id": experiment["experiment_id"]})
    folder = f"{experiment['experiment_id']}/{run.json()['run']['info']['run_id']}/artifacts"
    mpu = "/mlflow/api/2.0/mlflow-artifacts/mpu"
    parts = [os.urandom(1 << 20), os.urandom(1 << 20), b"tail"]
    made = http.post(f"{mpu}/create/{folder}", json={"path": "big.bin", "num_parts": 3}).json()
    etags = [
        http.put(c["url"], content=p).headers["ETag"]
        for c, p in zip(made["credentials"], parts, strict=True)
    ]
    staged = [k for k in s3_fs.find(s3_bucket) if "/tmp/mpu-" in k]
    assert len(staged) == 3  # the parts, waiting
    listed = [{"part_number": n + 1, "etag": e} for n, e in enumerate(etags)]
    done = http.post(
        f"{mpu}/complete/{folder}",
        json={"path": "big.bin", "upload_id": made["upload_id"], "parts": listed},
    )
    assert done.status_code == 200, done.text
    whole = b"".join(parts)
    digest = hashlib.sha256(whole).hexdigest()
    assert http.get(f"/mlflow/api/2.0/mlflow-artifacts/artifacts/{folder}/big.bin").content == whole
    dropped = http.post(f"{mpu}/create/{folder}", json={"path": "x.bin", "num_parts": 1}).json()
    http.put(dropped["credentials"][0]["url"], content=b"never named")
    aborted = {"path": "x.bin", "upload_id": dropped["upload_id"]}
    assert http.post(f"{mpu}/abort/{folder}", json=aborted).status_code == 200
    assert s3_fs.find(s3_bucket) == [f"{s3_bucket}/prefix/sha256/{digest[:2]}/{digest[2:]}"]
