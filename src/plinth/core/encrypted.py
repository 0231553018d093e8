"""Encrypted blobs: each project's data keys in the database, and a blob store that
seals what it writes with them.

``Keyring`` keeps the data keys, wrapped by the master key (see ``crypto``), in
``data_keys``. ``encrypted_store`` gives one project's view of a ``BlobStore``: the
same put/read/exists/size, digests of the plaintext (so they verify end to end as
before), ciphertext on the storage under ``enc/<project_id>/…``. It is a ``Backend``
wrapped around the store's own, so hashing, atomic writes, deduplication and
verification are ``BlobStore``'s, unchanged.
"""

from __future__ import annotations

import io
import os
import re
import struct
import time
from collections.abc import Iterator
from typing import IO, Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from plinth.core.blobs import CHUNK, Backend, BlobStore, ChunksReader, Writer
from plinth.core.crypto import (
    HEADER_SIZE,
    KEY_SIZE,
    DataKey,
    Decryptor,
    Encryptor,
    MasterKey,
    key_version,
    plaintext_size,
    unwrap,
    wrap,
)
from plinth.core.db import Database, metadata
from plinth.errors import CorruptArtifact, InvalidInput, PermissionDenied

data_keys = sa.Table(
    "data_keys",
    metadata,
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("master_key_id", sa.String(8), nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

ENC_PREFIX = "enc/"  # then the project id: each project's sealed blobs apart
_PROJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")  # a storage key part: no dots or slashes

_pk = (data_keys.c.project_id == sa.bindparam("p"), data_keys.c.version == sa.bindparam("v"))
_ONE = sa.select(data_keys).where(*_pk)
_LATEST = (
    sa.select(data_keys)
    .where(data_keys.c.project_id == sa.bindparam("p"))
    .order_by(data_keys.c.version.desc())
    .limit(1)
)
_REWRAP = (
    data_keys.update()
    .where(*_pk)
    .values(master_key_id=sa.bindparam("key_id"), wrapped=sa.bindparam("new_wrapped"))
)


def check_project_id(project_id: str) -> str:
    if not _PROJECT_ID.fullmatch(project_id):
        raise InvalidInput("a project id is 1 to 32 letters, digits, '-' or '_'")
    return project_id


def _key_aad(project_id: str, version: int) -> bytes:
    return f"plinth data key\0{project_id}\0{version}".encode()


class Keyring:
    """Each project's data keys, wrapped by ``master``; one is made on first use.

    Without a master key nothing can be sealed or opened: every call says so.
    """

    def __init__(self, db: Database, master: MasterKey | None) -> None:
        self.db = db
        self.master = master

    def data_key(self, project_id: str) -> DataKey:
        """The key that seals the project's new blobs: its newest version."""
        master = self._master(project_id)
        with self.db.read() as conn:
            row = conn.execute(_LATEST, {"p": check_project_id(project_id)}).first()
        if row is None:
            row = self._create(project_id, master)
        return DataKey(row.version, unwrap(master, row.wrapped, _key_aad(project_id, row.version)))

    def key_for(self, project_id: str, version: int) -> bytes:
        master = self._master(project_id)
        with self.db.read() as conn:
            row = conn.execute(_ONE, {"p": check_project_id(project_id), "v": version}).first()
        if row is None:
            raise CorruptArtifact(
                f"data key {version} of project {project_id} is missing from the database: "
                "blobs sealed with it cannot be read"
            )
        return unwrap(master, row.wrapped, _key_aad(project_id, version))

    def rotate(self, old: MasterKey, new: MasterKey) -> int:
        """Re-wrap every data key from ``old`` to ``new`` in one transaction; no blob
        is rewritten. Returns how many were re-wrapped. Keys already under ``new`` are
        skipped, so running it again after a failure is safe; a key under any other
        master fails the whole rotation, changing nothing."""
        if old.key_id == new.key_id:
            raise InvalidInput("the new master key is the old one")
        with self.db.write() as conn:
            rows = conn.execute(sa.select(data_keys).with_for_update()).all()
            updates = []
            for row in rows:
                if row.master_key_id == new.key_id:
                    continue
                aad = _key_aad(row.project_id, row.version)
                secret = unwrap(old, row.wrapped, aad)
                updates.append(
                    {
                        "p": row.project_id,
                        "v": row.version,
                        "key_id": new.key_id,
                        "new_wrapped": wrap(new, secret, aad),
                    }
                )
            if updates:
                conn.execute(_REWRAP, updates)
        return len(updates)

    def _master(self, project_id: str) -> MasterKey:
        if self.master is None:
            raise PermissionDenied(
                f"project {project_id} keeps sealed data (its secrets, its encrypted "
                "artifacts) and no master key is configured: set PLINTH_MASTER_KEY or a "
                "master key file"
            )
        return self.master

    def _create(self, project_id: str, master: MasterKey) -> Any:
        row = {
            "project_id": project_id,
            "version": 1,
            "master_key_id": master.key_id,
            "wrapped": wrap(master, os.urandom(KEY_SIZE), _key_aad(project_id, 1)),
            "created_at": time.time(),
        }
        with self.db.write() as conn:
            # another process may have made it first: then its key is the one
            conn.execute(self.db.insert_ignoring_duplicates(data_keys), row)
            return conn.execute(_LATEST, {"p": project_id}).one()


def encrypted_store(plain: BlobStore, project_id: str, keyring: Keyring) -> BlobStore:
    """One project's encrypted view of ``plain``'s storage."""
    return BlobStore(EncryptedBackend(plain.backend, project_id, keyring))


class EncryptedBackend:
    """A ``Backend`` that seals what is written to it with the project's current data
    key and opens what is read with the key version its header names, under
    ``enc/<project_id>/`` so two projects' ciphertexts never share a key."""

    def __init__(self, inner: Backend, project_id: str, keyring: Keyring) -> None:
        self.inner = inner
        self.project_id = check_project_id(project_id)
        self.keyring = keyring
        self.prefix = f"{ENC_PREFIX}{project_id}/"
        self.aad = f"plinth blob\0{project_id}".encode()

    def exists(self, key: str) -> bool:
        return self.inner.exists(self.prefix + key)

    def size(self, key: str) -> int:
        return plaintext_size(self.inner.size(self.prefix + key))

    def open_write(self, key: str) -> Writer:
        encryptor = Encryptor(self.keyring.data_key(self.project_id), self.aad)
        writer = self.inner.open_write(self.prefix + key)
        try:
            writer.write(encryptor.header)
        except BaseException:
            writer.discard()
            raise
        return _SealingWriter(writer, encryptor)

    def open_read(self, key: str) -> IO[bytes]:
        """Opens the blob and finds its key now, so a missing or wrong master key is
        an error before any byte is read."""
        f = self.inner.open_read(self.prefix + key)
        try:
            header = _read_up_to(f, HEADER_SIZE)
            data_key = self.keyring.key_for(self.project_id, key_version(header))
            decryptor = Decryptor(data_key, header, self.aad)
        except BaseException:
            f.close()
            raise
        return io.BufferedReader(_OpeningReader(f, decryptor), CHUNK)

    def delete(self, key: str) -> None:
        self.inner.delete(self.prefix + key)

    def __getattr__(self, name: str) -> Any:
        """``rename`` when the inner backend has one: a sealed blob names no key, only
        its project, so it may move within the project's prefix."""
        if name == "rename" and hasattr(self.inner, "rename"):
            return lambda key, new: self.inner.rename(self.prefix + key, self.prefix + new)
        raise AttributeError(name)

    def sync(self) -> None:
        sync = getattr(self.inner, "sync", None)
        if sync is not None:
            sync()


class _SealingWriter:
    def __init__(self, inner: Writer, encryptor: Encryptor) -> None:
        self.inner = inner
        self.encryptor = encryptor

    def write(self, data: bytes) -> None:
        for segment in self.encryptor.update(data):
            self.inner.write(segment)

    def commit(self) -> None:
        try:
            self.inner.write(self.encryptor.final())
        except BaseException:
            self.inner.discard()
            raise
        self.inner.commit()

    def discard(self) -> None:
        self.inner.discard()

    def __getattr__(self, name: str) -> Any:
        """``stage`` and ``publish`` when the inner writer has them (``BlobBatch``)."""
        if name == "stage" and hasattr(self.inner, "stage"):
            return self._stage
        if name == "publish" and hasattr(self.inner, "publish"):
            return self.inner.publish
        raise AttributeError(name)

    def _stage(self) -> None:
        try:
            self.inner.write(self.encryptor.final())
        except BaseException:
            self.inner.discard()
            raise
        self.inner.stage()  # type: ignore[attr-defined]  # checked in __getattr__


class _OpeningReader(ChunksReader):
    """The plaintext of a sealed file, a segment at a time, as a raw stream."""

    def __init__(self, f: IO[bytes], decryptor: Decryptor) -> None:
        super().__init__(self._open(f, decryptor))
        self._file = f

    @staticmethod
    def _open(f: IO[bytes], decryptor: Decryptor) -> Iterator[bytes]:
        while chunk := f.read(CHUNK):
            yield from decryptor.update(chunk)
        yield decryptor.final()

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def _read_up_to(f: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := f.read(size - len(data))):
        data += chunk
    return data


_SEALED_VALUE = struct.Struct(">I12s")  # data key version, nonce


def seal_value(keyring: Keyring, project_id: str, value: bytes, aad: bytes) -> bytes:
    """A small value (a job's secret) sealed under the project's current data key."""
    key = keyring.data_key(project_id)
    nonce = os.urandom(12)
    head = _SEALED_VALUE.pack(key.version, nonce)
    return head + AESGCM(key.secret).encrypt(nonce, value, head + aad)


def open_value(keyring: Keyring, project_id: str, sealed: bytes, aad: bytes) -> bytes:
    version, nonce = _SEALED_VALUE.unpack(sealed[: _SEALED_VALUE.size])
    key = keyring.key_for(project_id, version)
    try:
        return AESGCM(key).decrypt(
            nonce, sealed[_SEALED_VALUE.size :], sealed[: _SEALED_VALUE.size] + aad
        )
    except InvalidTag:
        raise CorruptArtifact(
            "a sealed secret does not authenticate: it was altered or moved"
        ) from None
