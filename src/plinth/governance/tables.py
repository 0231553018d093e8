"""SQLAlchemy tables of governance: users and their API tokens."""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core.db import metadata

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("is_admin", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("password_hash", sa.String(200)),  # argon2id; NULL: tokens only
)

# Web UI sessions: the cookie holds ``<id>.<secret>``; only the secret's sha256 is kept.
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# A token is shown once as ``plt_<id>_<secret>``; only the secret's sha256 is kept.
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    # A project-scoped token works in that one project with at most that role.
    sa.Column("project_id", sa.String(32)),
    sa.Column("project", sa.String(200)),
    sa.Column("role", sa.String(16)),
    sa.Index("ix_tokens_user", "user_id"),
)
