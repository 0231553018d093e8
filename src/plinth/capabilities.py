"""The one list of capabilities. The app, the CLI, the ``Client``, the migrations test
and the UI navigation are built from it: adding a capability is a package that
exports ``CAPABILITY`` (see ``core/capability.py``) and one line here."""

from __future__ import annotations

from functools import cache

from plinth.core.capability import Capability, load

CAPABILITIES = (
    "plinth.tracking",
    "plinth.registry",
    "plinth.serving",
    "plinth.governance",
    "plinth.compute",
    "plinth.data",
    "plinth.pipelines",
    "plinth.mlflow",
    "plinth.ui",
)


@cache
def declared() -> tuple[Capability, ...]:
    return tuple(load(f"{package}:CAPABILITY") for package in CAPABILITIES)


def load_tables() -> None:
    """Import every table declaration: the kernel's and each capability's."""
    load("plinth.core.platform")
    load("plinth.core.lineage")
    for capability in declared():
        for module in capability.tables:
            load(module)
