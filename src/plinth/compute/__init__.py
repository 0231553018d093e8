"""Compute: jobs with CPU, memory and GPU requests, queued, scheduled (priorities,
quotas, fair share, gangs, preemption) and run by executors (local processes first);
retries, timeouts, leases, and re-adoption of running jobs after a restart."""

from plinth.core.capability import Capability

CAPABILITY = Capability(
    name="compute",
    services=(
        "plinth.compute.dispatcher:Dispatcher",
        "plinth.compute.service:JobService",
    ),
    routers=("plinth.compute.routes:router",),
    commands=(
        ("jobs", "plinth.compute.cli:jobs_app"),
        ("nodes", "plinth.compute.cli:nodes_app"),
        ("pools", "plinth.compute.cli:pools_app"),
        ("usage", "plinth.compute.usage_cli:usage_app"),
        ("sweep", "plinth.compute.sweep_cli:sweep_app"),
    ),
    calls=("plinth.compute.client:ComputeCalls",),
    tables=("plinth.compute.tables",),
    startup=("plinth.compute.dispatcher:Dispatcher.start",),
    shutdown=("plinth.compute.dispatcher:Dispatcher.stop",),
)
