"""Artifact bytes for every capability: stored per project, verified, never shared.

Tracking's run artifacts, the registry's model files and data's dataset files all
keep their bytes here. Content is addressed by sha256 and stored once underneath
(sealed under the project's data key when a master key is configured), but sharing is
invisible: a project may name content by digest only when that project already holds
it (``project_blobs``); otherwise the bytes must be sent, and they are hashed and
checked even when the store has them already. So knowing a digest neither proves that
some content exists nor lets anyone read another project's bytes.

Small content sent in a batch (a dataset's thousand small files) is stored in a pack,
one stored object for the batch (``PackWriter``), and the project's record of it says
which pack and where in it. Content sealed under a project's key is stored a blob each.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core.blobs import PACKED_MAX, BlobInfo, BlobStore, check_digest
from plinth.core.db import Database, metadata
from plinth.core.encrypted import ENC_PREFIX, Keyring, encrypted_store
from plinth.errors import BlobMissing, DigestMismatch, InvalidInput, NotFound, PayloadTooLarge

project_blobs = sa.Table(
    "project_blobs",
    metadata,
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("encrypted", sa.Boolean, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("pack", sa.String(32)),  # stored in this pack (PackWriter), or a blob of its own
    sa.Column("start", sa.BigInteger),  # where in the pack
)

_HELD = (
    sa.select(
        project_blobs.c.encrypted,
        project_blobs.c.size,
        project_blobs.c.pack,
        project_blobs.c.start,
    )
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
    pack: str | None = None  # where packed content lies; None: unknown here, or a blob
    start: int = 0


class Artifacts:
    def __init__(self, db: Database, blobs: BlobStore, keyring: Keyring, *, max_bytes: int) -> None:
        self.db = db
        self.blobs = blobs
        self.keyring = keyring
        self.max_bytes = max_bytes
        self._insert_held = db.prepare(
            db.insert_ignoring_duplicates(project_blobs), keys=[c.name for c in project_blobs.c]
        )

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
        self.hold(project_id, [content], moved=[content])
        return content

    @contextlib.contextmanager
    def batch(self, project_id: str) -> Iterator[Callable[..., StoredContent]]:
        """Store many streams for the project with a few syncs: the callable takes
        ``(chunks, expected, size=None)``. Content of a known ``size`` up to
        ``PACKED_MAX`` goes into one pack (``_Packer``), the rest a blob each
        (``BlobBatch``). On leaving, even with an error, what was stored whole is made
        durable and held by the project."""
        encrypted = self.encrypting
        packer = None if encrypted else _Packer(self, project_id)
        durable: list[BlobInfo] = []
        try:
            with self.store(project_id, encrypted).batch() as batch:
                durable = batch.durable  # filled as blobs become durable, until it ends

                def put(
                    chunks: Iterable[bytes], expected: str, size: int | None = None
                ) -> StoredContent:
                    if packer is not None and size is not None and size <= PACKED_MAX:
                        return packer.put(chunks, expected, size)
                    info = batch.put(chunks, expected, self.max_bytes)
                    return StoredContent(info.digest, info.size, encrypted)

                yield put
        finally:
            loose = [StoredContent(i.digest, i.size, encrypted) for i in durable]
            packed: list[StoredContent] = []
            moved: list[StoredContent] = []
            try:
                if packer is not None:
                    packed, moved = packer.commit()
            finally:
                self.hold(project_id, loose + packed, moved=loose + moved)

    def hold(
        self,
        project_id: str,
        contents: list[StoredContent],
        moved: Sequence[StoredContent] = (),
    ) -> None:
        """Record that the project holds this stored content, in one transaction;
        ``moved`` content was stored anew, and the record of it now points there (the
        place it had may be lost: that is why it was sent again)."""
        if contents:
            with self.db.write() as conn:
                self._hold(conn, project_id, contents)
                self._point(conn, project_id, [c for c in moved if not c.encrypted])

    def claim(self, conn: Connection, project_id: str, digest: str, size: int) -> StoredContent:
        """Content the project already holds, named by digest; ``BlobMissing`` (send the
        bytes) for anything else, whether or not another project has it."""
        check_digest(digest)
        row = conn.execute(_HELD, {"p": project_id, "d": digest}).first()
        if row is None or not (
            self.blobs.pack_exists(row.pack)
            if row.pack
            else self.store(project_id, row.encrypted).exists(digest)
        ):
            raise BlobMissing(f"content sha256:{digest} is not stored in this project; upload it")
        if row.size != size:
            raise InvalidInput(f"size {size} does not match the stored content ({row.size} bytes)")
        return _stored(digest, row)

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
                sa.select(p.c.digest, p.c.size, p.c.encrypted, p.c.pack, p.c.start).where(
                    p.c.project_id == project_id, p.c.digest.in_(wanted[start : start + _IN_BATCH])
                )
            )
            for row in rows:
                if row.digest not in found or row.encrypted:
                    found[row.digest] = _stored(row.digest, row)
        return found

    def open(self, project_id: str, content: StoredContent) -> Iterator[bytes]:
        """The content's bytes, opened now (a missing blob or master key fails before
        any byte is sent); the reader verifies the digest end to end. A blob of its
        own is tried first, so only packed content costs a look at the database."""
        if content.encrypted or content.pack is not None:
            return self.openers(project_id, [content])[0]()
        try:
            return self.blobs.read(content.digest, verify=False)
        except NotFound:
            pack, start = self._places(project_id, [content.digest]).get(content.digest, (None, 0))
            if pack is None:
                raise
            return self.blobs.read_packed(pack, start, content.size)

    def openers(
        self, project_id: str, contents: Sequence[StoredContent]
    ) -> list[Callable[[], Iterator[bytes]]]:
        """What opens each content's bytes (as ``open``); where packed content lies is
        looked up for all at once in the project's record: a pull of a thousand small
        files is one query, not a thousand."""
        places = self._places(
            project_id, [c.digest for c in contents if not c.encrypted and c.pack is None]
        )

        def opener(c: StoredContent) -> Callable[[], Iterator[bytes]]:
            pack, start = (c.pack, c.start) if c.pack else places.get(c.digest, (None, 0))
            if pack is not None and not c.encrypted:
                return lambda: self.blobs.read_packed(pack, start, c.size)
            store = self.store(project_id, c.encrypted)
            return lambda: store.read(c.digest, verify=False)

        return [opener(c) for c in contents]

    def sweep_partial(self) -> int:
        return self.blobs.sweep_partial(layers=[f"{ENC_PREFIX}*/"])

    def _places(
        self, project_id: str, digests: list[str], *, packed_only: bool = True
    ) -> dict[str, tuple[str | None, int]]:
        """Where the project's plain content of ``digests`` lies: its pack and start
        (a pack of None: a blob of its own); with ``packed_only``, packed content only."""
        p = project_blobs
        wanted = sorted(set(digests))
        found: dict[str, tuple[str | None, int]] = {}
        if not wanted:
            return found
        with self.db.read() as conn:
            for start in range(0, len(wanted), _IN_BATCH):
                query = sa.select(p.c.digest, p.c.pack, p.c.start).where(
                    p.c.project_id == project_id,
                    p.c.digest.in_(wanted[start : start + _IN_BATCH]),
                    p.c.encrypted.is_(False),
                )
                if packed_only:
                    query = query.where(p.c.pack.is_not(None))
                found.update({r.digest: (r.pack, int(r.start or 0)) for r in conn.execute(query)})
        return found

    def _point(self, conn: Connection, project_id: str, moved: list[StoredContent]) -> None:
        if not moved:
            return
        p = project_blobs
        conn.execute(
            sa.update(p)
            .where(
                p.c.project_id == sa.bindparam("b_project"),
                p.c.digest == sa.bindparam("b_digest"),
                p.c.encrypted.is_(False),
            )
            .values(pack=sa.bindparam("b_pack"), start=sa.bindparam("b_start")),
            [
                {
                    "b_project": project_id,
                    "b_digest": c.digest,
                    "b_pack": c.pack,
                    "b_start": c.start if c.pack else None,
                }
                for c in moved
            ],
        )

    def _hold(self, conn: Connection, project_id: str, contents: list[StoredContent]) -> None:
        now = time.time()
        self._insert_held.run_many(
            conn,
            [
                {
                    "project_id": project_id,
                    "digest": c.digest,
                    "encrypted": c.encrypted,
                    "size": c.size,
                    "created_at": now,
                    "pack": c.pack,
                    "start": c.start if c.pack else None,
                }
                for c in {(c.digest, c.encrypted): c for c in contents}.values()
            ],
        )


def _stored(digest: str, row: Any) -> StoredContent:
    """A ``project_blobs`` row as the content it records."""
    return StoredContent(digest, row.size, row.encrypted, row.pack, row.start or 0)


class _Packer:
    """The small content of one batch, packed (``PackWriter``): each is read whole (it
    is small) and checked against its digest; a few megabytes at a time, what the
    project already holds where it still lies, or the store holds as a blob of its
    own, is recorded, not written again, and the rest is appended to the pack."""

    FLUSH_BYTES = 8 << 20

    def __init__(self, artifacts: Artifacts, project_id: str) -> None:
        self.artifacts = artifacts
        self.project_id = project_id
        self.pack = artifacts.blobs.open_pack()
        self.waiting: list[tuple[str, bytes]] = []
        self.waiting_bytes = 0
        self.stored: list[StoredContent] = []
        self.moved: list[StoredContent] = []  # held before, but where it lay is lost
        self.placed: dict[str, int] = {}
        self.packs: dict[str, bool] = {}  # whether each pack named is there

    def put(self, chunks: Iterable[bytes], expected: str, size: int) -> StoredContent:
        check_digest(expected)
        max_bytes = self.artifacts.max_bytes
        parts, got = [], 0
        for chunk in chunks:
            got += len(chunk)
            if got > size:
                raise InvalidInput(f"sha256:{expected}: more than the {size} bytes announced")
            parts.append(chunk)
        if max_bytes is not None and got > max_bytes:
            raise PayloadTooLarge(f"artifact exceeds {max_bytes} bytes")
        data = b"".join(parts)
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise DigestMismatch(f"content hashes to {digest}, not {expected}")
        self.waiting.append((digest, data))
        self.waiting_bytes += len(data)
        if self.waiting_bytes >= self.FLUSH_BYTES:
            self._flush()
        return StoredContent(digest, got, False)

    def _flush(self) -> None:
        waiting, self.waiting, self.waiting_bytes = self.waiting, [], 0
        held = self.artifacts._places(self.project_id, [d for d, _ in waiting], packed_only=False)
        blobs = self.artifacts.blobs
        for digest, data in waiting:
            if digest in self.placed:
                continue
            if digest in held:
                pack, start = held[digest]
                if self._there(pack, digest):
                    self.stored.append(StoredContent(digest, len(data), False, pack, start))
                    continue
            elif blobs.exists(digest):
                self.stored.append(StoredContent(digest, len(data), False))
                continue
            self.placed[digest] = self.pack.add(data)
            content = StoredContent(digest, len(data), False, self.pack.id, self.placed[digest])
            self.stored.append(content)
            if digest in held:
                self.moved.append(content)

    def _there(self, pack: str | None, digest: str) -> bool:
        if pack is None:
            return self.artifacts.blobs.exists(digest)
        if pack not in self.packs:
            self.packs[pack] = self.artifacts.blobs.pack_exists(pack)
        return self.packs[pack]

    def commit(self) -> tuple[list[StoredContent], list[StoredContent]]:
        """Pack what waits and make the pack durable: the content to hold, and of it
        what moved. On failure nothing packed here is held (the pack is removed)."""
        try:
            self._flush()
        except BaseException:
            self.pack.discard()
            raise
        if not self.pack.commit():
            return [], []
        return self.stored, self.moved
