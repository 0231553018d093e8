"""SQLAlchemy tables of deployments: what the control plane wants running (a
deployment and its spec), every change to it (``deployment_events``), and what runs
now (``deployment_replicas``: one row per replica, so that a restarted Plinth server
re-adopts or restarts them). Times are seconds since the epoch, as floats."""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core.db import metadata
from plinth.core.projects import projects

_SERIAL = sa.BigInteger().with_variant(sa.Integer, "sqlite")

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON: schemas.DeploymentSpec
    sa.Column("runtime", sa.String(32), nullable=False),  # which ReplicaRuntime runs it
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | stopped
    sa.Column("generation", sa.Integer, nullable=False),  # bumped by every change
    # the replicas' admin secret: known to the control plane and its children only
    sa.Column("secret", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("project_id", "name", name="uq_deployments_project_name"),
)

# Every change: who, when, why, and the spec before and after (rollback reads it).
deployment_events = sa.Table(
    "deployment_events",
    metadata,
    sa.Column("id", _SERIAL, primary_key=True, autoincrement=True),
    sa.Column("deployment_id", sa.String(32), nullable=False),  # kept after a delete
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("before", sa.Text),  # JSON spec; NULL when created
    sa.Column("after", sa.Text),  # JSON spec; NULL when deleted
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_deployment_events_deployment", "deployment_id", "id"),
)

deployment_replicas = sa.Table(
    "deployment_replicas",
    metadata,
    sa.Column("deployment_id", sa.String(32), primary_key=True),
    sa.Column("replica", sa.Integer, primary_key=True),
    sa.Column("pid", sa.Integer),
    sa.Column("state", sa.String(16), nullable=False),  # starting | ready | crashed | stopped
    sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.Float),
    sa.Column("next_start_at", sa.Float),  # back-off: not restarted before
)
