"""pipelines: runs with their spec and snapshot, steps with their cache keys and
outputs, triggers (cron and new dataset versions)

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("function", sa.String(500), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
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
    )
    op.create_index("ix_pipeline_runs_project_seq", "pipeline_runs", ["project_id", "seq"])
    op.create_index("ix_pipeline_runs_status", "pipeline_runs", ["status"])
    op.create_table(
        "pipeline_steps",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("pipeline_runs.id"), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("inputs", sa.Text),
        sa.Column("datasets", sa.Text, nullable=False, server_default="{}"),
        sa.Column("job_id", sa.String(32)),
        sa.Column("outputs_run_id", sa.String(32)),
        sa.Column("outputs", sa.Text),
        sa.Column("outputs_digest", sa.String(64)),
        sa.Column("cached_from", sa.String(32)),
        sa.Column("reason", sa.Text),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
    )
    op.create_index("ix_pipeline_steps_cache", "pipeline_steps", ["project_id", "cache_key"])
    op.create_index("ix_pipeline_steps_job", "pipeline_steps", ["job_id"])
    op.create_table(
        "pipeline_triggers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("snapshot_digest", sa.String(64), nullable=False),
        sa.Column("snapshot_size", sa.BigInteger, nullable=False),
        sa.Column("no_cache", sa.Boolean, nullable=False),
        sa.Column("cron", sa.String(120)),
        sa.Column("dataset", sa.String(200)),
        sa.Column("next_at", sa.Float),
        sa.Column("seen_version", sa.Integer),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("user_id", sa.String(32)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("fired_at", sa.Float),
        sa.Column("fired", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_run", sa.String(32)),
        sa.UniqueConstraint("project_id", "name", name="uq_pipeline_triggers_project_name"),
    )


def downgrade() -> None:
    op.drop_table("pipeline_triggers")
    op.drop_table("pipeline_steps")
    op.drop_table("pipeline_runs")
