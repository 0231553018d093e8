"""data: datasets (with their rules), their versions and the files each version names;
core: lineage edges

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("rules", sa.Text, nullable=False, server_default="[]"),
        sa.Column("rules_digest", sa.String(64), nullable=False, server_default=""),
        sa.Column("rules_updated_at", sa.Float),
        sa.Column("rules_updated_by", sa.String(200)),
        sa.UniqueConstraint("project_id", "name", name="uq_datasets_project_name"),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("files", sa.Integer, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.BigInteger),
        sa.Column("validation", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "dataset_files",
        sa.Column("dataset_id", sa.String(32), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("encrypted", sa.Boolean, nullable=False),
        sa.Column("tabular", sa.Text),
        sa.Column("profile", sa.Text),
        sa.ForeignKeyConstraint(
            ["dataset_id", "version"],
            ["dataset_versions.dataset_id", "dataset_versions.version"],
        ),
    )

    op.create_table(
        "lineage_edges",
        sa.Column("src", sa.String(600), primary_key=True),
        sa.Column("dst", sa.String(600), primary_key=True),
        sa.Column("relation", sa.String(32), nullable=False),
        sa.Column("src_project_id", sa.String(32), nullable=False),
        sa.Column("dst_project_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_lineage_edges_dst", "lineage_edges", ["dst"])


def downgrade() -> None:
    op.drop_index("ix_lineage_edges_dst", "lineage_edges")
    op.drop_table("lineage_edges")
    op.drop_table("dataset_files")
    op.drop_table("dataset_versions")
    op.drop_table("datasets")
