"""search scope: params, tags and latest_metrics carry their run's project

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# table: (index dropped, index made, its columns)
_TABLES = {
    "params": ("ix_params_key_number", "ix_params_project_key_number", "number"),
    "tags": (None, "ix_tags_project_key_number", "number"),
    "latest_metrics": (
        "ix_latest_metrics_key_value",
        "ix_latest_metrics_project_key_value",
        "value",
    ),
}


def upgrade() -> None:
    for table, (old, new, column) in _TABLES.items():
        if old is not None:
            op.drop_index(old, table_name=table)
        op.add_column(table, sa.Column("project_id", sa.String(32), nullable=True))
        op.execute(
            f"UPDATE {table} SET project_id = "
            f"(SELECT runs.project_id FROM runs WHERE runs.id = {table}.run_id)"
        )
        # SQLite rebuilds the table for this (batch mode); Postgres alters in place.
        with op.batch_alter_table(table) as batch:
            batch.alter_column("project_id", existing_type=sa.String(32), nullable=False)
        op.create_index(new, table, ["project_id", "key", column, "run_id"])
