"""The web UI: server-rendered pages over the same services as the API."""

from plinth.core.capability import Capability

CAPABILITY = Capability(
    name="ui",
    routers=("plinth.ui.login:router", "plinth.ui.routes:router", "plinth.ui.models:router"),
    pages=(("Projects", "/"),),
)
