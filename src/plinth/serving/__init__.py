"""Serving: ``plinth serve``, a standalone inference server for one model version
(v1 predict and the Open Inference Protocol v2, micro-batching, load shedding,
Prometheus metrics), no Plinth server needed."""

from plinth.core.capability import Capability

CAPABILITY = Capability(
    name="serving",
    commands=(("serve", "plinth.serving.cli:serve_app"),),
)
