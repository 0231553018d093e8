"""job_attempts.masks: the values an attempt's logs mask (its secrets and its token, as
handed to it), sealed under the project's data key

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_attempts", sa.Column("masks", sa.LargeBinary, nullable=True))
