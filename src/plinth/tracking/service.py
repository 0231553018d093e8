"""The tracking use-cases. Every entry point of the API, CLI and SDK ends up here."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core import audit
from plinth.core.access import Need, Principal
from plinth.core.platform import Platform
from plinth.core.projects import projects, visible_projects
from plinth.errors import Conflict, InvalidInput, NotFound
from plinth.tracking import history, search
from plinth.tracking import schemas as s
from plinth.tracking import tables as t


def _now() -> float:
    return time.time()


CHUNK_POINTS = 10_000  # the most points a chunk of history holds
SMALL_CHUNK = 1_000  # a series this small joins its metric's last chunk if it has room
SYSTEM = Principal(name="plinth")  # the platform itself, e.g. reaping silent runs
MAX_VALUE_CHARS = 65_536
_ID_PREFIX = re.compile(r"^[0-9a-f]{8,31}\Z")


def _number(value: Any) -> float | None:
    """A param's value as a float for numeric search, when it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


class TrackingService:
    def __init__(self, platform: Platform) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.projects = platform.projects
        self.artifacts = platform.artifacts  # for the start-up sweep
        self.settings = platform.settings
        # Built once: constructing a statement costs more than running it on SQLite;
        # the ones every run pays are also run on the driver's cursor (``Prepared``).
        db = self.db
        lm = t.latest_metrics
        self._insert_new_run = db.prepare(
            db.insert_ignoring_duplicates(t.runs).returning(t.runs.c.id),
            keys=[c.name for c in t.runs.c],
        )
        self._insert_params = db.prepare(
            t.params.insert(), keys=["run_id", "key", "value", "number", "project_id"]
        )
        self._insert_batch_id = db.prepare(
            db.insert_ignoring_duplicates(t.log_batches).returning(t.log_batches.c.batch_id)
        )
        self._upsert_tags = db.prepare(db.upsert(t.tags, ["run_id", "key"], ["value", "number"]))
        self._upsert_latest = db.prepare(
            db.upsert(
                lm,
                ["run_id", "key"],
                ["step", "timestamp", "value"],
                where=lambda ex: sa.or_(
                    ex.step > lm.c.step,
                    sa.and_(ex.step == lm.c.step, ex.timestamp >= lm.c.timestamp),
                ),
            )
        )
        self._run_access = db.prepare(_RUN)
        self._run_by_id = db.prepare(_RUN_BY_ID)
        self._extras_of_run = db.prepare(_EXTRAS_OF_RUN)
        self._touch = db.prepare(_TOUCH)
        mc = t.metric_chunks
        of_metric = sa.and_(mc.c.run_id == sa.bindparam("run_id"), mc.c.key == sa.bindparam("key"))
        self._insert_chunks = db.prepare(
            mc.insert(), keys=["run_id", "key", "count", "steps", "timestamps", "values"]
        )
        self._last_chunk = db.prepare(
            sa.select(mc.c.id, mc.c.count, mc.c.steps, mc.c.timestamps, mc.c["values"])
            .where(of_metric)
            .order_by(mc.c.id.desc())
            .limit(1)
        )
        # only as read: a batch that grew it meanwhile (Postgres lets two run at once)
        # makes this one a chunk of its own instead of being overwritten
        self._grow_chunk = db.prepare(
            mc.update()
            .where(mc.c.id == sa.bindparam("chunk"), mc.c.count == sa.bindparam("old_count"))
            .returning(mc.c.id)
            .values(
                count=sa.bindparam("new_count"),
                steps=sa.bindparam("new_steps"),
                timestamps=sa.bindparam("new_timestamps"),
                values=sa.bindparam("new_values"),
            )
        )
        self._chunks_of = db.prepare(
            sa.select(mc.c.steps, mc.c.timestamps, mc.c["values"])
            .where(of_metric)
            .order_by(mc.c.id)
        )
        self._end = db.prepare(_END)

    # runs -----------------------------------------------------------------------------

    def create_run(self, req: s.RunCreate, *, principal: Principal) -> s.CreatedRun:
        """A new run, with the first batch the request carries and, for a run created
        ended, its end: one transaction. With an id chosen by the client, creating it
        again returns that run (a retry whose first answer was lost), so a retry never
        makes an orphan; an id another project's run has is a Conflict."""
        created = self._insert_run(req, principal)
        batch = None if req.batch is None else req.batch.batch_id
        if created is not None:
            return s.CreatedRun(**created.model_dump(), batch=batch)
        run = self.get_run(str(req.id), principal=principal)
        if batch is not None and not self._batch_seen(run.id, batch):
            batch = None  # made by a create that did not carry it: say so
        return s.CreatedRun(**run.model_dump(), batch=batch)

    def _batch_seen(self, run_id: str, batch_id: str) -> bool:
        lb = t.log_batches
        with self.db.read() as conn:
            found = conn.execute(
                sa.select(lb.c.batch_id).where(lb.c.run_id == run_id, lb.c.batch_id == batch_id)
            )
            return found.first() is not None

    def _insert_run(self, req: s.RunCreate, principal: Principal) -> s.Run | None:
        """The run made, or None when one with ``req.id`` exists in this project."""
        run = _new_run(req)
        with self.audit.recorded(principal, "runs.create", project=req.project, object=run.id) as (
            conn,
            change,
        ):
            change.details = _create_details(run, req)
            project_id = self._insert_run_row(conn, run, req, principal)
            if project_id is None:
                change.record = False  # nothing changed
                return None
            if req.batch is not None:
                made = SimpleNamespace(project_id=project_id, status="running")
                self._apply_batch(conn, run.id, made, req.batch, touch=False)
                change.details["batch"] = _summary(req.batch)
            if req.status != "running":  # inserted ended
                change.then.append(("runs.end", {"status": req.status}))
            if req.batch is not None:
                [run] = self._load_run(conn, run.id, project=req.project)
        return run

    def create_run_within(
        self, conn: Connection, req: s.RunCreate, *, principal: Principal
    ) -> s.Run:
        """A new run made and audited in the caller's write transaction, for a change
        that makes a run as part of itself (a job's run commits with the job)."""
        run = _new_run(req)
        if self._insert_run_row(conn, run, req, principal) is None:
            raise Conflict(f"run id {run.id} is taken; choose another")
        self.audit.append(
            conn,
            principal,
            "runs.create",
            project=req.project,
            object=run.id,
            details=_create_details(run, req),
        )
        return run

    def _insert_run_row(
        self, conn: Connection, run: s.Run, req: s.RunCreate, principal: Principal
    ) -> str | None:
        """Insert the run (creating its project if need be) and return its project's id;
        None when a run with its id exists in this project already, Conflict when in
        another."""
        project_id = self.projects.create_or_require(conn, req.project, principal)
        self._check_parent(conn, req, project_id)
        inserted = self._insert_new_run.run(
            conn,
            {
                "id": run.id,
                "project_id": project_id,
                "name": run.name,
                "status": run.status,
                "start_time": run.start_time,
                "end_time": run.end_time,
                "heartbeat_at": _now(),  # alive now, whenever it began
                "parent_id": run.parent_id,
                "deleted_at": None,
            },
        )
        if not inserted:  # the id exists: this create was made before
            owner = conn.execute(_PROJECT_OF, {"run_id": run.id}).scalar()
            if owner != project_id:
                raise Conflict(f"run id {run.id} is taken; choose another")
            return None
        self._write_params(conn, run.id, project_id, req.params, new_run=True)
        self._write_tags(conn, run.id, project_id, req.tags)
        return str(project_id)

    @staticmethod
    def _check_parent(conn: Connection, req: s.RunCreate, project_id: str) -> None:
        """A nested run's parent is a run of the same project. A parent elsewhere and
        no parent at all get the same answer: other projects are nobody's business."""
        if req.parent_id is None:
            return
        runs = t.runs
        found = conn.execute(
            sa.select(runs.c.id).where(runs.c.id == req.parent_id, runs.c.project_id == project_id)
        ).first()
        if found is None:
            raise InvalidInput(
                f"parent {req.parent_id!r} is not a run of project {req.project!r}; "
                "a nested run belongs to its parent's project"
            )

    def get_run(self, run_id: str, *, principal: Principal) -> s.Run:
        """A run by id, or by a prefix of 8 or more characters (as ids are shown) unique
        among the runs the principal may read: those of other projects are neither
        found nor counted (else a prefix would be an oracle of their ids)."""
        with self.db.read() as conn:
            runs = self._load_run(conn, run_id)
            if not runs and _ID_PREFIX.match(run_id):
                matching = sa.select(t.runs).where(t.runs.c.id.startswith(run_id))
                visible = visible_projects(principal)
                if visible is not None:
                    matching = matching.where(t.runs.c.project_id.in_(visible))
                runs = self._load_runs(conn, matching.limit(2))
                if len(runs) > 1:
                    raise InvalidInput(f"run id prefix {run_id!r} is ambiguous; give more of it")
            if not runs:
                raise NotFound(f"no run {run_id!r}")
            self.require_run(conn, runs[0].id, principal, Need.READ, shown_as=run_id)
        return runs[0]

    def require_run(
        self,
        conn: Connection,
        run_id: str,
        principal: Principal,
        need: Need,
        change: audit.Change | None = None,
        shown_as: str | None = None,
    ) -> Any:
        """The run's status and project, if the principal may ``need`` it; else the same
        NotFound as for no run at all (or PermissionDenied for a role too small). Names
        the project in the change being recorded."""
        found = self._run_access.run(conn, {"run_id": run_id})
        row = _Access(*found[0]) if found else None
        if row is not None and change is not None:
            change.project = row.project
        self.projects.check(
            conn,
            None if row is None else row.project_id,
            principal,
            need,
            NotFound(f"no run {shown_as or run_id!r}"),
            project=None if row is None else row.project,
            object=run_id,
            record=need is Need.READ,
        )
        return row

    def end_run(self, run_id: str, update: s.RunUpdate, *, principal: Principal) -> s.EndedRun:
        """End a run, applying its last batch first when the request carries one. Ended
        so already (a retry whose answer was lost): nothing changes, its end time
        included."""
        with self.audit.recorded(principal, "runs.end", object=run_id) as (conn, change):
            row = self.require_run(conn, run_id, principal, Need.WRITE, change)
            change.details = {"status": update.status}
            if update.batch is not None:
                applied = self._apply_batch(conn, run_id, row, update.batch, touch=False)
                change.details |= {"batch": _summary(update.batch) | {"applied": applied}}
            change.record = not (row.status == update.status and row.end_time is not None)
            if change.record:
                ended_at = _now() if update.end_time is None else update.end_time
                self._end.run(conn, {"run_id": run_id, "status": update.status, "now": ended_at})
            [run] = self._load_run(conn, run_id, project=row.project)
        batch = None if update.batch is None else update.batch.batch_id
        return s.EndedRun(**run.model_dump(), batch=batch)

    def resume_run(self, run_id: str, *, principal: Principal) -> s.ResumedRun:
        """Set a run running again, whatever state it ended in, as MLflow's
        ``start_run(run_id=...)`` does; its end time is cleared."""
        with self.audit.recorded(principal, "runs.resume", object=run_id) as (conn, change):
            row = self.require_run(conn, run_id, principal, Need.WRITE, change)
            change.details = {"was": row.status}
            conn.execute(
                t.runs.update()
                .where(t.runs.c.id == run_id)
                .values(status="running", end_time=None, heartbeat_at=_now())
            )
        lm = t.latest_metrics
        with self.db.read() as conn:
            [run] = self._load_run(conn, run_id)
            steps = conn.execute(sa.select(lm.c.key, lm.c.step).where(lm.c.run_id == run_id))
            return s.ResumedRun(**run.model_dump(), steps={key: step for key, step in steps})

    def delete_run(self, run_id: str, *, principal: Principal) -> s.Run:
        """Delete a run: kept with everything it logged, left out of searches (and of
        the project's pages), restorable; deleting it again changes nothing."""
        return self._set_deleted(run_id, "runs.delete", _now(), principal)

    def restore_run(self, run_id: str, *, principal: Principal) -> s.Run:
        """Bring a deleted run back into searches."""
        return self._set_deleted(run_id, "runs.restore", None, principal)

    def _set_deleted(
        self, run_id: str, action: str, when: float | None, principal: Principal
    ) -> s.Run:
        runs = t.runs
        with self.audit.recorded(principal, action, object=run_id) as (conn, change):
            row = self.require_run(conn, run_id, principal, Need.WRITE, change)
            was = conn.execute(sa.select(runs.c.deleted_at).where(runs.c.id == run_id)).scalar()
            change.record = (was is None) != (when is None)  # else: nothing changes
            if change.record:
                conn.execute(runs.update().where(runs.c.id == run_id).values(deleted_at=when))
            [run] = self._load_run(conn, run_id, project=row.project)
        return run

    def require_open_run(
        self,
        conn: Connection,
        run_id: str,
        principal: Principal,
        change: audit.Change | None = None,
    ) -> Any:
        """``require_run`` for writing data: a run its owner ended takes no more
        (Conflict) until resumed; one the reaper killed for silence does, and revives."""
        row = self.require_run(conn, run_id, principal, Need.WRITE, change)
        self._refuse_if_ended(run_id, row)
        return row

    @staticmethod
    def _refuse_if_ended(run_id: str, row: Any) -> None:
        reaped = row.status == "killed" and row.end_time == row.heartbeat_at  # as in _touch
        if row.status != "running" and not reaped:
            raise Conflict(
                f"run {run_id} is {row.status} and takes no more data; "
                "resume it with plinth.start_run(run_id=...) or start a new run"
            )

    def heartbeat(self, run_id: str, *, principal: Principal) -> None:
        """A live run says so; a run killed for silence comes back to life."""
        with self.audit.recorded(principal, "runs.heartbeat", object=run_id) as (conn, change):
            change.record = False  # a heartbeat changes nothing worth a record; a refusal is
            self.require_run(conn, run_id, principal, Need.WRITE, change)
            self.touch(conn, run_id)

    def touch(self, conn: Connection, run_id: str) -> None:
        """The run is alive now; one the reaper killed is running again (see _TOUCH)."""
        self._touch.run(conn, {"run_id": run_id, "now": _now()})

    def recover(self) -> None:
        """On start: end runs whose process died, drop uploads a crash cut short."""
        self.reap_stale_runs()
        self.artifacts.sweep_partial()

    def reap_stale_runs(self) -> int:
        """Mark runs whose process went silent as killed, ended at their last heartbeat."""
        cutoff = _now() - self.settings.tracking.stale_after_seconds
        stale = sa.and_(t.runs.c.status == "running", t.runs.c.heartbeat_at < cutoff)
        with self.audit.recorded(SYSTEM, "runs.reap") as (conn, change):
            ids = list(conn.execute(sa.select(t.runs.c.id).where(stale)).scalars())
            change.record = bool(ids)
            change.details = {"runs": ids}
            if ids:
                conn.execute(
                    t.runs.update()
                    .where(stale, t.runs.c.id.in_(ids))
                    .values(status="killed", end_time=t.runs.c.heartbeat_at)
                )
        return len(ids)

    # logging --------------------------------------------------------------------------

    def log_batch(
        self, run_id: str, batch: s.LogBatch, *, principal: Principal, ended_ok: bool = False
    ) -> s.LogResult:
        """Apply params, tags and metric points in one transaction, once per batch id.
        An ended run takes none (Conflict) unless ``ended_ok`` (MLflow's API: MLflow lets
        a finished run take more); then it stays as it ended."""
        with self.audit.recorded(principal, "runs.log", object=run_id) as (conn, change):
            row = self.require_run(conn, run_id, principal, Need.WRITE, change)
            change.details = _summary(batch)
            ended = ended_ok and row.status != "running"
            applied = self._apply_batch(conn, run_id, row, batch, touch=not ended, ended_ok=ended)
            change.record = applied  # a retry of a batch already applied changes nothing
        return s.LogResult(applied=applied)

    def _apply_batch(
        self,
        conn: Connection,
        run_id: str,
        row: Any,
        batch: s.LogBatch,
        *,
        touch: bool = True,
        ended_ok: bool = False,
    ) -> bool:
        """Apply a batch the first time its id is seen; False for a repeat. ``touch``:
        the run is alive (not when the batch comes with its end)."""
        first_time = self._insert_batch_id.run(conn, {"run_id": run_id, "batch_id": batch.batch_id})
        if not first_time:
            return False
        if not ended_ok:
            self._refuse_if_ended(run_id, row)  # after: a retry of an applied batch succeeds
        self._write_params(conn, run_id, row.project_id, batch.params)
        self._write_tags(conn, run_id, row.project_id, batch.tags)
        self._write_metrics(conn, run_id, row.project_id, batch.metrics)
        if touch:
            self.touch(conn, run_id)
        return True

    def _write_params(
        self,
        conn: Connection,
        run_id: str,
        project_id: str,
        params: dict[str, Any],
        *,
        new_run: bool = False,
    ) -> None:
        if not params:
            return
        encoded = {k: json.dumps(v, sort_keys=True) for k, v in params.items()}
        too_long = [k for k, v in encoded.items() if len(v) > MAX_VALUE_CHARS]
        if too_long:
            raise InvalidInput(f"param {too_long[0]!r} is over {MAX_VALUE_CHARS} characters")
        existing = {} if new_run else self._params_of(conn, run_id, list(encoded))
        changed = [k for k, v in encoded.items() if k in existing and existing[k] != v]
        if changed:
            key = changed[0]
            raise Conflict(f"params are immutable once logged; {key!r} is already {existing[key]}")
        new = [
            {
                "run_id": run_id,
                "key": k,
                "value": v,
                "number": _number(params[k]),
                "project_id": project_id,
            }
            for k, v in encoded.items()
            if k not in existing
        ]
        if new:
            self._insert_params.run_many(conn, new)

    @staticmethod
    def _params_of(conn: Connection, run_id: str, keys: list[str]) -> dict[str, str]:
        p = t.params
        rows = conn.execute(
            sa.select(p.c.key, p.c.value).where(p.c.run_id == run_id, p.c.key.in_(keys))
        )
        return {key: value for key, value in rows}

    def _write_tags(
        self, conn: Connection, run_id: str, project_id: str, tags: dict[str, str]
    ) -> None:
        if tags:
            self._upsert_tags.run_many(
                conn,
                [
                    {
                        "run_id": run_id,
                        "key": k,
                        "value": v,
                        "number": search.number_in_text(v),
                        "project_id": project_id,
                    }
                    for k, v in tags.items()
                ],
            )

    def delete_tag(self, run_id: str, key: str, *, principal: Principal) -> None:
        """Remove one tag of a run (MLflow's ``delete_tag``); a tag it does not have is
        NotFound. Audited with the value it had."""
        with self.audit.recorded(principal, "runs.untag", object=run_id) as (conn, change):
            self.require_run(conn, run_id, principal, Need.WRITE, change)
            tg = t.tags
            where = sa.and_(tg.c.run_id == run_id, tg.c.key == key)
            had = conn.execute(sa.select(tg.c.value).where(where)).scalar()
            if had is None:
                raise NotFound(f"run {run_id} has no tag {key!r}")
            conn.execute(tg.delete().where(where))
            change.details = {"key": key, "value": had}

    def _write_metrics(
        self, conn: Connection, run_id: str, project_id: str, series: Sequence[s.MetricSeries]
    ) -> None:
        """Each series as a chunk of its metric's history (a small one tops up the
        metric's last chunk), and each metric's newest point kept apart for search."""
        new: list[dict[str, Any]] = []
        latest: list[dict[str, Any]] = []
        for m in series:
            if not m.steps:
                continue
            self._add_chunk(conn, run_id, m, new)
            # of points tied on (step, time) the last logged wins, as across batches
            newest = max(range(len(m.steps)), key=lambda i: (m.steps[i], m.timestamps[i], i))
            value = m.values[newest]
            latest.append(
                {
                    "run_id": run_id,
                    "key": m.key,
                    "step": m.steps[newest],
                    "timestamp": m.timestamps[newest],
                    "value": value if value == value else None,  # NaN is stored as NULL
                    "project_id": project_id,
                }
            )
        if new:
            self._insert_chunks.run_many(conn, new)
        if latest:
            self._upsert_latest.run_many(conn, latest)

    def _add_chunk(
        self, conn: Connection, run_id: str, m: s.MetricSeries, new: list[dict[str, Any]]
    ) -> None:
        """A few points join the metric's last chunk while it has room, so a run that
        logs slowly still reads back as a few chunks; more make a chunk of their own."""
        columns: tuple[list[Any], ...] = (m.steps, m.timestamps, m.values)
        if len(m.steps) <= SMALL_CHUNK:
            last = self._last_chunk.run(conn, {"run_id": run_id, "key": m.key})
            if last and last[0][1] + len(m.steps) <= CHUNK_POINTS:
                chunk_id, count, *old = last[0]
                joined = [
                    bytes(o) + history.pack(k, c)
                    for o, k, c in zip(old, "qdd", columns, strict=True)
                ]
                grown = self._grow_chunk.run(
                    conn,
                    {
                        "chunk": chunk_id,
                        "old_count": count,
                        "new_count": count + len(m.steps),
                        "new_steps": joined[0],
                        "new_timestamps": joined[1],
                        "new_values": joined[2],
                    },
                )
                if grown:
                    return
        packed = [history.pack(k, c) for k, c in zip("qdd", columns, strict=True)]
        new.append(
            {
                "run_id": run_id,
                "key": m.key,
                "count": len(m.steps),
                "steps": packed[0],
                "timestamps": packed[1],
                "values": packed[2],
            }
        )

    def metric_history(
        self, run_id: str, key: str, max_points: int | None = None, *, principal: Principal
    ) -> history.Columns:
        """A metric's points as columns by step, then time; thinned on the server to
        about ``max_points`` (``history.downsample``) when given."""
        if max_points is not None:
            history.check_max_points(max_points)
        with self.db.read() as conn:
            self.require_run(conn, run_id, principal, Need.READ)
            columns = history.from_chunks(self._chunks_of.run(conn, {"run_id": run_id, "key": key}))
        return history.downsample(columns, max_points) if max_points else columns

    # search ---------------------------------------------------------------------------

    def search_runs(self, query: s.SearchQuery, *, principal: Principal) -> s.RunPage:
        where = search.parse_filter(query.filter)
        order = search.parse_order_by(query.order_by)
        offset = search.decode_page_token(query.page_token)
        with self.db.read() as conn:
            project_id = self.projects.require(conn, query.project, principal, Need.READ)
            search.require_known_keys(conn, query.project, project_id, where, order)
            stmts = search.statements(project_id, where, order, query.lifecycle)
            rows = search.page(conn, stmts, offset, query.limit + 1)
            runs = self._runs(conn, rows, project=query.project)
        more = len(runs) > query.limit
        return s.RunPage(
            runs=runs[: query.limit],
            next_page_token=search.encode_page_token(offset + query.limit) if more else None,
        )

    def count_runs(self, project: str, *, principal: Principal) -> int:
        with self.db.read() as conn:
            project_id = self.projects.require(conn, project, principal, Need.READ)
            count = sa.select(sa.func.count()).select_from(t.runs)
            mine = sa.and_(t.runs.c.project_id == project_id, t.runs.c.deleted_at.is_(None))
            return int(conn.execute(count.where(mine)).scalar_one())

    def _load_runs(self, conn: Connection, stmt: Any, project: str | None = None) -> list[s.Run]:
        return self._runs(conn, conn.execute(stmt).mappings().all(), project)

    def _runs(
        self, conn: Connection, rows: Sequence[Any], project: str | None = None
    ) -> list[s.Run]:
        """The runs of ``rows`` (of the runs table) with their params, tags and metrics."""
        if not rows:
            return []
        extras = conn.execute(_EXTRAS, {"ids": [r["id"] for r in rows]})
        return self._assemble(conn, rows, extras, project)

    def _load_run(self, conn: Connection, run_id: str, project: str | None = None) -> list[s.Run]:
        """``_load_runs`` of one run by its id, on the driver's cursor: every run's end
        returns the run."""
        found = self._run_by_id.run(conn, {"run_id": run_id})
        if not found:
            return []
        rows = [dict(zip(_RUN_COLUMNS, found[0], strict=True))]
        extras = self._extras_of_run.run(conn, {"run_id": run_id})
        return self._assemble(conn, rows, extras, project)

    def _assemble(
        self, conn: Connection, rows: Sequence[Any], extras_rows: Any, project: str | None
    ) -> list[s.Run]:
        """Runs from their rows and the rows of their params, tags and latest metrics."""
        extras: dict[str, dict[str, dict[str, Any]]] = {
            r["id"]: {"params": {}, "tags": {}, "metrics": {}} for r in rows
        }
        for run_id, field, key, text, number in extras_rows:
            if field == "params":
                extras[run_id][field][key] = json.loads(text)
            else:
                extras[run_id][field][key] = text if field == "tags" else _nan(number)
        project_names: dict[str, str] = {}
        if project is None:
            project_names = self.projects.names(conn, {r["project_id"] for r in rows})
        return [
            s.Run(
                id=r["id"],
                project=project or project_names[r["project_id"]],
                name=r["name"],
                status=r["status"],
                start_time=r["start_time"],
                end_time=r["end_time"],
                parent_id=r["parent_id"],
                deleted_at=r["deleted_at"],
                **extras[r["id"]],
            )
            for r in rows
        ]


def _summary(batch: s.LogBatch) -> dict[str, Any]:
    """What the audit trail says of a batch."""
    return {
        "batch": batch.batch_id,
        "points": sum(len(m.steps) for m in batch.metrics),
        "params": sorted(batch.params),
        "tags": sorted(batch.tags),
    }


_RUN_BY_ID = sa.select(t.runs).where(t.runs.c.id == sa.bindparam("run_id"))
_END = (
    t.runs.update()
    .where(t.runs.c.id == sa.bindparam("run_id"))
    .values(status=sa.bindparam("status"), end_time=sa.bindparam("now"))
)
# A run the reaper killed ended exactly at its last heartbeat, and a touch revives it;
# one ended by its owner did not, and stays ended. One statement: it runs per batch.
_REAPED = sa.and_(t.runs.c.status == "killed", t.runs.c.end_time == t.runs.c.heartbeat_at)
_TOUCH = (
    t.runs.update()
    .where(t.runs.c.id == sa.bindparam("run_id"))
    .values(
        heartbeat_at=sa.bindparam("now"),
        status=sa.case((_REAPED, "running"), else_=t.runs.c.status),
        end_time=sa.case((_REAPED, None), else_=t.runs.c.end_time),
    )
)


_RUN_COLUMNS = [c.name for c in t.runs.c]


def _extras(table: sa.Table, field: str, *, one: bool) -> Any:
    """One table's key/values of some runs (or ``one``), in the shape ``_EXTRAS`` unites."""
    numeric = field == "metrics"
    which = (
        table.c.run_id == sa.bindparam("run_id")
        if one
        else table.c.run_id.in_(sa.bindparam("ids", expanding=True))
    )
    return sa.select(
        table.c.run_id,
        sa.literal(field).label("field"),
        table.c.key,
        sa.cast(sa.null(), sa.Text) if numeric else table.c.value,
        table.c.value if numeric else sa.cast(sa.null(), sa.Float),
    ).where(which)


def _all_extras(*, one: bool) -> Any:
    """Params, tags and newest metric values of a page of runs, in one round trip."""
    return sa.union_all(*(_extras(table, field, one=one) for table, field in _EXTRA_TABLES))


_EXTRA_TABLES = ((t.params, "params"), (t.tags, "tags"), (t.latest_metrics, "metrics"))
_EXTRAS = _all_extras(one=False)
_EXTRAS_OF_RUN = _all_extras(one=True)


class _Access(NamedTuple):
    """What ``require_run`` learns of a run (the columns of ``_RUN``)."""

    status: str
    end_time: float | None
    heartbeat_at: float
    project_id: str
    project: str


_PROJECT_OF = sa.select(t.runs.c.project_id).where(t.runs.c.id == sa.bindparam("run_id"))
_RUN = (
    sa.select(
        t.runs.c.status,
        t.runs.c.end_time,
        t.runs.c.heartbeat_at,
        t.runs.c.project_id,
        projects.c.name.label("project"),
    )
    .join(projects, projects.c.id == t.runs.c.project_id)
    .where(t.runs.c.id == sa.bindparam("run_id"))
)


def _new_run(req: s.RunCreate) -> s.Run:
    run_id = req.id or uuid.uuid4().hex
    ended = req.status != "running"  # a run created ended: its whole life in one request
    return s.Run(
        id=run_id,
        project=req.project,
        name=req.name or s.default_run_name(run_id),
        status=req.status,
        start_time=_now() if req.start_time is None else req.start_time,
        end_time=(_now() if req.end_time is None else req.end_time) if ended else None,
        params=req.params,
        tags=req.tags,
        parent_id=req.parent_id,
    )


def _create_details(run: s.Run, req: s.RunCreate) -> dict[str, Any]:
    return {"name": run.name, "params": sorted(req.params), "tags": sorted(req.tags)}
