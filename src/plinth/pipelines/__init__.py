"""Pipelines: steps (``@plinth.step``) composed in plain Python (``@plinth.pipeline``),
run by the server as compute jobs in parallel as the graph allows, each skipped when
its code and inputs match a step that already ran; cron and new-dataset triggers."""

from plinth.core.capability import Capability, Periodic

CAPABILITY = Capability(
    name="pipelines",
    services=(
        "plinth.pipelines.service:PipelineService",
        "plinth.pipelines.triggers:TriggerService",
    ),
    routers=("plinth.pipelines.routes:router", "plinth.pipelines.routes:triggers_router"),
    commands=(("pipelines", "plinth.pipelines.cli:pipelines_app"),),
    calls=("plinth.pipelines.client:PipelineCalls",),
    tables=("plinth.pipelines.tables",),
    startup=("plinth.pipelines.service:PipelineService.start",),
    shutdown=("plinth.pipelines.service:PipelineService.stop",),
    periodic=(Periodic("plinth.pipelines.triggers:TriggerService.tick", every=lambda _s: 2.0),),
)
