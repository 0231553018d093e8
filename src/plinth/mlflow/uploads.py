"""MLflow's multipart artifact uploads (``mlflow-artifacts/mpu/…``), as MLflow's client
drives them against S3: ``create`` (to a folder of a run's artifacts, for a file that
keeps its own name) hands out one URL per part, the client PUTs the
parts to them in parallel (plain requests, no credentials: the URL is the credential,
as a presigned S3 URL is), then ``complete`` joins the parts into one artifact of the
run, or ``abort`` drops them.

An upload's id is 256 random bits, kept only as its sha256, and lives for an hour
(``PARTIAL_MAX_AGE_S``, after which the store's sweep removes what it left). Each part
waits in the project's storage under ``tmp/`` (sealed like any content when a master
key is set); completing streams the parts in order through the same path as a single
upload (hashed, size-limited, named once, audited), so a multipart artifact is like
any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from plinth.core.access import Need, Principal
from plinth.core.blobs import CHUNK, PARTIAL_MAX_AGE_S, TMP_KEYS, Backend
from plinth.core.platform import Platform
from plinth.errors import InvalidInput, NotFound, PayloadTooLarge
from plinth.mlflow import schemas as m
from plinth.mlflow import tables as mt
from plinth.mlflow.service import MlflowService
from plinth.tracking.artifacts import ARTIFACT_PUT
from plinth.tracking.schemas import check_artifact_path

PARTS_PATH = "/mlflow/api/2.0/mlflow-artifacts/mpu/parts"
MAX_PARTS = 10_000  # as S3
_SWEPT_PER_CREATE = 20  # expired uploads whose leftovers one create removes


def _hash(upload_id: str) -> str:
    return hashlib.sha256(upload_id.encode()).hexdigest()


def _part_key(id_hash: str, part: int) -> str:
    return f"{TMP_KEYS}mpu-{id_hash[:40]}-{part:05d}"


def _etag(value: str | None) -> str:
    return (value or "").strip().strip('"')


class MlflowUploads:
    def __init__(self, platform: Platform, *, mlflow: MlflowService) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.store = platform.artifacts
        self.mlflow = mlflow
        self.max_bytes = platform.artifacts.max_bytes

    def create(
        self, path: str, req: m.MlflowCreateUpload, base_url: str, *, principal: Principal
    ) -> dict[str, Any]:
        """A new upload to ``path`` (``EXPERIMENT/RUN/artifacts/NAME``) of
        ``num_parts`` parts: its id and a URL for each part."""
        run_id, name = self._target(path, req.path, principal)
        if not 1 <= req.num_parts <= MAX_PARTS:
            raise InvalidInput(f"num_parts must be 1 to {MAX_PARTS}, not {req.num_parts}")
        upload_id = secrets.token_urlsafe(32)
        now = time.time()
        with self._writing(run_id, name, principal) as (conn, project_id):
            expired = self._expired(conn, now)
            conn.execute(
                mt.uploads.insert().values(
                    id_hash=_hash(upload_id),
                    run_id=run_id,
                    project_id=project_id,
                    path=name,
                    num_parts=req.num_parts,
                    encrypted=self.store.encrypting,
                    created_by=principal.name,
                    created_at=now,
                )
            )
        for row, parts in expired:
            self._drop_parts(row, parts)
        base = f"{base_url.rstrip('/')}{PARTS_PATH}/{upload_id}"
        return {
            "upload_id": upload_id,
            "credentials": [
                {"url": f"{base}/{n}", "part_number": n, "headers": {}}
                for n in range(1, req.num_parts + 1)
            ],
        }

    def put_part(self, upload_id: str, part: int, chunks: Iterable[bytes]) -> str:
        """Store one part (again: it replaces the last one sent); its sha256, the ETag."""
        p = mt.upload_parts
        with self.db.read() as conn:
            row = self._live(conn, upload_id)
            others = sa.select(sa.func.coalesce(sa.func.sum(p.c.size), 0)).where(
                p.c.id_hash == row.id_hash, p.c.part_number != part
            )
            room = self.max_bytes - int(conn.execute(others).scalar_one())  # all parts
        if not 1 <= part <= row.num_parts:
            raise InvalidInput(f"part_number must be 1 to {row.num_parts}, not {part}")
        backend = self._backend(row)
        writer = backend.open_write(_part_key(row.id_hash, part))
        h, size = hashlib.sha256(), 0
        try:
            for chunk in chunks:
                size += len(chunk)
                if size > room:
                    raise PayloadTooLarge(f"artifact exceeds {self.max_bytes} bytes")
                h.update(chunk)
                writer.write(chunk)
        except BaseException:
            writer.discard()
            raise
        writer.commit()
        etag = h.hexdigest()
        with self.db.write() as conn:
            self._live(conn, upload_id)  # not completed or aborted meanwhile
            mine = sa.and_(p.c.id_hash == row.id_hash, p.c.part_number == part)
            conn.execute(p.delete().where(mine))
            conn.execute(
                p.insert().values(id_hash=row.id_hash, part_number=part, size=size, etag=etag)
            )
        return etag

    def complete(
        self, path: str, req: m.MlflowCompleteUpload, *, principal: Principal
    ) -> dict[str, Any]:
        """Join the parts named, in part order, into the artifact; each part's ETag
        must be the one its PUT answered."""
        row, stored = self._mine(path, req.path, req.upload_id, principal)
        wanted = sorted(req.parts, key=lambda p: p.part_number)
        numbers = [p.part_number for p in wanted]
        if not numbers or len(set(numbers)) != len(numbers):
            raise InvalidInput("parts must name each uploaded part once")
        for given in wanted:
            held = stored.get(given.part_number)
            if held is None:
                raise InvalidInput(f"part {given.part_number} was not uploaded")
            if _etag(given.etag) != held.etag:
                raise InvalidInput(f"part {given.part_number}'s etag is not the one stored")
        if sum(stored[n].size for n in numbers) > self.max_bytes:
            raise PayloadTooLarge(f"artifact exceeds {self.max_bytes} bytes")
        backend = self._backend(row)
        self.mlflow.artifacts.upload_artifact(
            row.run_id,
            row.path,
            _joined(backend, [_part_key(row.id_hash, n) for n in numbers]),
            principal=principal,
            ended_ok=True,
        )
        self._drop(row, list(stored))
        return {}

    def abort(self, path: str, req: m.MlflowUploadRef, *, principal: Principal) -> dict[str, Any]:
        row, stored = self._mine(path, req.path, req.upload_id, principal)
        self._drop(row, list(stored))
        return {}

    # --------------------------------------------------------------------------------

    def _target(self, folder: str, local_file: str, principal: Principal) -> tuple[str, str]:
        """The run and artifact name an upload writes: as MLflow's S3 store does, the
        file keeps its own name (``local_file``'s last part) inside ``folder``."""
        run_id, under = self.mlflow.artifact_name(folder, principal)
        file_name = re.split(r"[\\/]", local_file)[-1]
        if not file_name:
            raise InvalidInput("path must be the file being uploaded")
        return run_id, check_artifact_path(f"{under}/{file_name}" if under else file_name)

    def _mine(
        self, path: str, local_file: str, upload_id: str, principal: Principal
    ) -> tuple[Any, dict[int, Any]]:
        """The live upload ``upload_id`` to ``path``, made by this principal, and its
        stored parts by number."""
        run_id, name = self._target(path, local_file, principal)
        with self._writing(run_id, name, principal) as (conn, _):
            row = self._live(conn, upload_id)
            if (row.run_id, row.path, row.created_by) != (run_id, name, principal.name):
                raise NotFound("no multipart upload with that id to this artifact")
            p = mt.upload_parts
            parts = conn.execute(sa.select(p).where(p.c.id_hash == row.id_hash)).all()
        return row, {part.part_number: part for part in parts}

    @contextlib.contextmanager
    def _writing(self, run_id: str, name: str, principal: Principal) -> Iterator[tuple[Any, str]]:
        """A write transaction in which the principal may write to the run (its project
        id); a refusal is audited (the completion, not this, is the change audited)."""
        with self.audit.recorded(principal, ARTIFACT_PUT, object=f"{run_id}/{name}") as (
            conn,
            change,
        ):
            change.record = False
            row = self.mlflow.tracking.require_run(conn, run_id, principal, Need.WRITE, change)
            yield conn, str(row.project_id)

    @staticmethod
    def _live(conn: Any, upload_id: str) -> Any:
        u = mt.uploads
        row = conn.execute(sa.select(u).where(u.c.id_hash == _hash(upload_id))).first()
        if row is None or row.created_at < time.time() - PARTIAL_MAX_AGE_S:
            raise NotFound(
                "no multipart upload with that id (finished, aborted, or older than "
                f"{PARTIAL_MAX_AGE_S / 3600:g} h); start the upload again"
            )
        return row

    def _backend(self, row: Any) -> Backend:
        return self.store.store(row.project_id, row.encrypted).backend

    def _drop(self, row: Any, parts: list[int]) -> None:
        """Forget an upload, then remove its parts' bytes."""
        with self.db.write() as conn:
            self._forget(conn, row.id_hash)
        self._drop_parts(row, parts)

    def _drop_parts(self, row: Any, parts: list[int]) -> None:
        backend = self._backend(row)
        for n in parts:
            backend.delete(_part_key(row.id_hash, n))

    def _expired(self, conn: Any, now: float) -> list[tuple[Any, list[int]]]:
        """Forget a few uploads past their hour; their rows and part numbers, for the
        caller to remove the bytes of once this transaction commits."""
        u, p = mt.uploads, mt.upload_parts
        old = conn.execute(
            sa.select(u).where(u.c.created_at < now - PARTIAL_MAX_AGE_S).limit(_SWEPT_PER_CREATE)
        ).all()
        found = []
        for row in old:
            numbers = conn.execute(
                sa.select(p.c.part_number).where(p.c.id_hash == row.id_hash)
            ).scalars()
            found.append((row, list(numbers)))
            self._forget(conn, row.id_hash)
        return found

    @staticmethod
    def _forget(conn: Any, id_hash: str) -> None:
        conn.execute(mt.upload_parts.delete().where(mt.upload_parts.c.id_hash == id_hash))
        conn.execute(mt.uploads.delete().where(mt.uploads.c.id_hash == id_hash))


def _joined(backend: Backend, keys: list[str]) -> Iterator[bytes]:
    for key in keys:
        try:
            f = backend.open_read(key)
        except FileNotFoundError:
            raise NotFound("a part of this upload is gone; start the upload again") from None
        with f:
            while chunk := f.read(CHUNK):
                yield chunk
