"""Datasets: versions as content-addressed manifests of files, pushed and pulled.

A push is three steps, each safe to repeat: ask which content the project lacks
(``missing_content``), upload that (``upload_content``, outside any transaction), then
name it all as the next version (``create_version``, one audited transaction). A push
killed anywhere leaves no version; its retry uploads only what did not arrive. The
same files as the newest version make no new version. Editors push, viewers read,
outsiders get the same 404 as for a dataset that does not exist.

The server never parses the files: the schema and row counts of tabular files come
with the manifest from the client that read them (the SDK infers them with pyarrow).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from plinth.core import lineage
from plinth.core.access import Need, Principal
from plinth.core.artifacts import StoredContent
from plinth.core.blobs import check_digest, manifest_digest
from plinth.core.platform import Platform
from plinth.data import schemas as s
from plinth.data import tables as t
from plinth.data.packs import member_chunks, read_tar, write_tar
from plinth.data.refs import LATEST, check_dataset_name, parse_ref, parse_version
from plinth.data.rules import rules_digest
from plinth.errors import BlobMissing, Conflict, InvalidInput, NotFound, PlinthError
from plinth.tracking.schemas import check_artifact_path
from plinth.tracking.service import TrackingService

PUSH = "datasets.push"
CONTENT_PUT = "datasets.content"
RULES = "datasets.rules"
USE = "datasets.use"
log = logging.getLogger("plinth.data")


def _now() -> float:
    return time.time()


class DatasetService:
    def __init__(self, platform: Platform, *, runs: TrackingService) -> None:
        self.runs = runs
        self.db = platform.db
        self.audit = platform.audit
        self.projects = platform.projects
        self.artifacts = platform.artifacts
        # a version's thousand file rows on the driver's cursor (``Prepared``)
        self._insert_files = self.db.prepare(
            t.dataset_files.insert(), keys=[c.name for c in t.dataset_files.c]
        )

    # push ---------------------------------------------------------------------------

    def missing_content(
        self, project: str, name: str, query: s.ContentQuery, *, principal: Principal
    ) -> s.ContentMissing:
        """Which of the digests the project does not hold (a first push creates the
        project, as a first run does)."""
        check_dataset_name(name)
        try:
            with self.db.write() as conn:
                pid = self.projects.create_or_require(conn, project, principal)
                held = self.artifacts.held(conn, pid, query.digests)
        except PlinthError as exc:
            self.audit.refusal(principal, PUSH, exc, project=project, object=name)
            raise
        # The project's record is the answer: content is recorded only once stored
        # durably, and looking each digest up in the store would cost a request each on S3.
        return s.ContentMissing(missing=sorted({d for d in query.digests if d not in held}))

    def upload_content(
        self, project: str, name: str, chunks: Iterable[bytes], digest: str, *, principal: Principal
    ) -> s.Content:
        """Store one file's bytes in the project (outside any transaction: an upload
        takes a while); they must hash to ``digest``."""
        check_dataset_name(name)
        try:
            with self.db.write() as conn:
                pid = self.projects.create_or_require(conn, project, principal)
            content = self.artifacts.put(pid, chunks, digest)
        except PlinthError as exc:
            self.audit.refusal(principal, CONTENT_PUT, exc, project=project, object=name)
            raise
        return s.Content(digest=content.digest, size=content.size)

    def upload_batch(
        self, project: str, name: str, chunks: Iterable[bytes], *, principal: Principal
    ) -> s.ContentBatch:
        """Store many files' bytes sent as one tar stream, each member named by the
        digest its bytes must hash to. What arrived before a failing member is kept."""
        check_dataset_name(name)
        stored: list[StoredContent] = []
        try:
            with self.db.write() as conn:
                pid = self.projects.create_or_require(conn, project, principal)
            with self.artifacts.batch(pid) as put:
                for digest, size, f in read_tar(chunks):
                    check_digest(digest)
                    if len(stored) == s.MAX_FILES:
                        raise InvalidInput(f"a batch holds at most {s.MAX_FILES:,} files")
                    stored.append(put(member_chunks(f), digest, size))
        except PlinthError as exc:
            self.audit.refusal(principal, CONTENT_PUT, exc, project=project, object=name)
            raise
        return s.ContentBatch(stored=[s.Content(digest=c.digest, size=c.size) for c in stored])

    def create_version(
        self, project: str, name: str, req: s.VersionCreate, *, principal: Principal
    ) -> s.DatasetVersion:
        """The next version of ``name`` (the dataset is created by its first): the
        files of ``req``, whose content the project must hold. The same files as the
        newest version answer that version, with ``created`` false."""
        check_dataset_name(name)
        digest = manifest_digest((f.path, f.digest, f.size) for f in req.files)
        with self.audit.recorded(principal, PUSH, project=project, object=name) as (conn, change):
            pid = self.projects.create_or_require(conn, project, principal)
            contents = self._contents(conn, pid, req.files)
            dataset_id = self._dataset_for_write(conn, pid, name)
            _check_report(conn, dataset_id, name, req.validation)
            v = t.dataset_versions
            newest = conn.execute(
                sa.select(v.c.version, v.c.digest)
                .where(v.c.dataset_id == dataset_id)
                .order_by(v.c.version.desc())
                .limit(1)
            ).first()
            if newest is not None and newest.digest == digest:
                change.record = False  # the same files again: nothing changes
                return self._version(conn, project, name, dataset_id, newest.version, False)
            number = 1 + (newest.version if newest is not None else 0)
            now = _now()
            d = t.datasets
            conn.execute(d.update().where(d.c.id == dataset_id).values(updated_at=now))
            tables = [f.table for f in req.files if f.table is not None]
            conn.execute(
                v.insert(),
                {
                    "dataset_id": dataset_id,
                    "version": number,
                    "digest": digest,
                    "message": req.message,
                    "files": len(req.files),
                    "size": sum(f.size for f in req.files),
                    "rows": sum(tb.rows for tb in tables) if tables else None,
                    "validation": _json(req.validation),
                    "created_at": now,
                    "created_by": principal.name,
                },
            )
            self._insert_files.run_many(
                conn,
                [
                    {
                        "dataset_id": dataset_id,
                        "version": number,
                        "path": f.path,
                        "digest": f.digest,
                        "size": f.size,
                        "encrypted": contents[f.digest].encrypted,
                        "tabular": None if f.table is None else f.table.model_dump_json(),
                        "profile": _json(req.profiles.get(f.path)),
                    }
                    for f in req.files
                ],
            )
            change.object = f"{name}@{number}"
            change.details = {"digest": digest, "files": len(req.files)}
            return self._version(conn, project, name, dataset_id, number, True)

    def set_rules(
        self, project: str, name: str, rules: s.RuleSet, *, principal: Principal
    ) -> s.Rules:
        """Replace a dataset's validation rules (the dataset is made if new); audited."""
        check_dataset_name(name)
        d = t.datasets
        digest = rules_digest(rules)
        with self.audit.recorded(principal, RULES, project=project, object=name) as (conn, change):
            pid = self.projects.create_or_require(conn, project, principal)
            dataset_id = self._dataset_for_write(conn, pid, name)
            conn.execute(
                d.update()
                .where(d.c.id == dataset_id)
                .values(
                    rules=json.dumps(rules.model_dump(mode="json", exclude_none=True)["rules"]),
                    rules_digest=digest,
                    rules_updated_at=_now(),
                    rules_updated_by=principal.name,
                )
            )
            change.details = {"digest": digest, "rules": len(rules.rules)}
            return _rules_of(conn.execute(sa.select(d).where(d.c.id == dataset_id)).one())

    def get_rules(self, project: str, name: str, *, principal: Principal) -> s.Rules:
        with self.db.read() as conn:
            return _rules_of(self._require(conn, project, name, principal))

    def _contents(
        self, conn: Connection, project_id: str, files: list[s.DatasetFile]
    ) -> dict[str, StoredContent]:
        held = self.artifacts.held(conn, project_id, (f.digest for f in files))
        lacking = [f for f in files if f.digest not in held]
        if lacking:
            raise BlobMissing(
                f"the content of {len(lacking)} file(s) is not in this project, "
                f"{lacking[0].path!r} first; upload it, then create the version"
            )
        for f in files:
            if held[f.digest].size != f.size:
                raise InvalidInput(
                    f"{f.path!r}: size {f.size} does not match its content "
                    f"({held[f.digest].size} bytes)"
                )
        return held

    def _dataset_for_write(self, conn: Connection, project_id: str, name: str) -> str:
        """The dataset's id, created if new; its row is locked for this transaction, so
        concurrent pushes number their versions one after the other."""
        d = t.datasets
        now = _now()
        conn.execute(
            self.db.insert_ignoring_duplicates(d),
            {
                "id": uuid.uuid4().hex,
                "project_id": project_id,
                "name": name,
                "description": "",
                "created_at": now,
                "updated_at": now,
            },
        )
        where = sa.and_(d.c.project_id == project_id, d.c.name == name)
        dataset_id = str(conn.execute(sa.select(d.c.id).where(where)).scalar_one())
        # a row lock (Postgres; SQLite's writer lock holds already) that changes nothing
        conn.execute(d.update().where(d.c.id == dataset_id).values(updated_at=d.c.updated_at))
        return dataset_id

    # read -----------------------------------------------------------------------------

    def list_datasets(self, project: str, *, principal: Principal) -> list[s.Dataset]:
        d = t.datasets
        with self.db.read() as conn:
            pid = self.projects.require(conn, project, principal, Need.READ)
            rows = conn.execute(sa.select(d).where(d.c.project_id == pid).order_by(d.c.name))
            return [self._dataset(conn, project, row) for row in rows.all()]

    def get_dataset(self, project: str, name: str, *, principal: Principal) -> s.Dataset:
        with self.db.read() as conn:
            return self._dataset(conn, project, self._require(conn, project, name, principal))

    def list_versions(
        self, project: str, name: str, *, principal: Principal
    ) -> list[s.DatasetVersion]:
        v = t.dataset_versions
        with self.db.read() as conn:
            dataset = self._require(conn, project, name, principal)
            rows = conn.execute(
                sa.select(v).where(v.c.dataset_id == dataset.id).order_by(v.c.version)
            )
            return [_version_of(project, name, row) for row in rows.all()]

    def get_version(
        self, project: str, name: str, selector: str, *, principal: Principal
    ) -> s.DatasetVersion:
        with self.db.read() as conn:
            dataset = self._require(conn, project, name, principal)
            return _version_of(project, name, self._version_row(conn, dataset, selector))

    def version_files(
        self, project: str, name: str, selector: str, *, principal: Principal
    ) -> list[s.DatasetFile]:
        with self.db.read() as conn:
            dataset = self._require(conn, project, name, principal)
            row = self._version_row(conn, dataset, selector)
            return [_file_of(r) for r in self._file_rows(conn, dataset.id, row.version)]

    def open_file(
        self, project: str, name: str, selector: str, path: str, *, principal: Principal
    ) -> tuple[s.DatasetFile, Iterator[bytes]]:
        """A file of a version and its bytes, opened now (a missing blob is an error
        before any byte is sent); the caller verifies the digest end to end."""
        check_artifact_path(path)
        f = t.dataset_files
        with self.db.read() as conn:
            dataset = self._require(conn, project, name, principal)
            version = self._version_row(conn, dataset, selector).version
            row = conn.execute(
                sa.select(f).where(
                    f.c.dataset_id == dataset.id, f.c.version == version, f.c.path == path
                )
            ).first()
        if row is None:
            raise NotFound(f"{name}@{version} has no file {path!r}")
        content = StoredContent(row.digest, row.size, row.encrypted)
        return _file_of(row), self.artifacts.open(dataset.project_id, content)

    def use(
        self, project: str, name: str, selector: str, req: s.DatasetUse, *, principal: Principal
    ) -> s.DatasetVersion:
        """Record that a run read a version (an edge of the lineage graph); audited.
        The principal reads the dataset and writes to the run."""
        with self.audit.recorded(principal, USE, project=project, object=name) as (conn, change):
            dataset = self._require(conn, project, name, principal, record=False)
            row = self._version_row(conn, dataset, selector)
            run = self.runs.require_run(conn, req.run_id, principal, Need.WRITE)
            lineage.record(
                self.db,
                conn,
                lineage.Node(f"datasets:/{project}/{name}@{row.version}", dataset.project_id),
                lineage.Node(f"runs:/{req.run_id}", run.project_id),
                "read",
            )
            change.object = f"{name}@{row.version}"
            change.details = {"run_id": req.run_id}
            return _version_of(project, name, row)

    def pin(
        self, conn: Connection, project: str, ref: str, principal: Principal
    ) -> tuple[str, str]:
        """In the caller's transaction: the version ``ref`` names now (``NAME`` is the
        newest), as ``NAME@VERSION``, and its digest, for work that must read exactly
        it (a pipeline's step)."""
        wanted = parse_ref(ref)
        dataset = self._require(conn, project, wanted.name, principal, record=False)
        row = self._version_row(conn, dataset, wanted.selector)
        return f"{wanted.name}@{row.version}", str(row.digest)

    def newest_version(self, conn: Connection, project_id: str, name: str) -> int | None:
        """The newest version number of a dataset (None: no such dataset, or no
        version yet), for the server's own watchers; no access check."""
        d, v = t.datasets, t.dataset_versions
        found = conn.execute(
            sa.select(sa.func.max(v.c.version))
            .select_from(v.join(d, d.c.id == v.c.dataset_id))
            .where(d.c.project_id == project_id, d.c.name == name)
        ).scalar()
        return None if found is None else int(found)

    def archive(
        self, project: str, name: str, selector: str, paths: list[str], *, principal: Principal
    ) -> tuple[int, Iterator[bytes]]:
        """Files of a version as one tar stream (members named by path, in the order
        asked) and its length; each file's bytes are opened when the stream reaches
        it. The caller verifies each against its digest."""
        f = t.dataset_files
        with self.db.read() as conn:
            dataset = self._require(conn, project, name, principal)
            version = self._version_row(conn, dataset, selector).version
            rows: dict[str, Any] = {}
            wanted = sorted(set(paths))
            for start in range(0, len(wanted), 500):
                for row in conn.execute(
                    sa.select(f).where(
                        f.c.dataset_id == dataset.id,
                        f.c.version == version,
                        f.c.path.in_(wanted[start : start + 500]),
                    )
                ):
                    rows[row.path] = row
        lacking = [p for p in paths if p not in rows]
        if lacking:
            raise NotFound(f"{name}@{version} has no file {lacking[0]!r}")

        contents = [StoredContent(rows[p].digest, rows[p].size, rows[p].encrypted) for p in paths]
        openers = self.artifacts.openers(dataset.project_id, contents)
        return write_tar(
            (p, rows[p].size, opener) for p, opener in zip(paths, openers, strict=True)
        )

    def profiles(
        self, project: str, name: str, selector: str, *, principal: Principal
    ) -> dict[str, s.Profile]:
        """The profile of each profiled tabular file of a version, by path."""
        f = t.dataset_files
        with self.db.read() as conn:
            dataset = self._require(conn, project, name, principal)
            version = self._version_row(conn, dataset, selector).version
            rows = conn.execute(
                sa.select(f.c.path, f.c.profile)
                .where(
                    f.c.dataset_id == dataset.id, f.c.version == version, f.c.profile.is_not(None)
                )
                .order_by(f.c.path)
            )
            stored = {r.path: _stored_profile(r.path, r.profile) for r in rows}
        return {path: p for path, p in stored.items() if p is not None}

    def diff(
        self, project: str, name: str, old: str, new: str, *, principal: Principal
    ) -> s.DatasetDiff:
        """What changed from version ``old`` to version ``new``: files added, removed
        and changed, with their schemas' column changes and row counts."""
        with self.db.read() as conn:
            dataset = self._require(conn, project, name, principal)
            a = self._version_row(conn, dataset, old)
            b = self._version_row(conn, dataset, new)
            before = {r.path: _file_of(r) for r in self._file_rows(conn, dataset.id, a.version)}
            after = {r.path: _file_of(r) for r in self._file_rows(conn, dataset.id, b.version)}
        changes = [
            change
            for path in sorted(before.keys() | after.keys())
            if (change := _file_change(path, before.get(path), after.get(path))) is not None
        ]
        counts = {kind: sum(c.change == kind for c in changes) for kind in ("added", "removed")}
        changed = sum(c.change == "changed" for c in changes)
        return s.DatasetDiff(
            project=project,
            name=name,
            old=a.version,
            new=b.version,
            added=counts["added"],
            removed=counts["removed"],
            changed=changed,
            unchanged=len(after) - counts["added"] - changed,
            rows=(a.rows, b.rows),
            changes=changes,
        )

    # shared -----------------------------------------------------------------------------

    def _require(
        self, conn: Connection, project: str, name: str, principal: Principal, record: bool = True
    ) -> Any:
        """The dataset's row, if the principal may read its project; a dataset that does
        not exist and a project one cannot see answer alike."""
        hidden = NotFound(f"no dataset {name!r} in project {project!r}")
        d = t.datasets
        try:
            pid = self.projects.require(conn, project, principal, Need.READ, record=record)
        except NotFound:
            raise hidden from None
        row = conn.execute(sa.select(d).where(d.c.project_id == pid, d.c.name == name)).first()
        if row is None:
            raise hidden
        return row

    @staticmethod
    def _version_row(conn: Connection, dataset: Any, selector: str) -> Any:
        v = t.dataset_versions
        stmt = sa.select(v).where(v.c.dataset_id == dataset.id)
        if selector == LATEST:
            row = conn.execute(stmt.order_by(v.c.version.desc()).limit(1)).first()
            if row is None:
                raise NotFound(f"dataset {dataset.name!r} has no versions")
            return row
        number = parse_version(selector)
        row = conn.execute(stmt.where(v.c.version == number)).first()
        if row is None:
            raise NotFound(f"dataset {dataset.name!r} has no version {number}")
        return row

    @staticmethod
    def _file_rows(conn: Connection, dataset_id: str, version: int) -> list[Any]:
        f = t.dataset_files
        return list(
            conn.execute(
                sa.select(f)
                .where(f.c.dataset_id == dataset_id, f.c.version == version)
                .order_by(f.c.path)
            )
        )

    def _version(
        self,
        conn: Connection,
        project: str,
        name: str,
        dataset_id: str,
        number: int,
        created: bool,
    ) -> s.DatasetVersion:
        v = t.dataset_versions
        row = conn.execute(
            sa.select(v).where(v.c.dataset_id == dataset_id, v.c.version == number)
        ).one()
        return _version_of(project, name, row, created)

    @staticmethod
    def _dataset(conn: Connection, project: str, row: Any) -> s.Dataset:
        v = t.dataset_versions
        count, latest = conn.execute(
            sa.select(sa.func.count(), sa.func.max(v.c.version)).where(v.c.dataset_id == row.id)
        ).one()
        return s.Dataset(
            project=project,
            name=row.name,
            description=row.description,
            created_at=row.created_at,
            updated_at=row.updated_at,
            latest_version=latest,
            versions=count,
        )


def _version_of(project: str, name: str, row: Any, created: bool = True) -> s.DatasetVersion:
    validation = row.validation
    return s.DatasetVersion(
        validation=None
        if validation is None
        else s.ValidationReport.model_validate_json(validation),
        project=project,
        name=name,
        version=row.version,
        ref=f"{name}@{row.version}",
        digest=row.digest,
        message=row.message,
        files=row.files,
        size=row.size,
        rows=row.rows,
        created_at=row.created_at,
        created_by=row.created_by,
        created=created,
    )


def _rules_of(row: Any) -> s.Rules:
    try:
        rules = s.RuleSet.model_validate({"rules": json.loads(row.rules)}).rules
    except ValidationError as exc:  # stored before the checks they now fail (a NaN bound)
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise Conflict(
            f"the stored rules of dataset {row.name!r} fail the checks rules now pass "
            f"({at}: {str(first['msg']).removeprefix('Value error, ')}); set them again"
        ) from None
    return s.Rules(
        rules=rules,
        digest=row.rules_digest,
        updated_at=row.rules_updated_at,
        updated_by=row.rules_updated_by,
    )


def _check_report(
    conn: Connection, dataset_id: str, name: str, report: s.ValidationReport | None
) -> None:
    """A dataset with rules takes a version only with a report against those rules
    that no blocking rule failed (the pusher checked them where the data is)."""
    d = t.datasets
    digest = conn.execute(sa.select(d.c.rules_digest).where(d.c.id == dataset_id)).scalar_one()
    if report is None:
        if digest:
            raise Conflict(
                f"dataset {name!r} has validation rules (sha256:{digest[:12]}…) and this push "
                "did not check them; push with Plinth's SDK or CLI, which check them"
            )
        return
    if report.rules_digest != digest:
        raise Conflict(
            f"the rules of dataset {name!r} changed while this push checked them; push again"
        )
    if report.blocking:
        raise InvalidInput(
            f"blocking rules failed ({', '.join(sorted({r.rule for r in report.blocking}))}): "
            "nothing was pushed"
        )


def _stored_profile(path: str, text: str) -> s.Profile | None:
    """A stored profile as the checks of a push see it. One stored before those checks
    (a NaN, a count of 0 with top values…) keeps the columns that pass them; the rest
    are counted as left out. None when not even its row counts hold."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        log.warning("the stored profile of %r is not an object: not shown", path)
        return None
    try:
        return s.Profile.model_validate(data)
    except ValidationError:
        pass
    columns = data.pop("columns", None)
    columns = columns if isinstance(columns, list) else []
    try:
        bare = s.Profile.model_validate(data | {"columns": []})
    except ValidationError:
        log.warning("the stored profile of %r does not hold: not shown", path)
        return None
    kept: list[s.ColumnProfile] = []
    for column in columns:
        try:
            kept += s.Profile.model_validate(data | {"columns": [column]}).columns
        except ValidationError:
            continue
    dropped = len(columns) - len(kept)
    log.info("the stored profile of %r: %d columns do not hold, not shown", path, dropped)
    return bare.model_copy(
        update={"columns": kept, "columns_left_out": bare.columns_left_out + dropped}
    )


def _json(model: Any) -> str | None:
    return None if model is None else str(model.model_dump_json(exclude_none=True))


def _file_of(row: Any) -> s.DatasetFile:
    table = None if row.tabular is None else s.Table.model_validate(json.loads(row.tabular))
    return s.DatasetFile(path=row.path, digest=row.digest, size=row.size, table=table)


def _file_change(
    path: str, old: s.DatasetFile | None, new: s.DatasetFile | None
) -> s.FileChange | None:
    if old is None:
        return s.FileChange(path=path, change="added", new=new)
    if new is None:
        return s.FileChange(path=path, change="removed", old=old)
    if old.digest == new.digest:
        return None
    return s.FileChange(
        path=path, change="changed", old=old, new=new, columns=column_changes(old.table, new.table)
    )


def column_changes(old: s.Table | None, new: s.Table | None) -> list[s.ColumnChange]:
    """Columns added, removed, or with another type or nullability, in the new
    table's order (removed ones last)."""
    before = {c.name: _typed(c) for c in old.columns} if old else {}
    after = {c.name: _typed(c) for c in new.columns} if new else {}
    changes = []
    for name, typed in after.items():
        if name not in before:
            changes.append(s.ColumnChange(name=name, change="added", new=typed))
        elif before[name] != typed:
            changes.append(s.ColumnChange(name=name, change="changed", old=before[name], new=typed))
    changes += [
        s.ColumnChange(name=name, change="removed", old=typed)
        for name, typed in before.items()
        if name not in after
    ]
    return changes


def _typed(column: s.Column) -> str:
    return column.type if column.nullable else f"{column.type} not null"
