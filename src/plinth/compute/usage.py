"""Usage accounting: resource-hours per project, user, pool or job, and their cost.

An attempt's usage is what it was granted (``job_attempts.cpus``, ``gpus``,
``memory_bytes``: all its units together) times how long it held it: from its start to
its end, or to now while it runs, clipped to the window asked about. Granted, not
measured: a job that asked for 4 CPUs and used one still kept three from everyone
else. Each attempt counts (a retried or preempted job used its resources more than
once). Prices per CPU-, GPU- and GiB-hour come from settings.

The sums are done by the database, in SQL both SQLite and Postgres run (``CASE`` for
the clipping), so a year of jobs is one grouped query, not rows read into Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.compute import schemas as s
from plinth.compute import tables as t
from plinth.core.projects import projects

GIB = float(1 << 30)
HOUR = 3600.0


@dataclass(frozen=True)
class Window:
    since: float | None
    until: float  # never later than now: the future holds no usage yet
    now: float


def _key(by: str) -> Any:
    return {
        "project": projects.c.name,
        "user": t.jobs.c.user,
        "pool": t.jobs.c.pool,
        "job": t.jobs.c.id,
    }[by]


def _seconds(window: Window) -> Any:
    """Each attempt's seconds inside the window, never below zero."""
    a = t.job_attempts
    start: Any = a.c.started_at
    if window.since is not None:
        start = sa.case((a.c.started_at < window.since, window.since), else_=a.c.started_at)
    ran_to = sa.func.coalesce(a.c.ended_at, window.now)
    end = sa.case((ran_to > window.until, window.until), else_=ran_to)
    return sa.case((end > start, end - start), else_=0.0)


def usage_rows(
    conn: Connection, by: str, window: Window, visible: Any, project_id: str | None
) -> list[Any]:
    """One row per group: ``key``, ``project`` (by job), ``jobs``, ``attempts`` and
    seconds, CPU-, GPU- and byte-seconds. ``visible``: project ids (None: all)."""
    a, j = t.job_attempts, t.jobs
    seconds = _seconds(window)
    key = _key(by).label("key")
    project = (projects.c.name if by == "job" else sa.null()).label("project")
    stmt = (
        sa.select(
            key,
            project,
            sa.func.count(sa.distinct(j.c.id)).label("jobs"),
            sa.func.count().label("attempts"),
            sa.func.sum(seconds).label("seconds"),
            sa.func.sum(a.c.cpus * seconds).label("cpu_seconds"),
            sa.func.sum(a.c.gpus * seconds).label("gpu_seconds"),
            sa.func.sum(a.c.memory_bytes * seconds).label("byte_seconds"),
        )
        .select_from(
            a.join(j, j.c.id == a.c.job_id).join(projects, projects.c.id == j.c.project_id)
        )
        .where(a.c.started_at < window.until)
        .group_by(key, *([project] if by == "job" else []))  # Postgres: no constant groups
    )
    if window.since is not None:
        stmt = stmt.where(sa.or_(a.c.ended_at.is_(None), a.c.ended_at > window.since))
    if visible is not None:
        stmt = stmt.where(j.c.project_id.in_(visible))
    if project_id is not None:
        stmt = stmt.where(j.c.project_id == project_id)
    return list(conn.execute(stmt).all())


def usage_row(row: Any, prices: s.Prices) -> s.UsageRow:
    cpu = float(row.cpu_seconds or 0) / HOUR
    gpu = float(row.gpu_seconds or 0) / HOUR
    gib = float(row.byte_seconds or 0) / GIB / HOUR
    return s.UsageRow(
        key=str(row.key),
        project=row.project,
        jobs=int(row.jobs),
        attempts=int(row.attempts),
        hours=float(row.seconds or 0) / HOUR,
        cpu_hours=cpu,
        gpu_hours=gpu,
        gib_hours=gib,
        cost=cpu * prices.cpu_hour + gpu * prices.gpu_hour + gib * prices.gib_hour,
    )


def total(rows: list[s.UsageRow]) -> s.UsageRow:
    """Every row summed (a job is in one row only, whatever the rows are by)."""
    return s.UsageRow(
        key="total",
        jobs=sum(r.jobs for r in rows),
        attempts=sum(r.attempts for r in rows),
        hours=sum(r.hours for r in rows),
        cpu_hours=sum(r.cpu_hours for r in rows),
        gpu_hours=sum(r.gpu_hours for r in rows),
        gib_hours=sum(r.gib_hours for r in rows),
        cost=sum(r.cost for r in rows),
    )


def ordered(rows: list[s.UsageRow]) -> list[s.UsageRow]:
    """Largest first: by cost, then GPU-, CPU- and GiB-hours, then name."""
    return sorted(rows, key=lambda r: (-r.cost, -r.gpu_hours, -r.cpu_hours, -r.gib_hours, r.key))
