"""SQLAlchemy tables of tracking. Times are seconds since the epoch, as floats."""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core.db import metadata
from plinth.core.projects import projects

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), nullable=False),
    sa.Column("name", sa.String(250), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("start_time", sa.Float, nullable=False),
    sa.Column("end_time", sa.Float),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    # the run this one is nested in; checked by the service (same project), not by a
    # foreign key, which SQLite cannot add to an existing table in place
    sa.Column("parent_id", sa.String(32)),
    # set when the run is deleted: kept, restorable, and left out of searches
    sa.Column("deleted_at", sa.Float),
    sa.Index("ix_runs_project_start", "project_id", "start_time"),
    sa.Index("ix_runs_status_heartbeat", "status", "heartbeat_at"),
    sa.Index("ix_runs_parent", "parent_id"),
)

# Params hold JSON text; tags plain text. ``number`` is the value as a float where it
# is a finite number (else NULL), so numeric filters and sorts need no casts.
# ``project_id`` in params, tags and latest_metrics is the run's, copied on write, so
# that a search's lookups by key stay inside the project (its indexes lead with it):
# a search costs what its project holds, not what the whole store holds.
params = sa.Table(
    "params",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("number", sa.Float),
    sa.Column("project_id", sa.String(32), nullable=False),
    sa.Index("ix_params_project_key_number", "project_id", "key", "number", "run_id"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("number", sa.Float),
    sa.Column("project_id", sa.String(32), nullable=False),
    sa.Index("ix_tags_project_key_number", "project_id", "key", "number", "run_id"),
)

# A metric's history in column chunks: each holds some of its points as packed
# little-endian arrays (steps int64, timestamps and values float64, NaN and ±inf as
# they are). A million points are a few hundred rows, read in milliseconds; a row per
# point costs a microsecond each to read back. Points arrive in batches: a batch's
# series is one chunk, and a small one tops up the metric's last chunk instead.
metric_chunks = sa.Table(
    "metric_chunks",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("steps", sa.LargeBinary, nullable=False),
    sa.Column("timestamps", sa.LargeBinary, nullable=False),
    sa.Column("values", sa.LargeBinary, nullable=False),
    sa.Index("ix_metric_chunks_run_key", "run_id", "key", "id"),
)

# The newest point of each (run, key), kept on write so search never scans history.
latest_metrics = sa.Table(
    "latest_metrics",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("value", sa.Float),  # NULL is NaN: SQLite cannot store NaN
    sa.Column("project_id", sa.String(32), nullable=False),
    sa.Index("ix_latest_metrics_project_key_value", "project_id", "key", "value", "run_id"),
)

# Batch ids already applied: a retried batch is recognised and applied once.
log_batches = sa.Table(
    "log_batches",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # sealed with the project's data key (core/encrypted.py), stored under enc/<project>/
    sa.Column("encrypted", sa.Boolean, nullable=False, server_default=sa.false()),
)
