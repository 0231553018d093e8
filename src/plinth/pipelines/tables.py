"""SQLAlchemy tables of pipelines. Times are seconds since the epoch, as floats.

A run keeps the spec it was started with and the snapshot its steps run in; a step's
row is its state machine (waiting → running → succeeded/failed, or cached, skipped,
cancelled), the job that ran it and the outputs it left: artifacts ``outputs/…`` of a
tracked run, named by digest. A step of the same project whose ``cache_key`` matches
lends its outputs to a later one.
"""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core.db import metadata
from plinth.core.projects import projects

pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("function", sa.String(500), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON of schemas.PipelineSpec
    sa.Column("snapshot_digest", sa.String(64), nullable=False),
    sa.Column("snapshot_size", sa.BigInteger, nullable=False),
    sa.Column("no_cache", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("user", sa.String(200), nullable=False),
    sa.Column("user_id", sa.String(32)),
    sa.Column("trigger", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Index("ix_pipeline_runs_project_seq", "project_id", "seq"),
    sa.Index("ix_pipeline_runs_status", "status"),
)

pipeline_steps = sa.Table(
    "pipeline_steps",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey(pipeline_runs.c.id), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("project_id", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cache_key", sa.String(64)),
    sa.Column("inputs", sa.Text),  # JSON of {arg: ResolvedInput}, once submitted
    sa.Column("datasets", sa.Text, nullable=False, server_default="{}"),  # {arg: NAME@V}
    sa.Column("job_id", sa.String(32)),
    sa.Column("outputs_run_id", sa.String(32)),  # the tracked run holding outputs/…
    sa.Column("outputs", sa.Text),  # JSON of [[path, digest, size], …]
    sa.Column("outputs_digest", sa.String(64)),
    sa.Column("cached_from", sa.String(32)),
    sa.Column("reason", sa.Text),
    sa.Column("started_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Index("ix_pipeline_steps_cache", "project_id", "cache_key"),
    sa.Index("ix_pipeline_steps_job", "job_id"),
)

pipeline_triggers = sa.Table(
    "pipeline_triggers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("pipeline", sa.String(100), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("snapshot_digest", sa.String(64), nullable=False),
    sa.Column("snapshot_size", sa.BigInteger, nullable=False),
    sa.Column("no_cache", sa.Boolean, nullable=False),
    sa.Column("cron", sa.String(120)),
    sa.Column("dataset", sa.String(200)),
    sa.Column("next_at", sa.Float),  # cron: when it fires next
    sa.Column("seen_version", sa.Integer),  # dataset: the newest version it has seen
    sa.Column("user", sa.String(200), nullable=False),
    sa.Column("user_id", sa.String(32)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("fired_at", sa.Float),
    sa.Column("fired", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_run", sa.String(32)),
    sa.UniqueConstraint("project_id", "name", name="uq_pipeline_triggers_project_name"),
)
