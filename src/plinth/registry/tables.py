"""SQLAlchemy tables of the registry. Times are seconds since the epoch, as floats.

A model version's files are named content of its project (``project_blobs``): the
same bytes its run logged, pinned by digest, so a version can never change under a
name, and its digest (sha256 over the manifest of its files) says so end to end.
"""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core.db import metadata
from plinth.core.projects import projects

registered_models = sa.Table(
    "registered_models",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("project_id", "name", name="uq_registered_models_project_name"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("model_id", sa.String(32), sa.ForeignKey(registered_models.c.id), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
    sa.Column("artifact_path", sa.String(1000), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("flavor", sa.String(32), nullable=False),
    sa.Column("signature", sa.Text),  # JSON, as MLmodel.json gave it
    sa.Column("needs_pickle", sa.Boolean, nullable=False),
    # loading it is allowed in a serving worker: set by a project admin only
    sa.Column("unsafe_pickle", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("status", sa.String(16), nullable=False),  # ready | archived
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("card", sa.Text, nullable=False, server_default="{}"),  # editable card fields
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Index("ix_model_versions_run", "run_id"),
)

model_version_files = sa.Table(
    "model_version_files",
    metadata,
    sa.Column("model_id", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("path", sa.String(1000), primary_key=True),  # relative to the version's root
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("encrypted", sa.Boolean, nullable=False),
    sa.ForeignKeyConstraint(
        ["model_id", "version"], [model_versions.c.model_id, model_versions.c.version]
    ),
)

model_version_tags = sa.Table(
    "model_version_tags",
    metadata,
    sa.Column("model_id", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.ForeignKeyConstraint(
        ["model_id", "version"], [model_versions.c.model_id, model_versions.c.version]
    ),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("model_id", sa.String(32), sa.ForeignKey(registered_models.c.id), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

# Every move of an alias, kept: who, when, from which version to which, and why.
alias_events = sa.Table(
    "alias_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("model_id", sa.String(32), sa.ForeignKey(registered_models.c.id), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer),  # NULL: the alias was removed
    sa.Column("previous", sa.Integer),  # NULL: the alias was new
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_alias_events_model_alias", "model_id", "alias", "id"),
)
