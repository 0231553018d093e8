"""Registered models and their versions: register a run's files as the next version,
read versions, change what may change (never the files), tag them.

A version's files are the content its run logged under one artifact path, pinned by
digest when it is registered; its ``digest`` is sha256 over the manifest of those
files (one ``DIGEST  SIZE  PATH`` line each, sorted by path), so anyone holding the
files can check them against the registry. The server reads a version's
``MLmodel.json`` as JSON and never loads a model: flavors load only in serving.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from plinth.core import lineage
from plinth.core.access import Need, Permission, Principal, allows
from plinth.core.artifacts import StoredContent
from plinth.core.platform import Platform
from plinth.errors import InvalidInput, NotFound, PermissionDenied, PlinthError, Unprocessable
from plinth.registry import schemas as s
from plinth.registry import tables as t
from plinth.registry.flavors import FLAVORS
from plinth.registry.flavors.meta import MLFLOW_FLAVOR, MLFLOW_META_FILE, meta_from_mlflow
from plinth.registry.manifest import check_layout, manifest_digest
from plinth.registry.signature import Signature
from plinth.registry.uri import check_model_name
from plinth.tracking import tables as tt
from plinth.tracking.schemas import check_artifact_path
from plinth.tracking.service import TrackingService

MAX_FILES = 10_000
PICKLE_FLAVORS = frozenset({"python"})  # flavors whose load runs pickle
# What a version may name: a flavor a server loads, or an MLflow model kept as it came.
REGISTERED_FLAVORS = (*FLAVORS, MLFLOW_FLAVOR)


def _now() -> float:
    return time.time()


class RegistryService:
    def __init__(self, platform: Platform, *, runs: TrackingService) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.projects = platform.projects
        self.artifacts = platform.artifacts
        self.runs = runs

    # register ---------------------------------------------------------------------------

    def register_model(
        self, project: str, name: str, req: s.ModelVersionRegister, *, principal: Principal
    ) -> s.ModelVersion:
        """The next version of ``name`` in ``project`` (the model is created by its
        first), holding the files ``req.run_id`` logged under ``req.artifact_path``.
        The same files from the same run again answer the version they made."""
        check_model_name(name)
        where = f"{name}<-{req.run_id}/{req.artifact_path}"
        try:
            with self.db.read() as conn:
                pid = self._writable_run(conn, project, req.run_id, principal)
                files = self._run_files(conn, req.run_id, req.artifact_path)
            check_layout([p for p, _ in files])
            meta = self._read_meta(pid, req.artifact_path, files)
        except PlinthError as exc:
            self.audit.refusal(principal, "models.register", exc, project=project, object=where)
            raise
        digest = manifest_digest(
            [s.ModelFile(path=p, digest=c.digest, size=c.size) for p, c in files]
        )
        with self.audit.recorded(principal, "models.register", project=project, object=where) as (
            conn,
            change,
        ):
            pid = self._writable_run(conn, project, req.run_id, principal)
            model_id = self._model_id_for_write(conn, pid, name)
            v = t.model_versions
            same = conn.execute(
                sa.select(v.c.version).where(
                    v.c.model_id == model_id,
                    v.c.run_id == req.run_id,
                    v.c.artifact_path == req.artifact_path,
                    v.c.digest == digest,
                )
            ).scalar()
            if same is not None:
                change.record = False  # the same registration again: nothing changes
                return self.version_of(conn, project, name, model_id, same)
            number = 1 + (
                conn.execute(
                    sa.select(sa.func.max(v.c.version)).where(v.c.model_id == model_id)
                ).scalar()
                or 0
            )
            conn.execute(
                v.insert(),
                {
                    "model_id": model_id,
                    "version": number,
                    "run_id": req.run_id,
                    "artifact_path": req.artifact_path,
                    "digest": digest,
                    "flavor": meta.flavor,
                    "signature": None if meta.signature is None else json.dumps(meta.signature),
                    "needs_pickle": meta.unsafe_pickle or meta.flavor in PICKLE_FLAVORS,
                    "unsafe_pickle": False,
                    "status": "ready",
                    "description": req.description,
                    "card": "{}",
                    "created_at": _now(),
                    "created_by": principal.name,
                },
            )
            rows = [
                {
                    "model_id": model_id,
                    "version": number,
                    "path": p,
                    "digest": c.digest,
                    "size": c.size,
                    "encrypted": c.encrypted,
                }
                for p, c in files
            ]
            conn.execute(t.model_version_files.insert(), rows)
            if req.tags:
                tag_rows = [
                    {"model_id": model_id, "version": number, "key": k, "value": val}
                    for k, val in req.tags.items()
                ]
                conn.execute(t.model_version_tags.insert(), tag_rows)
            lineage.record(
                self.db,
                conn,
                lineage.Node(f"runs:/{req.run_id}", pid),
                lineage.Node(f"models:/{project}/{name}/{number}", pid),
                "produced",
            )
            change.object = f"{name}/{number}"
            change.details = {"run_id": req.run_id, "digest": digest, "flavor": meta.flavor}
            return self.version_of(conn, project, name, model_id, number)

    def _writable_run(
        self, conn: Connection, project: str, run_id: str, principal: Principal
    ) -> str:
        """The project's id, if the principal may write to it and the run is in it."""
        pid = self.projects.require(conn, project, principal, Need.WRITE, record=False)
        row = self.runs.require_run(conn, run_id, principal, Need.READ)
        if row.project_id != pid:
            raise InvalidInput(f"run {run_id} is not in project {project!r}")
        return pid

    def _run_files(
        self, conn: Connection, run_id: str, artifact_path: str
    ) -> list[tuple[str, StoredContent]]:
        a = tt.artifacts
        prefix = check_artifact_path(artifact_path.rstrip("/")) + "/"
        rows = conn.execute(
            sa.select(a.c.path, a.c.digest, a.c.size, a.c.encrypted)
            .where(a.c.run_id == run_id, a.c.path.startswith(prefix, autoescape=True))
            .order_by(a.c.path)
            .limit(MAX_FILES + 1)
        ).all()
        if len(rows) > MAX_FILES:
            raise InvalidInput(f"a model version holds at most {MAX_FILES:,} files")
        return [(r.path[len(prefix) :], StoredContent(r.digest, r.size, r.encrypted)) for r in rows]

    def _read_meta(
        self, project_id: str, artifact_path: str, files: list[tuple[str, StoredContent]]
    ) -> s.ModelMetaFile:
        """MLmodel.json (or, for a model MLflow saved, its ``MLmodel``), parsed as data
        and checked: the flavor, its signature, and that every file it lists was logged."""
        found = dict(files)
        name = s.META_FILE if s.META_FILE in found or MLFLOW_META_FILE not in found else None
        where = f"{artifact_path}/{name or MLFLOW_META_FILE}"
        content = found.get(name or MLFLOW_META_FILE)
        if content is None:
            raise InvalidInput(
                f"the run logged no {where}: log the model with log_model, or save it with "
                "a Plinth flavor before logging its files"
            )
        if content.size > s.MAX_META_BYTES:
            raise InvalidInput(f"{where} is over {s.MAX_META_BYTES:,} bytes")
        raw = b"".join(self.artifacts.open(project_id, content))
        if hashlib.sha256(raw).hexdigest() != content.digest:
            raise InvalidInput(f"{where} does not match its digest")
        try:
            if name is None:
                meta = s.ModelMetaFile.model_validate(meta_from_mlflow(raw).model_dump())
            else:
                meta = s.ModelMetaFile.model_validate_json(raw)
            if meta.signature is not None:  # read by every card, page and replica after
                Signature.model_validate(meta.signature)
        except ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(str(p) for p in first["loc"]) or "the file"
            raise InvalidInput(
                f"{where} is not a model description: {at}: {first['msg']}"
            ) from None
        missing = [f for f in meta.files if f not in found]
        if missing:
            raise InvalidInput(f"{where} lists files the run did not log: {', '.join(missing[:5])}")
        if meta.flavor not in REGISTERED_FLAVORS:  # no server could ever load it
            raise Unprocessable(
                f"{where} names the flavor {meta.flavor!r}, which Plinth has no loader for: "
                f"the known flavors are {', '.join(REGISTERED_FLAVORS)}"
            )
        return meta

    def _model_id_for_write(self, conn: Connection, project_id: str, name: str) -> str:
        """The model's id, created if new; its row is locked for this transaction, so
        concurrent registrations number their versions one after the other."""
        m = t.registered_models
        now = _now()
        conn.execute(
            self.db.insert_ignoring_duplicates(m),
            {
                "id": uuid.uuid4().hex,
                "project_id": project_id,
                "name": name,
                "description": "",
                "created_at": now,
                "updated_at": now,
            },
        )
        where = sa.and_(m.c.project_id == project_id, m.c.name == name)
        model_id = str(conn.execute(sa.select(m.c.id).where(where)).scalar_one())
        self.lock_model(conn, model_id)
        return model_id

    # read -------------------------------------------------------------------------------

    def list_models(self, project: str, *, principal: Principal) -> list[s.RegisteredModel]:
        m = t.registered_models
        with self.db.read() as conn:
            pid = self.projects.require(conn, project, principal, Need.READ)
            rows = conn.execute(sa.select(m).where(m.c.project_id == pid).order_by(m.c.name))
            return [self._model(conn, project, row) for row in rows.all()]

    def get_model(self, project: str, name: str, *, principal: Principal) -> s.RegisteredModel:
        with self.db.read() as conn:
            row = self.require_model(conn, project, name, principal, Need.READ)
            return self._model(conn, project, row)

    def list_versions(
        self, project: str, name: str, *, principal: Principal
    ) -> list[s.ModelVersion]:
        v = t.model_versions
        with self.db.read() as conn:
            model = self.require_model(conn, project, name, principal, Need.READ)
            numbers = conn.execute(
                sa.select(v.c.version).where(v.c.model_id == model.id).order_by(v.c.version)
            ).scalars()
            return [self.version_of(conn, project, name, model.id, n) for n in numbers.all()]

    def get_version(
        self, project: str, name: str, version: int, *, principal: Principal
    ) -> s.ModelVersion:
        with self.db.read() as conn:
            model = self.require_model(conn, project, name, principal, Need.READ)
            self.require_version(conn, model, name, version)
            return self.version_of(conn, project, name, model.id, version)

    def version_files(
        self, project: str, name: str, version: int, *, principal: Principal
    ) -> list[s.ModelFile]:
        f = t.model_version_files
        with self.db.read() as conn:
            model = self.require_model(conn, project, name, principal, Need.READ)
            self.require_version(conn, model, name, version)
            rows = conn.execute(
                sa.select(f.c.path, f.c.digest, f.c.size)
                .where(f.c.model_id == model.id, f.c.version == version)
                .order_by(f.c.path)
            )
            return [s.ModelFile(**r) for r in rows.mappings()]

    def open_version_file(
        self, project: str, name: str, version: int, path: str, *, principal: Principal
    ) -> tuple[s.ModelFile, Iterator[bytes]]:
        """One file of a version and its bytes, opened now; the reader verifies them."""
        check_artifact_path(path)
        f = t.model_version_files
        with self.db.read() as conn:
            model = self.require_model(conn, project, name, principal, Need.READ)
            self.require_version(conn, model, name, version)
            row = conn.execute(
                sa.select(f.c.path, f.c.digest, f.c.size, f.c.encrypted).where(
                    f.c.model_id == model.id, f.c.version == version, f.c.path == path
                )
            ).first()
        if row is None:
            raise NotFound(f"version {version} of model {name!r} has no file {path!r}")
        content = StoredContent(row.digest, row.size, row.encrypted)
        found = s.ModelFile(path=row.path, digest=row.digest, size=row.size)
        return found, self.artifacts.open(model.project_id, content)

    # change -----------------------------------------------------------------------------

    def update_version(
        self,
        project: str,
        name: str,
        version: int,
        update: s.ModelVersionUpdate,
        *,
        principal: Principal,
    ) -> s.ModelVersion:
        """Describe, archive or restore a version, edit its card; marking it
        ``unsafe_pickle`` (allowing its pickle to load in a serving worker) takes a
        platform admin (a serving worker runs as the server's own user, which reads
        every project: a project's admin is any user who made one), unmarking it a
        project admin. Its files never change."""
        need = Need.ADMIN if update.unsafe_pickle is not None else Need.WRITE
        where = f"{name}/{version}"
        with self.audit.recorded(principal, "models.update", project=project, object=where) as (
            conn,
            change,
        ):
            model = self.require_model(conn, project, name, principal, need, record=False)
            row = self.require_version(conn, model, name, version)
            if update.unsafe_pickle and not allows(principal, Permission.PLATFORM_ADMIN):
                raise PermissionDenied(
                    "marking a version unsafe_pickle takes a platform admin: its pickle "
                    "would run as the server's own user, which reads every project"
                )
            values: dict[str, Any] = update.model_dump(exclude_none=True, exclude={"card"})
            change.details = dict(values)
            if update.card is not None:
                edited = update.card.model_dump(exclude_none=True)
                values["card"] = json.dumps(json.loads(row.card) | edited, sort_keys=True)
                change.details["card"] = sorted(edited)  # which fields, not their text
            v = t.model_versions
            if values:
                conn.execute(
                    v.update()
                    .where(v.c.model_id == model.id, v.c.version == version)
                    .values(values)
                )
            return self.version_of(conn, project, name, model.id, version)

    def update_model(
        self, project: str, name: str, description: str, *, principal: Principal
    ) -> s.RegisteredModel:
        """Describe a model (its versions keep their own descriptions)."""
        with self.audit.recorded(principal, "models.describe", project=project, object=name) as (
            conn,
            change,
        ):
            model = self.require_model(conn, project, name, principal, Need.WRITE, record=False)
            m = t.registered_models
            conn.execute(
                m.update()
                .where(m.c.id == model.id)
                .values(description=description, updated_at=_now())
            )
            change.details = {"description": len(description)}
            row = conn.execute(sa.select(m).where(m.c.id == model.id)).one()
            return self._model(conn, project, row)

    def set_version_tag(
        self, project: str, name: str, version: int, key: str, value: str, *, principal: Principal
    ) -> s.ModelVersion:
        where = f"{name}/{version}"
        with self.audit.recorded(principal, "models.tag", project=project, object=where) as (
            conn,
            change,
        ):
            model = self.require_model(conn, project, name, principal, Need.WRITE, record=False)
            self.require_version(conn, model, name, version)
            change.details = {"key": key, "value": value}
            keys = ("model_id", "version", "key")
            conn.execute(
                self.db.upsert(t.model_version_tags, keys, ("value",)),
                {"model_id": model.id, "version": version, "key": key, "value": value},
            )
            return self.version_of(conn, project, name, model.id, version)

    def delete_version_tag(
        self, project: str, name: str, version: int, key: str, *, principal: Principal
    ) -> s.ModelVersion:
        where = f"{name}/{version}"
        with self.audit.recorded(principal, "models.untag", project=project, object=where) as (
            conn,
            change,
        ):
            model = self.require_model(conn, project, name, principal, Need.WRITE, record=False)
            self.require_version(conn, model, name, version)
            tg = t.model_version_tags
            gone = conn.execute(
                tg.delete().where(
                    tg.c.model_id == model.id, tg.c.version == version, tg.c.key == key
                )
            ).rowcount
            if not gone:
                raise NotFound(f"version {version} of model {name!r} has no tag {key!r}")
            change.details = {"key": key}
            return self.version_of(conn, project, name, model.id, version)

    # shared with aliases and cards --------------------------------------------------------

    def require_model(
        self,
        conn: Connection,
        project: str,
        name: str,
        principal: Principal,
        need: Need,
        *,
        record: bool = True,
    ) -> Any:
        """The model's row, if the principal may ``need`` its project; a model that
        does not exist and a project one cannot see answer alike."""
        hidden = NotFound(f"no model {name!r} in project {project!r}")
        m = t.registered_models
        try:
            pid = self.projects.require(conn, project, principal, need, record=record)
        except NotFound:
            raise hidden from None
        row = conn.execute(sa.select(m).where(m.c.project_id == pid, m.c.name == name)).first()
        if row is None:
            raise hidden
        return row

    def lock_model(self, conn: Connection, model_id: str) -> None:
        """Hold the model's row for this write transaction (Postgres: a row lock;
        SQLite's writer lock holds already): its changes happen one after another."""
        m = t.registered_models
        conn.execute(m.update().where(m.c.id == model_id).values(updated_at=_now()))

    def require_version(self, conn: Connection, model: Any, name: str, version: int) -> Any:
        v = t.model_versions
        row = conn.execute(
            sa.select(v).where(v.c.model_id == model.id, v.c.version == version)
        ).first()
        if row is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return row

    def _model(self, conn: Connection, project: str, row: Any) -> s.RegisteredModel:
        v, al = t.model_versions, t.model_aliases
        count, latest = conn.execute(
            sa.select(sa.func.count(), sa.func.max(v.c.version)).where(v.c.model_id == row.id)
        ).one()
        aliases = conn.execute(
            sa.select(al.c.alias, al.c.version).where(al.c.model_id == row.id).order_by(al.c.alias)
        )
        return s.RegisteredModel(
            project=project,
            name=row.name,
            description=row.description,
            created_at=row.created_at,
            updated_at=row.updated_at,
            latest_version=latest,
            versions=count,
            aliases={a: n for a, n in aliases.all()},
        )

    def version_of(
        self, conn: Connection, project: str, name: str, model_id: str, version: int
    ) -> s.ModelVersion:
        v, al, tg = t.model_versions, t.model_aliases, t.model_version_tags
        row = conn.execute(
            sa.select(v).where(v.c.model_id == model_id, v.c.version == version)
        ).one()
        aliases = conn.execute(
            sa.select(al.c.alias)
            .where(al.c.model_id == model_id, al.c.version == version)
            .order_by(al.c.alias)
        ).scalars()
        tags = conn.execute(
            sa.select(tg.c.key, tg.c.value).where(
                tg.c.model_id == model_id, tg.c.version == version
            )
        )
        return s.ModelVersion(
            project=project,
            name=name,
            version=version,
            uri=f"models:/{project}/{name}/{version}",
            digest=row.digest,
            run_id=row.run_id,
            artifact_path=row.artifact_path,
            flavor=row.flavor,
            signature=None if row.signature is None else json.loads(row.signature),
            needs_pickle=row.needs_pickle,
            unsafe_pickle=row.unsafe_pickle,
            status=row.status,
            description=row.description,
            card=s.CardFields(**json.loads(row.card)),
            created_at=row.created_at,
            created_by=row.created_by,
            aliases=list(aliases.all()),
            tags={k: val for k, val in tags.all()},
        )
