"""compute: jobs and their attempts

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("user_id", sa.String(32)),
        sa.Column("argv", sa.Text, nullable=False),
        sa.Column("env", sa.Text, nullable=False),
        sa.Column("secrets", sa.Text, nullable=False),
        sa.Column("cpus", sa.Float, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("procs_per_node", sa.Integer, nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("disruptions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("timeout_seconds", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stop", sa.String(16)),
        sa.Column("exit_code", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retry_at", sa.Float),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("snapshot_digest", sa.String(64)),
        sa.Column("snapshot_size", sa.BigInteger),
        sa.Column("snapshot_encrypted", sa.Boolean),
        sa.Column("run_id", sa.String(32)),
        sa.Column("node", sa.String(200)),
    )
    op.create_index("ix_jobs_status", "jobs", ["status", "priority", "seq"])
    op.create_index("ix_jobs_project", "jobs", ["project_id", "seq"])
    op.create_table(
        "job_attempts",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("nodes", sa.Text, nullable=False),
        sa.Column("allocations", sa.Text, nullable=False),
        sa.Column("handles", sa.Text, nullable=False),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("token_id", sa.String(64)),
        sa.Column("cpus", sa.Float, nullable=False, server_default="0"),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("gpus", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_job_attempts_status", "job_attempts", ["status", "lease_expires_at"])
    op.create_index("ix_job_attempts_started", "job_attempts", ["started_at"])
    op.create_table(
        "dispatcher_lease",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
