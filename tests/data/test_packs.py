"""The pieces a push is made of, below the API: tar headers built by hand, and how the
files to read are cut into tasks. The round trips over the real store are in
``test_datasets.py``."""

from __future__ import annotations

import io
import tarfile

import pytest

from plinth.data import client as data_client
from plinth.data import packs


def _tarfiles(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


NAMES = [
    "0" * 64,  # a digest: what a push sends
    "x",
    "a" * 100,  # fills a ustar name
    "a" * 101,  # one more needs a pax header
    "données/été.csv",  # not ASCII: a pax header
    "dir/sub/file with spaces.parquet",
]
SIZES = [0, 1, 10_240, 8**11 - 1, 8**11]  # the last needs a pax header


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES)
def test_a_header_is_what_tarfile_writes(name: str, size: int) -> None:
    assert packs._header(name, size) == _tarfiles(name, size)


def test_a_written_stream_reads_back_with_tarfile_and_read_tar() -> None:
    members = [
        (name, len(name) * 3, (lambda n=name: [n.encode()[:1] * (len(n) * 3)])) for name in NAMES
    ]
    length, chunks = packs.write_tar(members)
    stream = b"".join(chunks)
    assert len(stream) == length
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as archive:
        assert [(m.name, m.size) for m in archive] == [(n, s) for n, s, _ in members]
    got = [(name, size, f.read()) for name, size, f in packs.read_tar([stream])]
    assert got == [(n, s, n.encode()[:1] * s) for n, s, _ in members]


def _source(path: str, size: int, local: bool) -> data_client.Source:
    where = f"/data/{path}" if local else f"s3://bucket/{path}"
    return data_client.Source(
        path=path,
        size=size,
        where=where,
        open=lambda: io.BytesIO(),
        local=where if local else None,
    )


def test_small_local_files_are_read_in_one_task_and_the_rest_in_many() -> None:
    small = [_source(f"f{i}.bin", 10_240, local=True) for i in range(1000)]
    assert [len(task) for task in data_client._tasks(small)] == [1000]

    remote = [_source(f"f{i}.bin", 10_240, local=False) for i in range(100)]
    assert [len(task) for task in data_client._tasks(remote)] == [32, 32, 32, 4]

    tables = [_source(f"t{i}.csv", 10_240, local=True) for i in range(40)]
    assert [len(task) for task in data_client._tasks(tables)] == [32, 8]

    big = [_source(f"b{i}.bin", 20 << 20, local=True) for i in range(5)]
    assert [len(task) for task in data_client._tasks(big)] == [2, 2, 1]

    assert data_client._tasks([]) == [[]]
    order = small[:3] + big + remote[:3]
    assert [s for task in data_client._tasks(order) for s in task] == order
