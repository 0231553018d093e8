"""MLflow's tracking REST API, served by Plinth under ``/mlflow``: point the real
MLflow client at ``http://HOST:PORT/mlflow`` and its experiments become Plinth
projects, its runs Plinth runs, stored, authorized and audited as Plinth's own."""

from plinth.core.capability import Capability

CAPABILITY = Capability(
    name="mlflow",
    services=("plinth.mlflow.service:MlflowService",),
    routers=("plinth.mlflow.routes:router",),
    commands=(("import", "plinth.mlflow.cli:import_app"),),
)
