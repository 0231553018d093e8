"""Tracking: runs with params, tags, metrics and artifacts; search and compare them."""

from plinth.core.capability import Capability, Periodic

CAPABILITY = Capability(
    name="tracking",
    services=(
        "plinth.tracking.service:TrackingService",
        "plinth.tracking.artifacts:RunArtifactsService",
    ),
    routers=("plinth.tracking.routes:router",),
    commands=(
        ("runs", "plinth.tracking.cli:runs_app"),
        ("artifacts", "plinth.tracking.cli:artifacts_app"),
    ),
    calls=("plinth.tracking.client:TrackingCalls",),
    tables=("plinth.tracking.tables",),
    startup=("plinth.tracking.service:TrackingService.recover",),
    periodic=(
        Periodic(
            "plinth.tracking.service:TrackingService.reap_stale_runs",
            every=lambda settings: max(1.0, settings.tracking.stale_after_seconds / 4),
        ),
    ),
)
