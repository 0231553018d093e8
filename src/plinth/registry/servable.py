"""Whether a registered version may be served: the one check every way into serving
applies (a deployment's create, canary, shadow and rollback; ``plinth serve
models:/…``), whether the version was named by number or reached through an alias."""

from __future__ import annotations

from plinth.errors import Conflict
from plinth.registry.flavors import FLAVORS
from plinth.registry.schemas import ModelVersion


def check_servable(version: ModelVersion, via: str | None = None) -> None:
    """Refuse a version no server may load: archived, needing pickle that no platform
    admin allowed (``unsafe_pickle``), or of a flavor Plinth has no loader for.
    ``via``: the URI it was reached by (an alias), named in the refusal."""
    what = f"version {version.version} of {version.name!r}"
    reached = f" ({via} points to it)" if via and "@" in via else ""
    if version.status != "ready":
        advice = ": move the alias to a ready version" if reached else ""
        raise Conflict(f"{what} is {version.status}{reached}; it is not served{advice}")
    if version.needs_pickle and not version.unsafe_pickle:
        raise Conflict(
            f"{what}{reached} needs pickle to load: a platform admin must mark it "
            "unsafe_pickle before it can be served"
        )
    if version.flavor not in FLAVORS:
        raise Conflict(
            f"{what}{reached} is a {version.flavor!r} model, which Plinth has no loader "
            f"for (it loads {', '.join(FLAVORS)}): download it to use it elsewhere"
        )
