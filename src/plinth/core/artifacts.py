"""Artifact bytes for every capability: stored per project, verified, never shared.

Tracking's run artifacts, the registry's model files and data's dataset files all
keep their bytes here. Content is addressed by sha256 and stored once underneath
(sealed under the project's data key when a master key is configured), but sharing is
invisible: a project may name content by digest only when that project already holds
it (``project_blobs``); otherwise the bytes must be sent, and they are hashed and
checked even when the store has them already. So knowing a digest neither proves that
some content exists nor lets anyone read another project's bytes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core.blobs import BlobStore, check_digest
from plinth.core.db import Database, metadata
from plinth.core.encrypted import ENC_PREFIX, Keyring, encrypted_store
from plinth.errors import BlobMissing, InvalidInput

project_blobs = sa.Table(
    "project_blobs",
    metadata,
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("encrypted", sa.Boolean, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

_HELD = (
    sa.select(project_blobs.c.encrypted, project_blobs.c.size)
    .where(
        project_blobs.c.project_id == sa.bindparam("p"),
        project_blobs.c.digest == sa.bindparam("d"),
    )
    .order_by(project_blobs.c.encrypted.desc())
)


_IN_BATCH = 500  # digests per IN (...) list: well inside every database's limits


@dataclass(frozen=True)
class StoredContent:
    digest: str
    size: int
    encrypted: bool


class Artifacts:
    def __init__(self, db: Database, blobs: BlobStore, keyring: Keyring, *, max_bytes: int) -> None:
        self.db = db
        self.blobs = blobs
        self.keyring = keyring
        self.max_bytes = max_bytes

    @property
    def encrypting(self) -> bool:
        """New content is sealed whenever a master key is configured."""
        return self.keyring.master is not None

    def store(self, project_id: str, encrypted: bool) -> BlobStore:
        """Where a project's content lives: sealed under its data key, or in the clear."""
        return encrypted_store(self.blobs, project_id, self.keyring) if encrypted else self.blobs

    def put(
        self, project_id: str, chunks: Iterable[bytes], expected: str | None = None
    ) -> StoredContent:
        """Store a stream for the project (outside any transaction: it may take
        minutes); with ``expected`` the bytes must hash to it or nothing is kept."""
        encrypted = self.encrypting
        info = self.store(project_id, encrypted).put(
            chunks, expected=expected, max_bytes=self.max_bytes
        )
        content = StoredContent(info.digest, info.size, encrypted)
        self.hold(project_id, [content])
        return content

    @contextlib.contextmanager
    def batch(self, project_id: str) -> Iterator[Callable[..., StoredContent]]:
        """Store many streams for the project with a few syncs (``BlobBatch``): the
        callable takes ``(chunks, expected)``. On leaving, even with an error, what was
        stored whole is synced and held by the project."""
        encrypted = self.encrypting
        stored: list[StoredContent] = []
        try:
            with self.store(project_id, encrypted).batch() as batch:

                def put(chunks: Iterable[bytes], expected: str) -> StoredContent:
                    info = batch.put(chunks, expected, self.max_bytes)
                    stored.append(StoredContent(info.digest, info.size, encrypted))
                    return stored[-1]

                yield put
        finally:
            self.hold(project_id, stored)

    def hold(self, project_id: str, contents: list[StoredContent]) -> None:
        """Record that the project holds this stored content, in one transaction."""
        if contents:
            with self.db.write() as conn:
                self._hold(conn, project_id, contents)

    def claim(self, conn: Connection, project_id: str, digest: str, size: int) -> StoredContent:
        """Content the project already holds, named by digest; ``BlobMissing`` (send the
        bytes) for anything else, whether or not another project has it."""
        check_digest(digest)
        row = conn.execute(_HELD, {"p": project_id, "d": digest}).first()
        if row is None or not self.store(project_id, row.encrypted).exists(digest):
            raise BlobMissing(f"content sha256:{digest} is not stored in this project; upload it")
        if row.size != size:
            raise InvalidInput(f"size {size} does not match the stored content ({row.size} bytes)")
        return StoredContent(digest, row.size, row.encrypted)

    def held(
        self, conn: Connection, project_id: str, digests: Iterable[str]
    ) -> dict[str, StoredContent]:
        """Of ``digests``, the content the project holds (sealed content first, as
        ``claim`` takes it), by digest. Many at once: a dataset names thousands."""
        p = project_blobs
        wanted = sorted(set(digests))
        found: dict[str, StoredContent] = {}
        for start in range(0, len(wanted), _IN_BATCH):
            rows = conn.execute(
                sa.select(p.c.digest, p.c.size, p.c.encrypted).where(
                    p.c.project_id == project_id, p.c.digest.in_(wanted[start : start + _IN_BATCH])
                )
            )
            for row in rows:
                if row.digest not in found or row.encrypted:
                    found[row.digest] = StoredContent(row.digest, row.size, row.encrypted)
        return found

    def open(self, project_id: str, content: StoredContent) -> Iterator[bytes]:
        """The content's bytes, opened now (a missing blob or master key fails before
        any byte is sent); the reader verifies the digest end to end."""
        return self.store(project_id, content.encrypted).read(content.digest, verify=False)

    def sweep_partial(self) -> int:
        return self.blobs.sweep_partial(layers=[f"{ENC_PREFIX}*/"])

    def _hold(self, conn: Connection, project_id: str, contents: list[StoredContent]) -> None:
        now = time.time()
        conn.execute(
            self.db.insert_ignoring_duplicates(project_blobs),
            [
                {
                    "project_id": project_id,
                    "digest": c.digest,
                    "encrypted": c.encrypted,
                    "size": c.size,
                    "created_at": now,
                }
                for c in {(c.digest, c.encrypted): c for c in contents}.values()
            ],
        )
