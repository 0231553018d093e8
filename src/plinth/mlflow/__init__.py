"""MLflow's tracking and model registry REST API, served by Plinth under ``/mlflow``:
point the real MLflow client at ``http://HOST:PORT/mlflow`` and its experiments become
Plinth projects, its runs Plinth runs, its registered models Plinth model versions,
stored, authorized and audited as Plinth's own; ``plinth import mlflow`` moves an
MLflow store (or a running server's history) over."""

from plinth.core.capability import Capability

CAPABILITY = Capability(
    name="mlflow",
    services=(
        "plinth.mlflow.service:MlflowService",
        "plinth.mlflow.models:MlflowModels",
        "plinth.mlflow.uploads:MlflowUploads",
    ),
    routers=("plinth.mlflow.routes:router",),
    commands=(("import", "plinth.mlflow.cli:import_app"),),
    tables=("plinth.mlflow.tables",),
)
