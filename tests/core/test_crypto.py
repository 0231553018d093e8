"""Encryption at rest: master keys, wrapped data keys, the sealed stream format, the
keyring (SQLite and Postgres) and a project's encrypted blob store (disk and S3)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from plinth.core.blobs import BlobInfo, BlobStore, open_store
from plinth.core.crypto import (
    HEADER_SIZE,
    SEGMENT,
    TAG,
    DataKey,
    MasterKey,
    decrypt_stream,
    encrypt_stream,
    load_master_key,
    plaintext_size,
    unwrap,
    wrap,
)
from plinth.core.db import Database, metadata
from plinth.core.encrypted import ENC_PREFIX, Keyring, data_keys, encrypted_store
from plinth.errors import CorruptArtifact, DigestMismatch, InvalidInput, PermissionDenied
from tests import services
from tests.conftest import s3_options

MARKER = b"PLAINTEXT-MARKER-0123456789:"  # what must never be seen on the storage


def marked(size: int, salt: bytes = b"") -> bytes:
    return ((salt + MARKER) * (size // len(MARKER) + 1))[:size]


def chunked(data: bytes, size: int = 300_001) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


KEY = DataKey(1, os.urandom(32))
AAD = b"plinth blob\0project-1"
DATA = marked(3 * SEGMENT + SEGMENT // 2)  # three full segments, then half of one
A, B, C = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
P1, P2, P3 = "0123456789abcdef0123456789abcdef", "project-2", "project_3"


def seal(data: bytes, key: DataKey = KEY, aad: bytes = AAD, chunk: int = 300_001) -> bytes:
    return b"".join(encrypt_stream(key, chunked(data, chunk), aad))


def opened(sealed: Iterable[bytes], key: DataKey = KEY, aad: bytes = AAD) -> Iterator[bytes]:
    return decrypt_stream(lambda version: {key.version: key.secret}[version], sealed, aad)


# -- master keys and wrapping --------------------------------------------------------


def test_master_key_text_round_trip_and_id() -> None:
    key = MasterKey.generate()
    assert MasterKey.from_text(key.to_text()) == key
    assert MasterKey.from_text(f"  {key.to_text()}\n") == key  # as a key file holds it
    assert re.fullmatch(r"[0-9a-f]{8}", key.key_id)
    assert key.key_id != MasterKey.generate().key_id
    assert key.to_text() not in repr(key) and key.key_id in repr(key)
    assert repr(KEY) == "DataKey(version=1)"  # no secret in a log or a traceback


@pytest.mark.parametrize(
    "text",
    ["", "not base64!", base64.b64encode(b"k" * 31).decode(), base64.b64encode(b"k" * 33).decode()],
)
def test_a_malformed_master_key_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="32 bytes"):
        MasterKey.from_text(text)


def test_master_key_from_a_value_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text(A.to_text() + "\n")
    assert load_master_key(A.to_text()) == A
    assert load_master_key(path=path) == A
    assert load_master_key() is None  # encryption off
    with pytest.raises(InvalidInput, match="not both"):
        load_master_key(A.to_text(), path)
    with pytest.raises(InvalidInput, match="cannot read the master key file"):
        load_master_key(path=tmp_path / "missing.key")


def test_a_wrapped_key_opens_only_with_its_master_and_binding() -> None:
    secret = os.urandom(32)
    wrapped = wrap(A, secret, b"project-1")
    assert secret not in wrapped
    assert unwrap(A, wrapped, b"project-1") == secret
    with pytest.raises(PermissionDenied, match=f"wrapped by key {A.key_id}"):
        unwrap(B, wrapped, b"project-1")
    with pytest.raises(CorruptArtifact):
        unwrap(A, wrapped, b"project-2")  # moved to another project
    with pytest.raises(CorruptArtifact):
        unwrap(A, flip(wrapped, len(wrapped) - 1), b"project-1")


# -- the sealed stream ---------------------------------------------------------------

SIZES = [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, len(DATA)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("chunk", [1 << 30, 4099, 999_983, 2 * SEGMENT + 7])
def test_stream_round_trip(size: int, chunk: int) -> None:
    data = os.urandom(size)
    sealed = seal(data, chunk=chunk)
    assert len(sealed) == HEADER_SIZE + size + TAG * (size // SEGMENT + 1)
    assert plaintext_size(len(sealed)) == size
    assert b"".join(opened(chunked(sealed, 65_537))) == data


def test_chunks_of_any_size_including_empty_ones() -> None:
    sizes = iter([0, 1, 0, 17, SEGMENT - 18, 0, SEGMENT, 3, 2 * SEGMENT] * 10)

    def ragged(data: bytes) -> Iterator[bytes]:
        i = 0
        while i < len(data):
            n = next(sizes)
            yield data[i : i + n]
            i += n

    sealed = b"".join(encrypt_stream(KEY, ragged(DATA), AAD))
    assert b"".join(opened(ragged(sealed))) == DATA
    assert b"".join(opened(iter([sealed]))) == DATA


def test_ciphertext_does_not_contain_the_plaintext() -> None:
    sealed = seal(DATA)
    assert MARKER not in sealed
    assert seal(DATA) != sealed  # a fresh salt each time: equal plaintexts look unrelated


FULL = SEGMENT + TAG
SEALED = seal(DATA)
OTHER = seal(DATA)  # the same plaintext sealed again, under the same key


def parts(sealed: bytes) -> list[bytes]:
    """Header, then each segment."""
    body = range(HEADER_SIZE, len(sealed), FULL)
    return [sealed[:HEADER_SIZE], *(sealed[i : i + FULL] for i in body)]


H, S0, S1, S2, S3 = parts(SEALED)
_, _, O1, _, _ = parts(OTHER)
TAMPERED = {
    "byte flipped in a segment": flip(SEALED, HEADER_SIZE + FULL + 100),
    "byte flipped in a tag": flip(SEALED, HEADER_SIZE + FULL - 1),
    "byte flipped in the salt": flip(SEALED, HEADER_SIZE - 1),
    "key version changed": flip(SEALED, 8),
    "unknown format": flip(SEALED, 4),
    "not encrypted at all": DATA,
    "empty": b"",
    "header only": H,
    "last segment dropped": H + S0 + S1 + S2,
    "middle segment dropped": H + S0 + S2 + S3,
    "cut inside a segment": SEALED[:-1000],
    "last byte cut": SEALED[:-1],
    "segments swapped": H + S1 + S0 + S2 + S3,
    "segment appended": SEALED + S1,
    "byte appended": SEALED + b"\0",
    "segment from another blob": H + S0 + O1 + S2 + S3,
    "header from another blob": parts(OTHER)[0] + SEALED[HEADER_SIZE:],
}


@pytest.mark.parametrize("damage", TAMPERED)
def test_tampering_is_an_error_never_garbage(damage: str) -> None:
    got = bytearray()
    with pytest.raises(CorruptArtifact):
        for piece in decrypt_stream(lambda _: KEY.secret, chunked(TAMPERED[damage]), AAD):
            got += piece
    assert DATA.startswith(got)  # only authenticated segments came out before the error


def test_another_key_or_project_cannot_open_it() -> None:
    with pytest.raises(CorruptArtifact):
        b"".join(opened([SEALED], key=DataKey(1, os.urandom(32))))
    with pytest.raises(CorruptArtifact):
        b"".join(opened([SEALED], aad=b"plinth blob\0project-2"))


def test_streams_in_bounded_memory() -> None:
    block = os.urandom(SEGMENT)

    def source() -> Iterator[bytes]:
        for i in range(64):
            yield i.to_bytes(8, "big") + block[8:]

    tracemalloc.start()
    try:
        total = sum(len(p) for p in opened(encrypt_stream(KEY, source(), AAD)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 64 * SEGMENT
    assert peak < 8 * SEGMENT, peak  # a few segments in flight, never the stream


# -- the keyring ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        where: Any = contextlib.nullcontext(f"sqlite:///{tmp_path / 'db.sqlite'}")
    else:
        where = services.postgres_database(request.getfixturevalue("postgres_server_url"))
    with where as url:
        database = Database(url)
        try:
            metadata.create_all(database.engine, tables=[data_keys])
            yield database
        finally:
            database.dispose()


def stored_keys(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sa.select(data_keys).order_by("project_id", "version")))


def test_a_data_key_is_made_once_per_project(db: Database) -> None:
    keyring = Keyring(db, A)
    key = keyring.data_key(P1)
    assert key == keyring.data_key(P1) == Keyring(db, A).data_key(P1)
    assert keyring.key_for(P1, key.version) == key.secret
    assert keyring.data_key(P2).secret != key.secret
    [row, _] = stored_keys(db)
    assert (row.project_id, row.version, row.master_key_id) == (P1, 1, A.key_id)
    assert key.secret not in row.wrapped


def test_processes_racing_for_a_new_project_agree_on_its_key(db: Database) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda k: k.data_key(P3), [Keyring(db, A) for _ in range(16)]))
    assert len(keys) == 1


def test_a_missing_or_wrong_master_key_is_a_clear_error(db: Database) -> None:
    version = Keyring(db, A).data_key(P1).version
    for call in (lambda k: k.data_key(P1), lambda k: k.key_for(P1, version)):
        with pytest.raises(PermissionDenied, match="no master key is configured"):
            call(Keyring(db, None))
        with pytest.raises(PermissionDenied, match=f"does not match.*wrapped by key {A.key_id}"):
            call(Keyring(db, B))
    with pytest.raises(CorruptArtifact, match="missing"):
        Keyring(db, A).key_for(P1, 7)
    for bad in ["", "../x", "a/b", "a.b", "x" * 33]:
        with pytest.raises(InvalidInput):
            Keyring(db, A).data_key(bad)


def test_rotation_rewraps_every_data_key(db: Database) -> None:
    before = {p: Keyring(db, A).data_key(p) for p in (P1, P2, P3)}
    assert Keyring(db, A).rotate(A, B) == 3
    assert {p: Keyring(db, B).data_key(p) for p in before} == before  # same keys
    assert {row.master_key_id for row in stored_keys(db)} == {B.key_id}
    with pytest.raises(PermissionDenied, match=f"wrapped by key {B.key_id}"):
        Keyring(db, A).key_for(P1, 1)
    assert Keyring(db, B).rotate(A, B) == 0  # run again: nothing left to do
    with pytest.raises(InvalidInput):
        Keyring(db, B).rotate(B, B)


def test_rotation_that_cannot_open_every_key_changes_nothing(db: Database) -> None:
    Keyring(db, A).data_key(P1)
    Keyring(db, C).data_key(P2)  # under a third master key
    before = stored_keys(db)
    with pytest.raises(PermissionDenied, match=f"wrapped by key {C.key_id}"):
        Keyring(db, A).rotate(A, B)
    assert stored_keys(db) == before


# -- a project's encrypted blob store ------------------------------------------------


@dataclass
class Harness:
    plain: BlobStore
    objects: Callable[[], dict[str, bytes]]  # everything the storage holds, by key
    keys_db: Database

    def store(self, project: str, master: MasterKey | None) -> BlobStore:
        return encrypted_store(self.plain, project, Keyring(self.keys_db, master))

    def overwrite(self, key: str, data: bytes) -> None:
        writer = self.plain.backend.open_write(key)  # behind the store's back
        writer.write(data)
        writer.commit()


def _local(root: Path) -> tuple[BlobStore, Callable[[], dict[str, bytes]]]:
    def objects() -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }

    return open_store(str(root)), objects


def _s3(endpoint: str, bucket: str, fs: Any) -> tuple[BlobStore, Callable[[], dict[str, bytes]]]:
    def objects() -> dict[str, bytes]:  # the whole bucket, not just the prefix
        return {p.removeprefix(f"{bucket}/blobs/"): fs.cat_file(p) for p in fs.find(bucket)}

    return open_store(f"s3://{bucket}/blobs", **s3_options(endpoint)), objects


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "local":
        plain, objects = _local(tmp_path / "blobs")
    else:
        plain, objects = _s3(
            *(request.getfixturevalue(f) for f in ("s3_endpoint", "s3_bucket", "s3_fs"))
        )
    keys_db = Database(f"sqlite:///{tmp_path / 'keys.sqlite'}")
    metadata.create_all(keys_db.engine, tables=[data_keys])
    yield Harness(plain, objects, keys_db)
    keys_db.dispose()


@pytest.mark.parametrize(
    ("size", "digest_known"),
    [(0, True), (SEGMENT, False), (len(DATA), True), (len(DATA), False)],
)
def test_round_trip_stores_only_ciphertext(harness: Harness, size: int, digest_known: bool) -> None:
    data, store = DATA[:size], harness.store(P1, A)
    info = store.put(chunked(data), expected=sha256(data) if digest_known else None)
    assert info == BlobInfo(sha256(data), size)
    assert store.exists(info.digest) and store.size(info.digest) == size
    assert b"".join(store.read(info.digest)) == data
    objects = harness.objects()
    assert list(objects) == [f"enc/{P1}/{BlobStore.key(info.digest)}"]  # no temp copy left
    assert MARKER not in objects[f"enc/{P1}/{BlobStore.key(info.digest)}"]
    assert not harness.plain.exists(info.digest)
    assert store.put(chunked(data), expected=info.digest) == info  # stored once


def test_projects_never_share_ciphertext(harness: Harness) -> None:
    digest = harness.store(P1, A).put(chunked(DATA)).digest
    assert not harness.store(P2, A).exists(digest)
    harness.store(P2, A).put(chunked(DATA))
    first, second = (harness.objects()[f"enc/{p}/{BlobStore.key(digest)}"] for p in (P1, P2))
    assert first != second
    assert b"".join(harness.store(P2, A).read(digest)) == DATA


def test_reading_needs_the_master_key_that_wrapped_the_data_key(harness: Harness) -> None:
    digest = harness.store(P1, A).put(chunked(DATA)).digest
    with pytest.raises(PermissionDenied, match="no master key is configured"):
        harness.store(P1, None).read(digest)  # before any byte
    with pytest.raises(PermissionDenied, match=f"wrapped by key {A.key_id}"):
        harness.store(P1, B).read(digest)
    with pytest.raises(PermissionDenied, match="no master key is configured"):
        harness.store(P2, None).put(chunked(DATA))
    assert list(harness.objects()) == [f"enc/{P1}/{BlobStore.key(digest)}"]


@pytest.mark.parametrize("verify", [True, False])
def test_tampered_ciphertext_is_an_error(harness: Harness, verify: bool) -> None:
    store = harness.store(P1, A)
    digest = store.put(chunked(DATA)).digest
    key = f"enc/{P1}/{BlobStore.key(digest)}"
    harness.overwrite(key, flip(harness.objects()[key], HEADER_SIZE + 2 * FULL + 5))
    got = bytearray()
    with pytest.raises(CorruptArtifact):
        for chunk in store.read(digest, verify=verify):
            got += chunk
    assert DATA.startswith(got)


def test_ciphertext_moved_between_blobs_or_projects_is_an_error(harness: Harness) -> None:
    other = marked(SEGMENT, salt=b"other")
    p1, p2 = harness.store(P1, A), harness.store(P2, A)
    digest, other_digest = p1.put(chunked(DATA)).digest, p1.put([other]).digest
    p2.put(chunked(DATA))
    objects = harness.objects()
    target = f"enc/{P1}/{BlobStore.key(digest)}"
    # another blob of the same project opens, but the digest of the plaintext catches it
    harness.overwrite(target, objects[f"enc/{P1}/{BlobStore.key(other_digest)}"])
    with pytest.raises(CorruptArtifact, match="does not match its digest"):
        b"".join(p1.read(digest))
    harness.overwrite(target, objects[f"enc/{P2}/{BlobStore.key(digest)}"])
    with pytest.raises(CorruptArtifact, match="does not authenticate"):
        b"".join(p1.read(digest, verify=False))


def test_rotation_keeps_every_artifact_readable_without_rewriting_it(harness: Harness) -> None:
    blobs = {(p, marked(n, salt=p.encode())) for p in (P1, P2) for n in (0, 10, SEGMENT + 1)}
    digests = {(p, harness.store(p, A).put(chunked(d)).digest): d for p, d in blobs}
    before = harness.objects()
    assert Keyring(harness.keys_db, A).rotate(A, B) == 2  # one data key per project
    assert harness.objects() == before  # not a byte of any blob rewritten
    for (project, digest), data in digests.items():
        assert b"".join(harness.store(project, B).read(digest)) == data
        with pytest.raises(PermissionDenied, match=f"wrapped by key {B.key_id}"):
            harness.store(project, A).read(digest)


def test_a_failed_put_leaves_nothing(harness: Harness) -> None:
    store = harness.store(P1, A)
    with pytest.raises(DigestMismatch):
        store.put(chunked(DATA), expected=sha256(b"something else"))

    def killed() -> Iterator[bytes]:
        yield DATA[:SEGMENT]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put(killed())
    assert harness.objects() == {}


def test_partial_writes_are_swept(tmp_path: Path) -> None:
    plain, objects = _local(tmp_path / "blobs")
    stale = tmp_path / "blobs" / "enc" / P1 / "sha256" / "ab" / ".tmp-dead"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert plain.sweep_partial(older_than_s=3600, layers=[f"{ENC_PREFIX}*/"]) == 1
    assert objects() == {}
