"""tokens: optional project scope and role

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("project_id", sa.String(32)))
        batch.add_column(sa.Column("project", sa.String(200)))
        batch.add_column(sa.Column("role", sa.String(16)))
