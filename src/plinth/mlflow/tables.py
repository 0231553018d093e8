"""What the MLflow API keeps beyond Plinth's own tables. Times are seconds since the
epoch, as floats.

An MLflow 3 *logged model* is a model its run logged: its files are the run's artifacts
under ``models/MODEL_ID/`` (so they are Plinth run artifacts like any other, and a
model version registered from them is a Plinth model version); this table keeps what
MLflow says about it beyond its files. A *pending* registered model is one MLflow code
created by name before any version: Plinth keeps models in projects, and the project is
the one its first version's run is in, so until then the name waits here. A run's
*inputs* are the datasets MLflow code said it read (``mlflow.log_input``), kept as MLflow
described them (name, digest, source, schema, profile) with their tags (the context).
"""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core.db import metadata
from plinth.core.projects import projects

logged_models = sa.Table(
    "mlflow_logged_models",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # m-<32 hex>, as MLflow names them
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), nullable=False),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("name", sa.String(250), nullable=False),
    sa.Column("model_type", sa.String(250), nullable=False, server_default=""),
    sa.Column("status", sa.String(32), nullable=False),  # MLflow's LoggedModelStatus
    sa.Column("params", sa.Text, nullable=False, server_default="{}"),  # JSON object
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),  # JSON object
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Index("ix_mlflow_logged_models_project", "project_id", "created_at"),
    sa.Index("ix_mlflow_logged_models_run", "run_id"),
)

run_inputs = sa.Table(
    "mlflow_run_inputs",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("name", sa.String(500), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("dataset", sa.Text, nullable=False),  # MLflow's Dataset, as JSON
    sa.Column("tags", sa.Text, nullable=False),  # its InputTags, as a JSON object
    sa.Column("logged_at", sa.Float, nullable=False),
)

pending_models = sa.Table(
    "mlflow_pending_models",
    metadata,
    sa.Column("created_by", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)
