"""project_blobs: the content each project holds, so naming content by digest stays
inside the project that holds it

Revision ID: 0010
Revises: 0009
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_blobs",
        sa.Column("project_id", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("encrypted", sa.Boolean, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    # What each project already names is what it holds.
    op.execute(
        sa.text(
            "INSERT INTO project_blobs (project_id, digest, encrypted, size, created_at) "
            "SELECT runs.project_id, artifacts.digest, artifacts.encrypted, "
            "MAX(artifacts.size), :now FROM artifacts JOIN runs ON runs.id = artifacts.run_id "
            "GROUP BY runs.project_id, artifacts.digest, artifacts.encrypted"
        ).bindparams(now=time.time())
    )
