"""What the MLflow API keeps beyond Plinth's own tables. Times are seconds since the
epoch, as floats.

An MLflow 3 *logged model* is a model its run logged: its files are the run's artifacts
under ``models/MODEL_ID/`` (so they are Plinth run artifacts like any other, and a
model version registered from them is a Plinth model version); this table keeps what
MLflow says about it beyond its files. A *pending* registered model is one MLflow code
created by name before any version: Plinth keeps models in projects, and the project is
the one its first version's run is in, so until then the name waits here. A run's
*inputs* are the datasets MLflow code said it read (``mlflow.log_input``), kept as MLflow
described them (name, digest, source, schema, profile) with their tags (the context),
and the logged models it used (MLflow logs one when a metric names its ``model_id``).

An *experiment* is a project; ``mlflow_experiments`` keeps its MLflow tags and whether
MLflow code deleted it (its runs were deleted with it, at that same time, so a restore
brings back exactly those). Registered models' MLflow tags are kept in
``mlflow_model_tags`` (a pending model keeps its own until its first version). A
*multipart upload* is a file arriving in numbered parts; each part waits under the
store's ``tmp/`` (swept after an hour) until the upload completes into one artifact.
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

run_model_inputs = sa.Table(
    "mlflow_run_model_inputs",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("model_id", sa.String(40), sa.ForeignKey(logged_models.c.id), primary_key=True),
    sa.Column("logged_at", sa.Float, nullable=False),
)

pending_models = sa.Table(
    "mlflow_pending_models",
    metadata,
    sa.Column("created_by", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),  # JSON object
)

experiments = sa.Table(
    "mlflow_experiments",
    metadata,
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), primary_key=True),
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),  # JSON object
    sa.Column("deleted_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
)

model_tags = sa.Table(
    "mlflow_model_tags",
    metadata,
    sa.Column("model_id", sa.String(32), sa.ForeignKey("registered_models.id"), primary_key=True),
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),  # JSON object
)

uploads = sa.Table(
    "mlflow_uploads",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),  # sha256 of the upload's id
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("project_id", sa.String(32), sa.ForeignKey(projects.c.id), nullable=False),
    sa.Column("path", sa.String(1000), nullable=False),
    sa.Column("num_parts", sa.Integer, nullable=False),
    sa.Column("encrypted", sa.Boolean, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

upload_parts = sa.Table(
    "mlflow_upload_parts",
    metadata,
    sa.Column("id_hash", sa.String(64), sa.ForeignKey(uploads.c.id_hash), primary_key=True),
    sa.Column("part_number", sa.Integer, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("etag", sa.String(64), nullable=False),  # the part's sha256
)
