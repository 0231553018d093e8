"""The web UI: server-rendered pages over the same services as the API."""

from plinth.core.capability import Capability

CAPABILITY = Capability(
    name="ui",
    # The traffic charts' readings, kept in this process (traffic.py).
    services=("plinth.ui.traffic:TrafficHistory",),
    routers=(
        "plinth.ui.login:router",
        "plinth.ui.routes:router",
        "plinth.ui.models:router",
        "plinth.ui.deployments:router",
        "plinth.ui.deployment_changes:router",
        "plinth.ui.jobs:router",
        "plinth.ui.job_changes:router",
        "plinth.ui.sweeps:router",
        "plinth.ui.datasets:router",
        "plinth.ui.pipelines:router",
        "plinth.ui.lineage:router",
        "plinth.ui.mlflow_links:router",
    ),
    pages=(("Projects", "/"), ("Jobs", "/jobs")),
)
