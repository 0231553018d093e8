"""Datasets from and into S3 (SeaweedFS, real): a push reads an ``s3://`` folder with
fsspec where the data lies, and the store behind the server is S3 too."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plinth.client import Client
from plinth.errors import InvalidInput
from tests.conftest import S3_KEY, S3_SECRET, make_settings

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_client(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> Iterator[Client]:
    settings = make_settings(
        tmp_path / "home",
        artifacts_url=f"s3://{s3_bucket}/store",
        s3={"endpoint_url": s3_endpoint, "access_key_id": S3_KEY, "secret_access_key": S3_SECRET},
    )
    with Client(settings=settings) as client:
        yield client


def test_a_push_reads_an_s3_folder_and_a_pull_brings_it_back(
    s3_client: Client, s3_fs: Any, s3_bucket: str, s3_endpoint: str, project: str, tmp_path: Path
) -> None:
    parquet = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "y": ["a", "b", "c", "d"]}), parquet)
    files = {"raw/train.parquet": parquet.getvalue(), "raw/sub/readme.txt": b"hello"}
    for name, content in files.items():
        s3_fs.pipe(f"{s3_bucket}/{name}", content)
    options = {
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": s3_endpoint},
        "skip_instance_cache": True,
    }
    v = s3_client.push_dataset(
        project, "churn", f"s3://{s3_bucket}/raw", storage_options=options, message="from s3"
    )
    assert (v.version, v.files, v.rows) == (1, 2, 4)
    listed = {f.path: f for f in s3_client.dataset_files(project, "churn@1")}
    assert set(listed) == {"raw/train.parquet", "raw/sub/readme.txt"}
    assert listed["raw/sub/readme.txt"].digest == hashlib.sha256(b"hello").hexdigest()
    table = listed["raw/train.parquet"].table
    assert table is not None and [c.name for c in table.columns] == ["id", "y"]
    again = s3_client.push_dataset(
        project, "churn", f"s3://{s3_bucket}/raw", storage_options=options
    )
    assert again.created is False

    s3_client.pull_dataset(project, "churn@1", tmp_path / "out")
    for name, content in files.items():
        assert (tmp_path / "out" / name).read_bytes() == content
    # the two small files were sent in one batch: they sit in the store once, in one
    # pack, and nothing else was stored
    stored = [p for p in s3_fs.find(f"{s3_bucket}/store") if "/tmp" not in p]
    assert [p.split("/store/")[1].split("/")[0] for p in stored] == ["packs"]
    assert s3_fs.size(stored[0]) == sum(len(c) for c in files.values())
    with pytest.raises(InvalidInput, match="no such"):
        s3_client.push_dataset(
            project, "churn", f"s3://{s3_bucket}/nothing", storage_options=options
        )
