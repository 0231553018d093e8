"""SQLAlchemy tables of datasets. Times are seconds since the epoch, as floats.

A version's files are named content of its project (``project_blobs``): stored once
however many versions name them, pinned by digest, so a version never changes, and its
digest (sha256 over the manifest of its files) says so end to end.
"""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core.db import metadata
from plinth.core.projects import projects

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("rules", sa.Text, nullable=False, server_default="[]"),  # JSON of the rule list
    sa.Column("rules_digest", sa.String(64), nullable=False, server_default=""),
    sa.Column("rules_updated_at", sa.Float),
    sa.Column("rules_updated_by", sa.String(200)),
    sa.UniqueConstraint("project_id", "name", name="uq_datasets_project_name"),
)

dataset_versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("dataset_id", sa.String(32), sa.ForeignKey(datasets.c.id), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger),  # NULL: no tabular file
    sa.Column("validation", sa.Text),  # JSON of the push's ValidationReport; NULL: no rules
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)

dataset_files = sa.Table(
    "dataset_files",
    metadata,
    sa.Column("dataset_id", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("encrypted", sa.Boolean, nullable=False),
    sa.Column("tabular", sa.Text),  # JSON of schemas.Table; NULL for any other file
    sa.Column("profile", sa.Text),  # JSON of schemas.Profile; NULL when not profiled
    sa.ForeignKeyConstraint(
        ["dataset_id", "version"], [dataset_versions.c.dataset_id, dataset_versions.c.version]
    ),
)
