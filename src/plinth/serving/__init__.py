"""Serving: ``plinth serve``, a standalone inference server for one model version
(v1 predict and the Open Inference Protocol v2, micro-batching, load shedding,
Prometheus metrics), no Plinth server needed; and deployments, its control plane in
the Plinth server (canary, shadow, promote, rollback, supervised and autoscaled
replicas behind one URL)."""

from plinth.core.capability import Capability, Periodic

TICK = "plinth.serving.supervisor:DeploymentSupervisor.tick"

CAPABILITY = Capability(
    name="serving",
    services=(
        "plinth.serving.supervisor:DeploymentSupervisor",
        "plinth.serving.service:DeploymentService",
    ),
    routers=("plinth.serving.routes:router",),
    commands=(
        ("serve", "plinth.serving.cli:serve_app"),
        ("deployments", "plinth.serving.deploy_cli:deployments_app"),
    ),
    calls=("plinth.serving.client:DeploymentCalls",),
    tables=("plinth.serving.tables",),
    startup=("plinth.serving.supervisor:DeploymentSupervisor.start",),
    periodic=(Periodic(TICK, every=lambda _settings: 1.0),),
)
