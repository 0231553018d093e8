"""mlflow: experiments' tags and deletion, registered models' tags, multipart uploads,
the logged models a run used

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mlflow_pending_models") as batch:
        batch.add_column(sa.Column("tags", sa.Text, nullable=False, server_default="{}"))
    op.create_table(
        "mlflow_experiments",
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        sa.Column("deleted_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mlflow_run_model_inputs",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column(
            "model_id", sa.String(40), sa.ForeignKey("mlflow_logged_models.id"), primary_key=True
        ),
        sa.Column("logged_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mlflow_model_tags",
        sa.Column(
            "model_id", sa.String(32), sa.ForeignKey("registered_models.id"), primary_key=True
        ),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_table(
        "mlflow_uploads",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("num_parts", sa.Integer, nullable=False),
        sa.Column("encrypted", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mlflow_upload_parts",
        sa.Column(
            "id_hash", sa.String(64), sa.ForeignKey("mlflow_uploads.id_hash"), primary_key=True
        ),
        sa.Column("part_number", sa.Integer, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mlflow_upload_parts")
    op.drop_table("mlflow_uploads")
    op.drop_table("mlflow_model_tags")
    op.drop_table("mlflow_run_model_inputs")
    op.drop_table("mlflow_experiments")
    with op.batch_alter_table("mlflow_pending_models") as batch:
        batch.drop_column("tags")
