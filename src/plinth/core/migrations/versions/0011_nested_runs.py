"""nested runs: a run may name the run it is nested in

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No foreign key: SQLite cannot add one to an existing table without rebuilding it
    # (and the tables that point at runs); the service checks the parent instead.
    op.add_column("runs", sa.Column("parent_id", sa.String(32), nullable=True))
    op.create_index("ix_runs_parent", "runs", ["parent_id"])
