"""Triggers: the server starts a pipeline's stored spec on a cron schedule (UTC) or
when a dataset gets a new version.

Each firing moves the trigger on (its next time, or the version it has seen) with a
compare-and-set in the transaction that creates the run: a firing happens once, however
many server processes watch and however often they restart. Firings missed while no
server ran collapse into one. A firing runs as the user who added the trigger, as that
user is now; one that is refused (the user lost the project, a dataset is gone) is
audited as refused and the trigger moves on all the same.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import sqlalchemy as sa

from plinth.compute import schemas as cs
from plinth.core.access import Need, Principal
from plinth.core.platform import Platform
from plinth.data.refs import check_dataset_name
from plinth.data.service import DatasetService
from plinth.errors import Conflict, InvalidInput, NotFound, PlinthError
from plinth.pipelines import schemas as s
from plinth.pipelines import tables as t
from plinth.pipelines.service import PipelineService

log = logging.getLogger(__name__)

TRIGGER_ADD, TRIGGER_REMOVE, TRIGGER_FIRE = (
    "pipelines.triggers.create",
    "pipelines.triggers.delete",
    "pipelines.triggers.fire",
)


def _now() -> float:
    return time.time()


class TriggerService:
    def __init__(
        self, platform: Platform, *, runs: PipelineService, datasets: DatasetService
    ) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.projects = platform.projects
        self.blobs = platform.artifacts
        self.runs, self.datasets = runs, datasets

    def tick(self) -> None:
        """The app's periodic round: fire what is due, where pipelines are advanced."""
        if self.runs.jobs.dispatcher.leading:
            self.fire_triggers()

    def create_trigger(
        self, project: str, req: s.TriggerCreate, *, principal: Principal
    ) -> s.Trigger:
        tr = t.pipeline_triggers
        now = _now()
        next_at = next_cron(req.cron, now) if req.cron is not None else None
        with self.audit.recorded(principal, TRIGGER_ADD, project=project, object=req.name) as (
            conn,
            ch,
        ):
            pid = self.projects.require(conn, project, principal, Need.WRITE, record=False)
            self.blobs.claim(conn, pid, req.snapshot.digest, req.snapshot.size)
            seen = None
            if req.dataset is not None:
                check_dataset_name(req.dataset)
                seen = self.datasets.newest_version(conn, pid, req.dataset)
                if seen is None:
                    raise NotFound(
                        f"no dataset {req.dataset!r} with a version in project {project!r}: "
                        "push its first version before a trigger watches it"
                    )
            else:  # every dataset a scheduled run reads must be there to pin
                for step in req.spec.steps:
                    for source in step.inputs.values():
                        if isinstance(source, s.DatasetInput):
                            self.datasets.pin(conn, project, source.ref, principal)
            inserted = conn.execute(
                self.db.insert_ignoring_duplicates(tr).returning(tr.c.id),
                {
                    "id": uuid.uuid4().hex,
                    "project_id": pid,
                    "name": req.name,
                    "pipeline": req.spec.name,
                    "spec": req.spec.model_dump_json(),
                    "snapshot_digest": req.snapshot.digest,
                    "snapshot_size": req.snapshot.size,
                    "no_cache": req.no_cache,
                    "cron": req.cron,
                    "dataset": req.dataset,
                    "next_at": next_at,
                    "seen_version": seen,
                    "user": principal.name,
                    "user_id": principal.user_id,
                    "created_at": now,
                },
            ).scalar()
            if inserted is None:
                raise Conflict(f"project {project!r} has a trigger {req.name!r}: remove it first")
            ch.details = {"pipeline": req.spec.name, "cron": req.cron, "dataset": req.dataset}
            row = conn.execute(sa.select(tr).where(tr.c.id == inserted)).one()
        return _trigger(project, row)

    def list_triggers(self, project: str, *, principal: Principal) -> list[s.Trigger]:
        tr = t.pipeline_triggers
        with self.db.read() as conn:
            pid = self.projects.require(conn, project, principal, Need.READ)
            rows = conn.execute(sa.select(tr).where(tr.c.project_id == pid).order_by(tr.c.name))
            return [_trigger(project, row) for row in rows]

    def delete_trigger(self, project: str, name: str, *, principal: Principal) -> s.Trigger:
        tr = t.pipeline_triggers
        with self.audit.recorded(principal, TRIGGER_REMOVE, project=project, object=name) as (
            conn,
            _ch,
        ):
            pid = self.projects.require(conn, project, principal, Need.WRITE, record=False)
            row = conn.execute(
                sa.select(tr).where(tr.c.project_id == pid, tr.c.name == name)
            ).first()
            if row is None:
                raise NotFound(f"no trigger {name!r} in project {project!r}")
            conn.execute(tr.delete().where(tr.c.id == row.id))
        return _trigger(project, row)

    def fire_triggers(self, now: float | None = None) -> int:
        """Start a run for every trigger that is due; how many started."""
        now = _now() if now is None else now
        tr = t.pipeline_triggers
        with self.db.read() as conn:
            rows = conn.execute(sa.select(tr)).all()
        fired = 0
        for row in rows:
            if row.cron is not None and row.next_at is not None and row.next_at <= now:
                moved = {"next_at": next_cron(row.cron, now)}
                guard = tr.c.next_at == row.next_at
            elif row.dataset is not None:
                with self.db.read() as conn:
                    newest = self.datasets.newest_version(conn, row.project_id, row.dataset)
                if newest is None or newest <= (row.seen_version or 0):
                    continue
                moved = {"seen_version": newest}
                guard = tr.c.seen_version == row.seen_version
            else:
                continue
            fired += self._fire(row, moved, guard, now)
        if fired:
            self.runs.wake()
        return fired

    def _fire(self, row: Any, moved: dict[str, Any], guard: Any, now: float) -> int:
        tr = t.pipeline_triggers
        run_id = uuid.uuid4().hex
        with self.db.read() as conn:
            project = self.projects.names(conn, {row.project_id})[row.project_id]
        try:
            principal = self.runs.acting(row, project)
            with self.audit.recorded(principal, TRIGGER_FIRE, project=project, object=row.name) as (
                conn,
                ch,
            ):
                claimed = conn.execute(
                    tr.update()
                    .where(tr.c.id == row.id, guard)
                    .values(**moved, fired_at=now, fired=tr.c.fired + 1, last_run=run_id)
                ).rowcount
                if not claimed:  # another process fired it
                    ch.record = False
                    return 0
                self.projects.require(conn, project, principal, Need.WRITE, record=False)
                spec = s.PipelineSpec.model_validate_json(row.spec)
                snapshot = cs.Snapshot(digest=row.snapshot_digest, size=row.snapshot_size)
                self.runs.insert_run(
                    conn,
                    run_id,
                    row.project_id,
                    project,
                    spec,
                    snapshot,
                    row.no_cache,
                    principal,
                    trigger=row.name,
                    newest=None if row.dataset is None else {row.dataset: moved["seen_version"]},
                )
                ch.details = {"run_id": run_id, **moved}
            return 1
        except PlinthError as exc:
            # refused (and audited so): move on all the same, or it is refused every round
            log.warning("trigger %s of project %s did not fire: %s", row.name, project, exc)
            with self.db.write() as conn:
                conn.execute(tr.update().where(tr.c.id == row.id, guard).values(**moved))
            return 0


def next_cron(expression: str, after: float) -> float:
    """When a cron schedule (five fields, UTC) next fires after ``after``."""
    from datetime import UTC, datetime

    from croniter import croniter

    try:
        if len(expression.split()) != 5:
            raise ValueError("five fields: minute hour day-of-month month day-of-week")
        it = croniter(expression, datetime.fromtimestamp(after, UTC))
        return float(it.get_next(float))
    except (ValueError, KeyError) as exc:
        raise InvalidInput(f"cron {expression!r}: {exc}") from None


def _trigger(project: str, row: Any) -> s.Trigger:
    return s.Trigger(
        name=row.name,
        project=project,
        pipeline=row.pipeline,
        cron=row.cron,
        dataset=row.dataset,
        user=row.user,
        created_at=row.created_at,
        next_at=row.next_at,
        seen_version=row.seen_version,
        fired_at=row.fired_at,
        fired=row.fired,
        last_run=row.last_run,
    )
