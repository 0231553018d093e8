"""The tracking use-cases. Every entry point of the API, CLI and SDK ends up here."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core import audit
from plinth.core.access import Need, Principal
from plinth.core.platform import Platform
from plinth.core.projects import projects
from plinth.errors import Conflict, InvalidInput, NotFound
from plinth.tracking import schemas as s
from plinth.tracking import search
from plinth.tracking import tables as t


def _now() -> float:
    return time.time()


SYSTEM = Principal(name="plinth")  # the platform itself, e.g. reaping silent runs
MAX_VALUE_CHARS = 65_536
_ID_PREFIX = re.compile(r"^[0-9a-f]{8,31}$")


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
        self._insert_new_run = self.db.insert_ignoring_duplicates(t.runs).returning(t.runs.c.id)

    # runs -----------------------------------------------------------------------------

    def create_run(self, req: s.RunCreate, *, principal: Principal) -> s.Run:
        """A new run. With an id chosen by the client, creating it again returns that
        run (a retry whose first answer was lost), so a retry never makes an orphan;
        an id another project's run has is a Conflict."""
        created = self._insert_run(req, principal)
        return created or self.get_run(str(req.id), principal=principal)

    def _insert_run(self, req: s.RunCreate, principal: Principal) -> s.Run | None:
        """The run made, or None when one with ``req.id`` exists in this project."""
        run = s.Run(
            id=req.id or uuid.uuid4().hex,
            project=req.project,
            name="",
            status="running",
            start_time=_now(),
            end_time=None,
            params=req.params,
            tags=req.tags,
            parent_id=req.parent_id,
        )
        run.name = req.name or f"run-{run.id[:8]}"
        with self.audit.recorded(principal, "runs.create", project=req.project, object=run.id) as (
            conn,
            change,
        ):
            change.details = {
                "name": run.name,
                "params": sorted(req.params),
                "tags": sorted(req.tags),
            }
            project_id = self.projects.create_or_require(conn, req.project, principal)
            self._check_parent(conn, req, project_id)
            inserted = conn.execute(
                self._insert_new_run,
                {
                    "id": run.id,
                    "project_id": project_id,
                    "name": run.name,
                    "status": run.status,
                    "start_time": run.start_time,
                    "end_time": None,
                    "heartbeat_at": run.start_time,
                    "parent_id": run.parent_id,
                },
            ).first()
            if inserted is None:  # the id exists: this create was made before
                owner = conn.execute(_PROJECT_OF, {"run_id": run.id}).scalar()
                if owner != project_id:
                    raise Conflict(f"run id {run.id} is taken; choose another")
                change.record = False  # nothing changed
                return None
            self._write_params(conn, run.id, project_id, req.params, new_run=True)
            self._write_tags(conn, run.id, project_id, req.tags)
        return run

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
        """A run by id, or by a unique prefix of 8 or more characters (as ids are shown)."""
        with self.db.read() as conn:
            runs = self._load_runs(conn, sa.select(t.runs).where(t.runs.c.id == run_id))
            if not runs and _ID_PREFIX.match(run_id):
                matching = sa.select(t.runs).where(t.runs.c.id.startswith(run_id)).limit(2)
                runs = self._load_runs(conn, matching)
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
        row = conn.execute(_RUN, {"run_id": run_id}).first()
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

    def end_run(self, run_id: str, update: s.RunUpdate, *, principal: Principal) -> s.Run:
        with self.audit.recorded(principal, "runs.end", object=run_id) as (conn, change):
            self.require_run(conn, run_id, principal, Need.WRITE, change)
            change.details = {"status": update.status}
            conn.execute(
                t.runs.update()
                .where(t.runs.c.id == run_id)
                .values(status=update.status, end_time=_now())
            )
        return self.get_run(run_id, principal=principal)

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
            [run] = self._load_runs(conn, sa.select(t.runs).where(t.runs.c.id == run_id))
            steps = conn.execute(sa.select(lm.c.key, lm.c.step).where(lm.c.run_id == run_id))
            return s.ResumedRun(**run.model_dump(), steps={key: step for key, step in steps})

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
        # A run the reaper killed ended exactly at its last heartbeat; one ended by
        # its owner did not, and stays ended.
        conn.execute(
            t.runs.update()
            .where(
                t.runs.c.id == run_id,
                t.runs.c.status == "killed",
                t.runs.c.end_time == t.runs.c.heartbeat_at,
            )
            .values(status="running", end_time=None)
        )
        conn.execute(t.runs.update().where(t.runs.c.id == run_id).values(heartbeat_at=_now()))

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

    def log_batch(self, run_id: str, batch: s.LogBatch, *, principal: Principal) -> s.LogResult:
        """Apply params, tags and metric points in one transaction, once per batch id."""
        with self.audit.recorded(principal, "runs.log", object=run_id) as (conn, change):
            row = self.require_run(conn, run_id, principal, Need.WRITE, change)
            change.details = {
                "batch": batch.batch_id,
                "points": sum(len(m.steps) for m in batch.metrics),
                "params": sorted(batch.params),
                "tags": sorted(batch.tags),
            }
            first_time = conn.execute(
                self.db.insert_ignoring_duplicates(t.log_batches).returning(
                    t.log_batches.c.batch_id
                ),
                {"run_id": run_id, "batch_id": batch.batch_id},
            ).first()
            if first_time is None:  # a retry of a batch already applied: nothing changes
                change.record = False
                return s.LogResult(applied=False)
            self._refuse_if_ended(run_id, row)  # after: a retry of an applied batch succeeds
            self._write_params(conn, run_id, row.project_id, batch.params)
            self._write_tags(conn, run_id, row.project_id, batch.tags)
            self._write_metrics(conn, run_id, row.project_id, batch.metrics)
            self.touch(conn, run_id)
        return s.LogResult(applied=True)

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
            conn.execute(t.params.insert(), new)

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
            conn.execute(
                self.db.upsert(t.tags, ["run_id", "key"], ["value", "number"]),
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

    def _write_metrics(
        self, conn: Connection, run_id: str, project_id: str, series: Sequence[s.MetricSeries]
    ) -> None:
        rows = [
            (run_id, m.key, step, ts, value if value == value else None)  # NaN is stored as NULL
            for m in series
            for step, ts, value in zip(m.steps, m.timestamps, m.values, strict=True)
        ]
        if not rows:
            return
        self.db.bulk_insert(conn, t.metrics, rows)
        latest: dict[str, tuple[Any, ...]] = {}
        for row in rows:
            current = latest.get(row[1])
            if current is None or row[2:4] >= current[2:4]:  # highest step, then newest
                latest[row[1]] = row
        lm = t.latest_metrics
        newer = lambda ex: sa.or_(  # noqa: E731
            ex.step > lm.c.step, sa.and_(ex.step == lm.c.step, ex.timestamp >= lm.c.timestamp)
        )
        conn.execute(
            self.db.upsert(lm, ["run_id", "key"], ["step", "timestamp", "value"], where=newer),
            [
                dict(zip(("run_id", "key", "step", "timestamp", "value"), r, strict=True))
                | {"project_id": project_id}
                for r in latest.values()
            ],
        )

    def metric_history(self, run_id: str, key: str, *, principal: Principal) -> s.MetricHistory:
        m = t.metrics
        with self.db.read() as conn:
            self.require_run(conn, run_id, principal, Need.READ)
            rows = conn.execute(
                sa.select(m.c.step, m.c.timestamp, m.c.value)
                .where(m.c.run_id == run_id, m.c.key == key)
                .order_by(m.c.step, m.c.timestamp)
            ).all()
        return s.MetricHistory(
            run_id=run_id,
            key=key,
            points=[s.HistoryPoint(step=r[0], timestamp=r[1], value=_nan(r[2])) for r in rows],
        )

    # search ---------------------------------------------------------------------------

    def search_runs(self, query: s.SearchQuery, *, principal: Principal) -> s.RunPage:
        where = search.parse_filter(query.filter)
        order = search.parse_order_by(query.order_by)
        offset = search.decode_page_token(query.page_token)
        with self.db.read() as conn:
            project_id = self.projects.require(conn, query.project, principal, Need.READ)
            search.require_known_keys(conn, query.project, project_id, where, order)
            stmts = search.statements(project_id, where, order)
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
            return int(conn.execute(count.where(t.runs.c.project_id == project_id)).scalar_one())

    def _load_runs(self, conn: Connection, stmt: Any, project: str | None = None) -> list[s.Run]:
        return self._runs(conn, conn.execute(stmt).mappings().all(), project)

    def _runs(
        self, conn: Connection, rows: Sequence[Any], project: str | None = None
    ) -> list[s.Run]:
        """The runs of ``rows`` (of the runs table) with their params, tags and metrics."""
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        extras: dict[str, dict[str, dict[str, Any]]] = {
            i: {"params": {}, "tags": {}, "metrics": {}} for i in ids
        }
        for run_id, key, value in conn.execute(
            sa.select(t.params.c.run_id, t.params.c.key, t.params.c.value).where(
                t.params.c.run_id.in_(ids)
            )
        ):
            extras[run_id]["params"][key] = json.loads(value)
        for table, field in ((t.tags, "tags"), (t.latest_metrics, "metrics")):
            for run_id, key, value in conn.execute(
                sa.select(table.c.run_id, table.c.key, table.c.value).where(table.c.run_id.in_(ids))
            ):
                extras[run_id][field][key] = _nan(value) if field == "metrics" else value
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
                **extras[r["id"]],
            )
            for r in rows
        ]


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
