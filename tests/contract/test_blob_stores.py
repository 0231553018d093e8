"""One contract suite for the blob store, passed by every backend: local disk and S3,
each plain and with the encryption layer (a project's sealed view) on top.

Each test sees the store through a ``Harness`` that can also list what the backend
really holds, so "nothing visible" is checked against the storage, not the store.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plinth.core.blobs import (
    CHUNK,
    Backend,
    BlobBatch,
    BlobStore,
    LocalBackend,
    Writer,
    open_store,
    part_size,
)
from plinth.core.crypto import MasterKey
from plinth.core.db import Database
from plinth.core.encrypted import ENC_PREFIX, Keyring, encrypted_store
from plinth.errors import CorruptArtifact, DigestMismatch, InvalidInput, NotFound
from tests.conftest import s3_options

MiB = 1 << 20
PROJECT = "0123456789abcdef0123456789abcdef"


@dataclass
class Harness:
    store: BlobStore
    objects: Callable[[], set[str]]  # every key the backend holds, relative to its root
    uploads: Callable[[], list[str]]  # multipart uploads in progress (S3; [] on disk)
    multipart: bool
    prefix: str = ""  # where the store's keys sit on the storage

    def key(self, digest: str) -> str:
        return self.prefix + BlobStore.key(digest)


def _local(tmp_path: Path) -> Harness:
    root = tmp_path / "blobs"

    def objects() -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    return Harness(open_store(str(root)), objects, list, multipart=False)


def _sealed(plain: Harness, tmp_path: Path) -> Harness:
    """The same storage seen through one project's encrypted store."""
    keyring = Keyring(Database(f"sqlite:///{tmp_path / 'keys.db'}"), MasterKey.generate())
    keyring.db.migrate()
    store = encrypted_store(plain.store, PROJECT, keyring)
    return Harness(store, plain.objects, plain.uploads, plain.multipart, f"{ENC_PREFIX}{PROJECT}/")


def _s3(endpoint: str, bucket: str, fs: Any) -> Harness:
    store = open_store(f"s3://{bucket}/blobs", **s3_options(endpoint))

    def objects() -> set[str]:
        # the whole bucket, not just the prefix: nothing may appear anywhere
        return {path.removeprefix(f"{bucket}/blobs/") for path in fs.find(bucket)}

    def uploads() -> list[str]:
        listed = fs.call_s3("list_multipart_uploads", Bucket=bucket)
        return [u["Key"] for u in listed.get("Uploads", [])]

    return Harness(store, objects, uploads, multipart=True)


@pytest.fixture(
    params=[
        "local",
        "local-sealed",
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("s3-sealed", marks=pytest.mark.s3),
    ]
)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    backend, _, sealed = str(request.param).partition("-")
    if backend == "local":
        plain = _local(tmp_path)
    else:
        plain = _s3(
            request.getfixturevalue("s3_endpoint"),
            request.getfixturevalue("s3_bucket"),
            request.getfixturevalue("s3_fs"),
        )
    return _sealed(plain, tmp_path) if sealed else plain


def chunked(data: bytes, size: int = 300_000) -> Iterator[bytes]:
    """Odd-sized chunks, so part boundaries never line up with them."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RecordingBackend:
    """Passes everything through and remembers which keys were opened for writing."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def open_write(self, key: str) -> Writer:
        self.writes.append(key)
        return self.inner.open_write(key)


# 13 MiB and a bit: on S3 a full 8 MiB part, then a tail uploaded on commit.
DATA = os.urandom(13 * MiB + 12_345)
DIGEST = sha256(DATA)


@pytest.mark.parametrize("expected", [DIGEST, None], ids=["digest-known", "digest-unknown"])
def test_round_trip_of_a_multi_megabyte_stream(harness: Harness, expected: str | None) -> None:
    info = harness.store.put(chunked(DATA), expected=expected)
    assert (info.digest, info.size) == (DIGEST, len(DATA))
    assert harness.store.exists(DIGEST)
    assert harness.store.size(DIGEST) == len(DATA)
    assert b"".join(harness.store.read(DIGEST)) == DATA
    assert harness.objects() == {harness.key(DIGEST)}
    assert harness.uploads() == []


def test_empty_blob_round_trip(harness: Harness) -> None:
    empty = sha256(b"")
    assert harness.store.put(iter([]), expected=empty).size == 0
    assert b"".join(harness.store.read(empty)) == b""
    assert harness.objects() == {harness.key(empty)}


def test_identical_content_is_stored_once(harness: Harness, tmp_path: Path) -> None:
    data = os.urandom(MiB)
    harness.store.put(chunked(data), expected=sha256(data))
    recording = RecordingBackend(harness.store.backend)
    store = BlobStore(recording)  # type: ignore[arg-type]
    assert store.put(chunked(data), expected=sha256(data)).digest == sha256(data)
    path = tmp_path / "same.bin"
    path.write_bytes(data)
    assert store.put_file(path).digest == sha256(data)
    assert recording.writes == []  # the stored blob is never rewritten
    assert store.put(chunked(data)).digest == sha256(data)
    assert [k.split("/")[0] for k in recording.writes] == ["tmp"]  # only the temp copy
    assert harness.objects() == {harness.key(sha256(data))}


def test_wrong_expected_digest_keeps_nothing(harness: Harness) -> None:
    wrong = sha256(b"something else")
    with pytest.raises(DigestMismatch):
        harness.store.put(chunked(DATA), expected=wrong)
    assert harness.objects() == set()
    assert harness.uploads() == []
    assert not harness.store.exists(wrong)
    assert not harness.store.exists(DIGEST)


def test_wrong_digest_for_stored_content_is_refused(harness: Harness) -> None:
    harness.store.put([b"stored"], expected=sha256(b"stored"))
    with pytest.raises(DigestMismatch):
        harness.store.put([b"not what was stored"], expected=sha256(b"stored"))
    assert b"".join(harness.store.read(sha256(b"stored"))) == b"stored"


class UploadKilled(Exception):
    pass


@pytest.mark.parametrize("expected", [DIGEST, None], ids=["digest-known", "digest-unknown"])
def test_stream_failing_midway_leaves_nothing(harness: Harness, expected: str | None) -> None:
    seen: dict[str, Any] = {}

    def killed_after_10_mib() -> Iterator[bytes]:
        yield from chunked(DATA[: 10 * MiB])
        # by now S3 has a multipart upload with a part in it, and no object
        seen["uploads"], seen["objects"] = harness.uploads(), harness.objects()
        raise UploadKilled

    with pytest.raises(UploadKilled):
        harness.store.put(killed_after_10_mib(), expected=expected)
    if harness.multipart:
        assert len(seen["uploads"]) == 1
        assert seen["objects"] == set()
    assert harness.uploads() == []  # aborted, and an aborted upload is no object
    assert harness.objects() == set()
    assert not harness.store.exists(DIGEST)


@pytest.mark.parametrize("damage", ["replaced", "truncated"])
def test_read_detects_corrupted_bytes(harness: Harness, damage: str) -> None:
    data = os.urandom(3 * MiB)
    digest = harness.store.put(chunked(data)).digest
    bad = data[:MiB] if damage == "truncated" else os.urandom(len(data))
    writer = harness.store.backend.open_write(BlobStore.key(digest))  # behind the store
    writer.write(bad)
    writer.commit()
    with pytest.raises(CorruptArtifact):
        b"".join(harness.store.read(digest))
    assert b"".join(harness.store.read(digest, verify=False)) == bad


def test_unknown_digest_is_not_found(harness: Harness) -> None:
    unknown = sha256(b"never stored")
    assert not harness.store.exists(unknown)
    with pytest.raises(NotFound):
        next(harness.store.read(unknown))
    with pytest.raises(NotFound):
        harness.store.size(unknown)


BAD_DIGESTS = [
    "",
    "abc",
    "A" * 64,
    "g" * 64,
    "a" * 63,
    "a" * 65,
    "a" * 64 + "\n",
    "sha256:" + "a" * 64,
    "../../" + "a" * 58,
    "aa/" + "a" * 61,
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_invalid_digests_are_refused(harness: Harness, digest: str) -> None:
    store = harness.store
    calls: list[Callable[[], object]] = [
        lambda: store.exists(digest),
        lambda: store.size(digest),
        lambda: next(store.read(digest)),
        lambda: store.delete(digest),
        lambda: store.put([b"x"], expected=digest),
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            call()
    assert harness.objects() == set()


def test_put_without_digest_promotes_the_temp_copy(harness: Harness) -> None:
    data = os.urandom(2 * MiB + 1)
    info = harness.store.put(chunked(data))
    assert (info.digest, info.size) == (sha256(data), len(data))
    assert harness.objects() == {harness.key(info.digest)}  # no tmp/ left
    assert b"".join(harness.store.read(info.digest)) == data


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_a_local_put_without_digest_renames_its_temp_copy(tmp_path: Path, sealed: bool) -> None:
    """On disk the bytes are written once: the temp copy is renamed to its digest's
    key, not read back and written again (which doubled the time of such a put)."""
    recording = RecordingBackend(open_store(str(tmp_path / "blobs")).backend)
    plain = Harness(BlobStore(recording), _local(tmp_path).objects, list, multipart=False)
    harness = _sealed(plain, tmp_path) if sealed else plain
    info = harness.store.put(chunked(DATA))
    assert info.digest == DIGEST
    assert [key.removeprefix(harness.prefix)[:4] for key in recording.writes] == ["tmp/"]
    assert harness.objects() == {harness.key(DIGEST)}
    assert b"".join(harness.store.read(DIGEST)) == DATA
    again = harness.store.put(chunked(DATA))  # already stored: its temp copy goes
    assert again.digest == DIGEST and harness.objects() == {harness.key(DIGEST)}


def test_a_local_store_whose_disk_fails_is_not_taken_for_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error is an error (readiness fails, a claim answers 503), never "no
    such blob"."""
    store = open_store(str(tmp_path / "blobs"))
    assert not store.exists(DIGEST)
    store.ping()
    real = os.stat

    def failing(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith(str(tmp_path / "blobs")):
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing)
    with pytest.raises(OSError):
        store.ping()
    with pytest.raises(OSError):
        store.exists(DIGEST)


def test_put_file(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(DATA)
    info = harness.store.put_file(path)
    assert (info.digest, info.size) == (DIGEST, len(DATA))
    assert b"".join(harness.store.read(DIGEST)) == DATA
    assert harness.objects() == {harness.key(DIGEST)}


STREAM_MiB = 64


def _stream(block: bytes) -> Iterator[bytes]:
    for i in range(STREAM_MiB):
        yield i.to_bytes(8, "big") + block[8:]  # a fresh 1 MiB chunk each time


def test_streams_in_bounded_memory(harness: Harness) -> None:
    block, digest = os.urandom(CHUNK), hashlib.sha256()
    for chunk in _stream(block):
        digest.update(chunk)
    harness.store.exists(digest.hexdigest())  # botocore loads its models (~13 MiB) once
    tracemalloc.start()
    try:
        harness.store.put(_stream(block), expected=digest.hexdigest())
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read = sum(len(chunk) for chunk in harness.store.read(digest.hexdigest()))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == STREAM_MiB * MiB
    # S3 holds about two 8 MiB parts while uploading; 64 MiB never sits in memory
    print(f"peak {put_peak / MiB:.1f} MiB putting, {read_peak / MiB:.1f} MiB reading")
    # An S3 upload holds ~3 parts of 8 MiB (s3fs's buffer, the part cut from it, and
    # asyncio's send buffer); a read holds its read-ahead block. Never the whole stream.
    # Sealed reads add a few segments of ciphertext and plaintext in flight.
    bound = STREAM_MiB * MiB // 2 + (4 * MiB if harness.prefix else 0)
    assert put_peak < bound, put_peak
    assert read_peak < bound, read_peak


def test_parts_grow_so_the_largest_s3_object_fits() -> None:
    """S3 allows 10,000 parts and 5 TiB per object; parts start at 8 MiB."""
    written, parts, size = 0, 0, 8 * MiB
    while written < 5 << 40:
        written += size
        parts += 1
        size = part_size(written, size)
    assert parts < 10_000
    assert part_size(8 * MiB, 8 * MiB) == 8 * MiB  # small uploads keep small parts


def test_a_batch_names_what_it_stored_whole_and_nothing_else(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every store, sealed or not: a batch's blobs read back once it ends; one whose
    bytes lie about their digest is not kept, the others are, even though the batch
    ends with that error; no temp file or upload is left."""
    monkeypatch.setattr(BlobBatch, "GROUP", 16)  # more than one group, quickly
    good = [os.urandom(2000 + i) for i in range(BlobBatch.GROUP + 5)]
    with pytest.raises(DigestMismatch), harness.store.batch() as batch:
        for data in good:
            batch.put([data], sha256(data))
        batch.put([b"not what it says"], sha256(b"something else"))
    for data in good:
        assert b"".join(harness.store.read(sha256(data))) == data
    assert not harness.store.exists(sha256(b"something else"))
    assert not any("tmp" in key for key in harness.objects())
    assert harness.uploads() == []
    with harness.store.batch() as batch:  # stored already: read, checked, not rewritten
        assert batch.put([good[0]], sha256(good[0])).size == len(good[0])
        with pytest.raises(DigestMismatch):
            batch.put([b"x"], sha256(good[1]))


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def plain_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    """The stores that hold packs: content sealed per project is a blob each."""
    if request.param == "local":
        return _local(tmp_path)
    return _s3(
        request.getfixturevalue("s3_endpoint"),
        request.getfixturevalue("s3_bucket"),
        request.getfixturevalue("s3_fs"),
    )


def test_a_pack_is_one_object_whose_spans_read_back(plain_harness: Harness) -> None:
    store = plain_harness.store
    blobs = [os.urandom(n) for n in (1, 1000, 3 * 1024 * 1024 + 7, 0, 500)]
    pack = store.open_pack()
    starts = [pack.add(b) for b in blobs]
    assert not store.pack_exists(pack.id)  # nothing is named before the commit
    pack.commit()
    assert store.pack_exists(pack.id)
    assert [k for k in plain_harness.objects() if "tmp" not in k] == [store.pack_key(pack.id)]
    for data, start in zip(blobs, starts, strict=True):
        assert b"".join(store.read_packed(pack.id, start, len(data))) == data
    with pytest.raises(CorruptArtifact, match="before its blob"):
        b"".join(store.read_packed(pack.id, starts[-1], len(blobs[-1]) + 1))
    with pytest.raises(NotFound):
        store.read_packed("0" * 32, 0, 1)
    with pytest.raises(ValueError, match="not a pack id"):
        store.read_packed("../" + "0" * 29, 0, 1)

    dropped = store.open_pack()
    dropped.add(b"never named")
    dropped.discard()
    store.open_pack().commit()  # nothing added: nothing written
    assert [k for k in plain_harness.objects() if "tmp" not in k] == [store.pack_key(pack.id)]
    assert not any("tmp" in key for key in plain_harness.objects())
    assert plain_harness.uploads() == []


def test_a_batch_whose_sync_fails_calls_nothing_it_staged_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(str(tmp_path / "blobs"))
    there = os.urandom(100)
    store.put([there], sha256(there))
    fresh = [os.urandom(200 + i) for i in range(3)]

    def fails() -> None:
        raise OSError(errno.EIO, "the disk failed")

    with pytest.raises(OSError), store.batch() as batch:
        batch.put([there], sha256(there))  # stored already: durable at once
        for data in fresh:
            batch.put([data], sha256(data))
        monkeypatch.setattr(store, "sync", fails)
    assert [i.digest for i in batch.durable] == [sha256(there)]
    assert not any(store.exists(sha256(d)) for d in fresh)


def test_a_local_batch_syncs_once_per_group_not_per_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(str(tmp_path / "blobs"))
    syncs: list[set[str]] = []
    real = LocalBackend.sync

    def counted(self: LocalBackend) -> None:
        # what is named when the filesystem is synced: never a blob written after
        syncs.append({p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()})
        real(self)

    monkeypatch.setattr(LocalBackend, "sync", counted)
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("a batch fsyncs nothing"))
    monkeypatch.setattr(BlobBatch, "GROUP", 64)
    blobs = [os.urandom(100) + bytes([i]) for i in range(BlobBatch.GROUP * 2 + 3)]
    with store.batch() as batch:
        for data in blobs:
            batch.put([data], sha256(data))
            if len(syncs) == 0:  # staged, not yet named
                assert not store.exists(sha256(data))
    named = [len([n for n in seen if not n.startswith(".tmp-")]) for seen in syncs]
    staged = [len([n for n in seen if n.startswith(".tmp-")]) for seen in syncs]
    # a sync per group (its blobs staged, none named yet), then one for the names
    assert (named, staged) == ([0, 64, 128, 131], [64, 64, 3, 0])
    assert all(store.exists(sha256(d)) for d in blobs)
    assert not [p for p in (tmp_path / "blobs").rglob(".tmp-*")]


def test_a_local_batch_also_syncs_once_its_group_holds_enough_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(str(tmp_path / "blobs"))
    syncs: list[int] = []
    real = LocalBackend.sync

    def counted(self: LocalBackend) -> None:
        syncs.append(len([p for p in (tmp_path / "blobs").rglob(".tmp-*")]))
        real(self)

    monkeypatch.setattr(LocalBackend, "sync", counted)
    monkeypatch.setattr(BlobBatch, "GROUP_BYTES", 1000)
    blobs = [os.urandom(400) + bytes([i]) for i in range(7)]  # 401 bytes each
    with store.batch() as batch:
        for data in blobs:
            batch.put([data], sha256(data))
    assert syncs == [3, 3, 1, 0]  # three make 1,203 bytes: a group; then the names
    assert all(store.exists(sha256(d)) for d in blobs)


def test_a_single_put_syncs_its_file_its_folder_and_a_new_folders_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(str(tmp_path / "blobs"))
    synced: list[str] = []
    fsync = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    digest = store.put([b"first"]).digest  # promoted from tmp/: a put of its own
    folder = tmp_path / "blobs" / "sha256" / digest[:2]
    assert str(folder) in synced and str(folder.parent) in synced  # new: its parent too
    synced.clear()
    again = b"second, in the same folder? only if the digests agree on two hex digits"
    store.put([again], expected=sha256(again))
    parent = tmp_path / "blobs" / "sha256" / sha256(again)[:2]
    assert str(parent) in synced
