"""The dispatcher's reads and writes of jobs and attempts.

Every change of a started job is conditional on the attempt it names (the fencing
token) and on the status it expects, so two dispatchers over one database never both
start a job, and a stale attempt's end never overwrites a newer one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.compute import tables as t
from plinth.compute.executors import Handle
from plinth.compute.resources import Resources
from plinth.compute.scheduler import Allocation, Request
from plinth.core.db import Database
from plinth.core.projects import projects

LIVE = ("running", "preempted")  # a started job, until it is settled


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: ``status`` is the attempt's (succeeded, failed, lost,
    cancelled, preempted, timeout)."""

    status: str
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Settled:
    """What a settle wrote: the job's new status, and whether it is the job's end."""

    status: str
    ended: bool


def request_of(row: Any, project: str) -> Request:
    """A job row as the scheduler sees it: units of ``procs_per_node`` processes."""
    procs = row.procs_per_node
    per_unit = Resources(
        cpus=row.cpus * procs, memory_bytes=row.memory_bytes * procs, gpus=row.gpus * procs
    )
    return Request(
        job_id=row.id,
        project=project,
        priority=row.priority,
        seq=row.seq,
        pool=row.pool,
        units=row.units,
        per_unit=per_unit,
    )


def granted(allocations: Sequence[Allocation]) -> dict[str, Any]:
    """An attempt's resources, all units together: what its usage is counted in."""
    return {
        "cpus": sum(a.resources.cpus for a in allocations),
        "memory_bytes": sum(a.resources.memory_bytes for a in allocations),
        "gpus": sum(a.resources.gpus for a in allocations),
    }


def allocations_json(allocations: Sequence[Allocation]) -> str:
    return json.dumps([asdict(a) for a in allocations])


def allocations_of(text: str) -> tuple[Allocation, ...]:
    found = []
    for a in json.loads(text):
        res = Resources(**a["resources"])
        found.append(Allocation(a["node"], res, tuple(a["cpu_ids"]), tuple(a["gpu_ids"])))
    return tuple(found)


def handles_json(handles: Sequence[Handle]) -> str:
    return json.dumps([asdict(h) for h in handles])


def handles_of(text: str) -> list[Handle]:
    return [Handle(h["executor"], h["ident"], h.get("data") or {}) for h in json.loads(text)]


_JOB_AND_PROJECT = sa.select(t.jobs, projects.c.name.label("project")).join(
    projects, projects.c.id == t.jobs.c.project_id
)


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # reads ------------------------------------------------------------------------------

    def ready_ids(self, now: float) -> tuple[set[str], float | None]:
        """Queued jobs that may start now, and when the next waiting retry may."""
        j = t.jobs
        ready = sa.or_(j.c.retry_at.is_(None), j.c.retry_at <= now)
        queued = j.c.status == "queued"
        with self.db.read() as conn:
            ids = set(conn.execute(sa.select(j.c.id).where(queued, ready)).scalars())
            later = sa.select(sa.func.min(j.c.retry_at)).where(queued, j.c.retry_at > now)
            return ids, conn.execute(later).scalar()

    def jobs(self, ids: Iterable[str]) -> list[Any]:
        """Job rows with their project's name, as ``row.project``."""
        wanted = list(ids)
        rows: list[Any] = []
        with self.db.read() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows += conn.execute(_JOB_AND_PROJECT.where(t.jobs.c.id.in_(chunk))).all()
        return rows

    def job(self, job_id: str) -> Any:
        found = self.jobs([job_id])
        return found[0] if found else None

    def stops(self, ids: Iterable[str]) -> dict[str, str]:
        """The stops asked of these jobs (cancel, preempt, timeout), by job id."""
        j, wanted, found = t.jobs, list(ids), {}
        with self.db.read() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                stmt = sa.select(j.c.id, j.c.stop).where(j.c.id.in_(chunk), j.c.stop.is_not(None))
                found.update(dict(conn.execute(stmt).all()))
        return found

    def live_attempts(self, expired_before: float | None = None) -> list[Any]:
        """Attempts still running (with ``expired_before``: only those whose lease ran
        out before then), each with its job's row fields it needs."""
        a, j = t.job_attempts, t.jobs
        stmt = (
            sa.select(a, j.c.pool, j.c.stop, j.c.status.label("job_status"))
            .join(j, sa.and_(j.c.id == a.c.job_id, j.c.attempt == a.c.attempt))
            .where(a.c.status == "running", j.c.status.in_(LIVE))
        )
        if expired_before is not None:
            stmt = stmt.where(
                sa.or_(a.c.lease_expires_at.is_(None), a.c.lease_expires_at < expired_before)
            )
        with self.db.read() as conn:
            return list(conn.execute(stmt).all())

    def running_allocations(self) -> list[tuple[str, tuple[Allocation, ...]]]:
        a = t.job_attempts
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(a.c.job_id, a.c.allocations).where(a.c.status == "running")
            )
            return [(job_id, allocations_of(text)) for job_id, text in rows]

    def has_work(self) -> bool:
        """Whether any job waits or runs (an embedded app hands them on at its end)."""
        live = t.jobs.c.status.in_(("queued", "running", "preempted"))
        with self.db.read() as conn:
            return conn.execute(sa.select(t.jobs.c.id).where(live).limit(1)).first() is not None

    # writes -----------------------------------------------------------------------------

    def lead(self, holder: str, now: float, until: float) -> bool:
        """Take or keep the one dispatcher lease of this database: True while
        ``holder`` has it. Two dispatchers never both start jobs, nor both count the
        nodes' capacity as theirs."""
        lease = t.dispatcher_lease
        with self.db.read() as conn:  # a waiting process looks first: no write lock each second
            held = conn.execute(
                sa.select(lease.c.holder, lease.c.expires_at).where(lease.c.name == "dispatcher")
            ).first()
        if held is not None and held.holder != holder and held.expires_at >= now:
            return False
        with self.db.write() as conn:
            mine = sa.or_(lease.c.holder == holder, lease.c.expires_at < now)
            kept = conn.execute(
                lease.update()
                .where(lease.c.name == "dispatcher", mine)
                .values(holder=holder, expires_at=until)
            ).rowcount
            if kept:
                return True
            row = {"name": "dispatcher", "holder": holder, "expires_at": until}
            taken = self.db.insert_ignoring_duplicates(lease).returning(lease.c.holder)
            return conn.execute(taken, row).first() is not None  # rowcount lies here

    def resign(self, holder: str) -> None:
        lease = t.dispatcher_lease
        with self.db.write() as conn:
            conn.execute(
                lease.update()
                .where(lease.c.name == "dispatcher", lease.c.holder == holder)
                .values(expires_at=0.0)
            )

    def claim(
        self, row: Any, allocations: Sequence[Allocation], nodes: list[str], lease: float
    ) -> int | None:
        """Queued → running, only if still queued as read: the new attempt, or None when
        another dispatcher took it or it was cancelled meanwhile."""
        with self.db.write() as conn:
            return self.claim_in(conn, row, allocations, nodes, lease)

    def others_waiting(self, conn: Connection, job_id: str, now: float) -> bool:
        """Whether a queued job besides ``job_id`` may start now (in the caller's
        transaction: under SQLite's write lock, the whole truth)."""
        j = t.jobs
        ready = sa.or_(j.c.retry_at.is_(None), j.c.retry_at <= now)
        found = sa.select(j.c.id).where(j.c.status == "queued", j.c.id != job_id, ready).limit(1)
        return conn.execute(found).first() is not None

    def claim_in(
        self,
        conn: Connection,
        row: Any,
        allocations: Sequence[Allocation],
        nodes: list[str],
        lease: float,
    ) -> int | None:
        """``claim`` in the caller's transaction."""
        j, now, attempt = t.jobs, time.time(), row.attempt + 1
        taken = conn.execute(
            j.update()
            .where(j.c.id == row.id, j.c.status == "queued", j.c.attempt == row.attempt)
            .values(
                status="running",
                attempt=attempt,
                started_at=now,
                stop=None,
                retry_at=None,
                node=nodes[0] if nodes else None,
                exit_code=None,
                reason=None,
            )
        ).rowcount
        if not taken:
            return None
        conn.execute(
            t.job_attempts.insert(),
            {
                "job_id": row.id,
                "attempt": attempt,
                "status": "running",
                "nodes": json.dumps(nodes),
                "allocations": allocations_json(allocations),
                "handles": "[]",
                "masks": b"",
                "lease_expires_at": now + lease,
                "started_at": now,
                **granted(allocations),
            },
        )
        return attempt

    def launched(
        self,
        job_id: str,
        attempt: int,
        handles: Sequence[Handle],
        token_id: str | None,
        masks: bytes,
    ) -> None:
        """The attempt's workers, its token and the values its logs mask (sealed)."""
        a = t.job_attempts
        with self.db.write() as conn:
            conn.execute(
                a.update()
                .where(a.c.job_id == job_id, a.c.attempt == attempt)
                .values(handles=handles_json(handles), token_id=token_id, masks=masks)
            )

    def masks(self, job_id: str, attempt: int) -> bytes | None:
        """The attempt's sealed masks: b"" while it is launched, None for an attempt
        made before they were kept (or none at all)."""
        a = t.job_attempts
        with self.db.read() as conn:
            found = conn.execute(
                sa.select(a.c.masks).where(a.c.job_id == job_id, a.c.attempt == attempt)
            ).first()
        return None if found is None else found.masks

    def renew(self, attempts: Iterable[tuple[str, int]], until: float) -> None:
        a = t.job_attempts
        with self.db.write() as conn:
            for job_id, attempt in attempts:
                conn.execute(
                    a.update()
                    .where(a.c.job_id == job_id, a.c.attempt == attempt, a.c.status == "running")
                    .values(lease_expires_at=until)
                )

    def ask_stop(
        self, job_id: str, attempt: int | None, stop: str, status: str | None = None
    ) -> bool:
        """Ask a started job to stop (``status``: shown meanwhile, e.g. preempted)."""
        j = t.jobs
        values: dict[str, Any] = {"stop": stop}
        if status is not None:
            values["status"] = status
        cond = [j.c.id == job_id, j.c.status.in_(LIVE)]
        if attempt is not None:
            cond.append(j.c.attempt == attempt)
        with self.db.write() as conn:
            return bool(conn.execute(j.update().where(*cond).values(**values)).rowcount)

    def fail_queued(self, job_id: str, reason: str) -> None:
        j = t.jobs
        with self.db.write() as conn:
            conn.execute(
                j.update()
                .where(j.c.id == job_id, j.c.status == "queued")
                .values(status="failed", reason=reason, ended_at=time.time())
            )

    def settle(self, job_id: str, attempt: int, outcome: Outcome, backoff: Any) -> Settled | None:
        """Write how the attempt ended, and what becomes of the job: ended, or queued
        again (a preemption, or a failure with retries left, after ``backoff(n)``
        seconds). None when the attempt is stale (settled already, or superseded)."""
        j, a, now = t.jobs, t.job_attempts, time.time()
        with self.db.write() as conn:
            row = conn.execute(sa.select(j).where(j.c.id == job_id, j.c.attempt == attempt)).first()
            if row is None or row.status not in LIVE:
                return None
            values, settled = _next_state(row, outcome, now, backoff)
            written = conn.execute(
                j.update()
                .where(j.c.id == job_id, j.c.attempt == attempt, j.c.status.in_(LIVE))
                .values(**values)
            ).rowcount
            if not written:
                return None
            conn.execute(
                a.update()
                .where(a.c.job_id == job_id, a.c.attempt == attempt)
                .values(
                    status=outcome.status,
                    ended_at=now,
                    exit_code=outcome.exit_code,
                    reason=outcome.reason,
                    lease_expires_at=None,
                )
            )
        return settled


def _next_state(
    row: Any, outcome: Outcome, now: float, backoff: Any
) -> tuple[dict[str, Any], Settled]:
    common = {"stop": None, "exit_code": outcome.exit_code, "reason": outcome.reason}
    if outcome.status == "preempted":
        values = {**common, "status": "queued", "disruptions": row.disruptions + 1}
        return values, Settled("queued", False)
    retriable = outcome.status in ("failed", "lost")
    if retriable and row.failures < row.retries:
        retry_at = now + backoff(row.failures)
        values = {**common, "status": "queued", "failures": row.failures + 1, "retry_at": retry_at}
        return values, Settled("queued", False)
    status = {"timeout": "failed"}.get(outcome.status, outcome.status)
    return {**common, "status": status, "ended_at": now}, Settled(status, True)
