"""registry: registered models, their versions, files, tags, aliases and alias history

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_SERIAL = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _version_key() -> list[sa.Column[int | str]]:
    return [
        sa.Column("model_id", sa.String(32), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
    ]


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_registered_models_project_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column(
            "model_id", sa.String(32), sa.ForeignKey("registered_models.id"), primary_key=True
        ),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
        sa.Column("artifact_path", sa.String(1000), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("flavor", sa.String(32), nullable=False),
        sa.Column("signature", sa.Text),
        sa.Column("needs_pickle", sa.Boolean, nullable=False),
        sa.Column("unsafe_pickle", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("card", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_index("ix_model_versions_run", "model_versions", ["run_id"])
    versions = ["model_versions.model_id", "model_versions.version"]
    op.create_table(
        "model_version_files",
        *_version_key(),
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("encrypted", sa.Boolean, nullable=False),
        sa.ForeignKeyConstraint(["model_id", "version"], versions),
    )
    op.create_table(
        "model_version_tags",
        *_version_key(),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["model_id", "version"], versions),
    )
    op.create_table(
        "model_aliases",
        sa.Column(
            "model_id", sa.String(32), sa.ForeignKey("registered_models.id"), primary_key=True
        ),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "alias_events",
        sa.Column("id", _SERIAL, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.String(32), sa.ForeignKey("registered_models.id"), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("previous", sa.Integer),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_alias_events_model_alias", "alias_events", ["model_id", "alias", "id"])
