"""project_blobs.pack, .start: content a project holds inside a pack (a batch's small
files stored as one object) and where it starts

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("project_blobs", sa.Column("pack", sa.String(32), nullable=True))
    op.add_column("project_blobs", sa.Column("start", sa.BigInteger, nullable=True))
