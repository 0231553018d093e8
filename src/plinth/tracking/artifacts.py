"""A run's artifacts: files named within the run, their bytes in the kernel's
tenant-safe storage (``core/artifacts.py``). A committed name is immutable."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from plinth.core.access import Need, Principal
from plinth.core.artifacts import StoredContent
from plinth.core.platform import Platform
from plinth.errors import BlobMissing, Conflict, NotFound, PlinthError
from plinth.tracking import schemas as s
from plinth.tracking import tables as t
from plinth.tracking.service import TrackingService

ARTIFACT_PUT = "artifacts.put"


def _now() -> float:
    return time.time()


class RunArtifactsService:
    def __init__(self, platform: Platform, *, runs: TrackingService) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.artifacts = platform.artifacts
        self.runs = runs

    def upload_artifact(
        self,
        run_id: str,
        path: str,
        chunks: Iterable[bytes],
        expected: str | None = None,
        *,
        principal: Principal,
        ended_ok: bool = False,
    ) -> s.Artifact:
        """Store the bytes and name them in the run. An ended run takes no more (its
        artifacts are final) unless ``ended_ok`` (MLflow's API, as MLflow allows)."""
        s.check_artifact_path(path)
        try:  # outside any transaction: an upload can take minutes
            project_id = self._may_write(run_id, principal, ended_ok)
            content = self.artifacts.put(project_id, chunks, expected)
        except PlinthError as exc:
            self.audit.refusal(principal, ARTIFACT_PUT, exc, object=f"{run_id}/{path}")
            raise
        return self._record_artifact(run_id, path, content, principal, ended_ok)

    def _may_write(self, run_id: str, principal: Principal, ended_ok: bool = False) -> str:
        """The run's project id, if the principal may write to it."""
        with self.db.read() as conn:
            return str(self._writable(conn, run_id, principal, None, ended_ok).project_id)

    def _writable(
        self, conn: Any, run_id: str, principal: Principal, change: Any, ended_ok: bool
    ) -> Any:
        if ended_ok:
            return self.runs.require_run(conn, run_id, principal, Need.WRITE, change)
        return self.runs.require_open_run(conn, run_id, principal, change)

    def register_artifact(
        self, run_id: str, req: s.ArtifactRegister, *, principal: Principal
    ) -> s.Artifact:
        """Name content this run's project already holds; ``BlobMissing`` asks for the
        bytes (content elsewhere is nobody else's business)."""
        try:
            with self.db.read() as conn:
                project_id = self.runs.require_open_run(conn, run_id, principal).project_id
                content = self.artifacts.claim(conn, project_id, req.digest, req.size)
        except BlobMissing:
            raise  # not a refusal: the client sends the bytes next
        except PlinthError as exc:
            self.audit.refusal(principal, ARTIFACT_PUT, exc, object=f"{run_id}/{req.path}")
            raise
        return self._record_artifact(run_id, req.path, content, principal)

    def _record_artifact(
        self,
        run_id: str,
        path: str,
        content: StoredContent,
        principal: Principal,
        ended_ok: bool = False,
    ) -> s.Artifact:
        """Name the content; a committed name is immutable: the same content again is
        an idempotent success, other content a Conflict."""
        artifact = s.Artifact(
            path=path,
            digest=content.digest,
            size=content.size,
            created_at=_now(),
            encrypted=content.encrypted,
        )
        a = t.artifacts
        with self.audit.recorded(principal, ARTIFACT_PUT, object=f"{run_id}/{path}") as (
            conn,
            change,
        ):
            row = self._writable(conn, run_id, principal, change, ended_ok)
            if not ended_ok or row.status == "running":  # an ended run stays as it ended
                self.runs.touch(conn, run_id)
            change.details = {
                "digest": content.digest,
                "size": content.size,
                "encrypted": content.encrypted,
            }
            existing = conn.execute(
                sa.select(*_ARTIFACT_COLUMNS).where(a.c.run_id == run_id, a.c.path == path)
            ).first()
            if existing is not None:
                if existing.digest != content.digest:
                    raise Conflict(
                        f"artifact {path!r} of run {run_id} exists with other content "
                        f"(sha256:{existing.digest}); artifacts are immutable, log a new name"
                    )
                change.record = False  # the same content again: nothing changes
                return s.Artifact(**existing._mapping)
            conn.execute(a.insert(), {"run_id": run_id, **artifact.model_dump()})
        return artifact

    def list_artifacts(
        self, run_id: str, path: str | None = None, *, principal: Principal
    ) -> list[s.Artifact]:
        """A run's artifacts, or only those under ``path/`` when it is given."""
        a = t.artifacts
        stmt = sa.select(*_ARTIFACT_COLUMNS).where(a.c.run_id == run_id).order_by(a.c.path)
        if path:
            folder = s.check_artifact_path(path.rstrip("/"))
            stmt = stmt.where(a.c.path.startswith(f"{folder}/", autoescape=True))
        with self.db.read() as conn:
            self.runs.require_run(conn, run_id, principal, Need.READ)
            return [s.Artifact(**r) for r in conn.execute(stmt).mappings()]

    def get_artifact(
        self, run_id: str, path: str, *, principal: Principal
    ) -> tuple[s.Artifact, Iterator[bytes]]:
        """An artifact and its bytes, opened now (a missing blob or master key is an
        error before any byte is sent). The caller verifies the digest end to end."""
        s.check_artifact_path(path)
        a = t.artifacts
        with self.db.read() as conn:
            run = self.runs.require_run(conn, run_id, principal, Need.READ)
            row = (
                conn.execute(
                    sa.select(*_ARTIFACT_COLUMNS).where(a.c.run_id == run_id, a.c.path == path)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"run {run_id} has no artifact {path!r}")
        artifact = s.Artifact(**row)
        content = StoredContent(artifact.digest, artifact.size, artifact.encrypted)
        return artifact, self.artifacts.open(run.project_id, content)


_ARTIFACT_COLUMNS = (
    t.artifacts.c.path,
    t.artifacts.c.digest,
    t.artifacts.c.size,
    t.artifacts.c.created_at,
    t.artifacts.c.encrypted,
)
