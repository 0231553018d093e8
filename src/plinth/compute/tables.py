"""SQLAlchemy tables of compute: jobs (what was asked, and where each stands) and
their attempts (each start of a job: where its workers ran, their executor handles
and the lease that says someone still watches them).

A job's ``attempt`` is the fencing token: the dispatcher changes a job only where the
row still names the attempt it started, so a stale attempt's outcome is never written
over a newer one. Times are seconds since the epoch, as floats.
"""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core.db import metadata
from plinth.core.projects import projects

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "preempted", "lost")
ENDED = ("succeeded", "failed", "cancelled", "lost")

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),  # submission order: first in, first out
    sa.Column("user", sa.String(200), nullable=False),  # who submitted it
    sa.Column("user_id", sa.String(32)),  # None before auth: the job then needs no token
    sa.Column("argv", sa.Text, nullable=False),  # JSON list of strings, never a shell line
    sa.Column("env", sa.Text, nullable=False),  # JSON object, not secret
    sa.Column("secrets", sa.Text, nullable=False),  # JSON list of the project's secret names
    sa.Column("cpus", sa.Float, nullable=False),  # per process
    sa.Column("memory_bytes", sa.BigInteger, nullable=False),  # per process; 0: no limit
    sa.Column("gpus", sa.Integer, nullable=False),  # per process
    sa.Column("units", sa.Integer, nullable=False),  # nodes of a gang
    sa.Column("procs_per_node", sa.Integer, nullable=False),
    sa.Column("pool", sa.String(63), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),  # failures tolerated
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),  # retries used
    sa.Column("disruptions", sa.Integer, nullable=False, server_default="0"),  # preemptions
    sa.Column("timeout_seconds", sa.Float),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stop", sa.String(16)),  # asked of a running job: cancel | preempt | timeout
    sa.Column("exit_code", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),  # 0: never started
    sa.Column("retry_at", sa.Float),  # a queued retry waits until then
    sa.Column("submitted_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("snapshot_digest", sa.String(64)),  # the working directory, content-addressed
    sa.Column("snapshot_size", sa.BigInteger),
    sa.Column("snapshot_encrypted", sa.Boolean),
    sa.Column("run_id", sa.String(32)),  # the tracked run the job logs to
    sa.Column("node", sa.String(200)),  # where its first worker runs (ran)
    sa.Index("ix_jobs_status", "status", "priority", "seq"),  # the dispatcher's queue
    sa.Index("ix_jobs_project", "project_id", "seq"),  # a project's list, newest first
)

dispatcher_lease = sa.Table(
    "dispatcher_lease",  # one row: which process dispatches this home's jobs, until when
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

job_attempts = sa.Table(
    "job_attempts",
    metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # running, then how it ended
    sa.Column("nodes", sa.Text, nullable=False),  # JSON list of node names, by unit
    sa.Column("allocations", sa.Text, nullable=False),  # JSON: scheduler.Allocation per unit
    sa.Column("handles", sa.Text, nullable=False),  # JSON: executor Handle per worker
    sa.Column("lease_expires_at", sa.Float),  # renewed while a dispatcher sees it run
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("exit_code", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("token_id", sa.String(64)),  # the job's project-scoped token, revoked at its end
    # The values its logs mask (its secrets and token as handed to it), sealed: JSON
    # list. Empty until its workers are launched; NULL for an attempt of before 0022.
    sa.Column("masks", sa.LargeBinary),
    # What the attempt was granted, all units together: usage is these times its hours.
    sa.Column("cpus", sa.Float, nullable=False, server_default="0"),
    sa.Column("memory_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("gpus", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_job_attempts_status", "status", "lease_expires_at"),
    sa.Index("ix_job_attempts_started", "started_at"),  # usage over a time window
)
