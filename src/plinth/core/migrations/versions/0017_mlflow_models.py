"""mlflow: MLflow 3 logged models, registered models waiting for their first version,
runs' dataset inputs; tracking: a run's deletion (kept, restorable)

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("deleted_at", sa.Float))
    op.create_table(
        "mlflow_logged_models",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("model_type", sa.String(250), nullable=False, server_default=""),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("params", sa.Text, nullable=False, server_default="{}"),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_index(
        "ix_mlflow_logged_models_project", "mlflow_logged_models", ["project_id", "created_at"]
    )
    op.create_index("ix_mlflow_logged_models_run", "mlflow_logged_models", ["run_id"])
    op.create_table(
        "mlflow_run_inputs",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("name", sa.String(500), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("logged_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mlflow_pending_models",
        sa.Column("created_by", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mlflow_pending_models")
    op.drop_table("mlflow_run_inputs")
    op.drop_index("ix_mlflow_logged_models_run", "mlflow_logged_models")
    op.drop_index("ix_mlflow_logged_models_project", "mlflow_logged_models")
    op.drop_table("mlflow_logged_models")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("deleted_at")
