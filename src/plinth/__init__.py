"""Plinth: from raw data to a monitored, governed prediction service.

The public SDK is what this module exports; everything else may change.

``import plinth`` loads only the errors: ``Client``, ``start_run`` and ``Run`` are
imported on first use, so a script (or ``plinth --help``) that never talks to Plinth
pays nothing for the HTTP client, the database or the web framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plinth.errors import (
    BlobMissing,
    Conflict,
    CorruptArtifact,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PlinthError,
    Unauthenticated,
)

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.pipelines.dsl import dataset, pipeline, step
    from plinth.tracking.run import Run, start_run

__version__ = "0.1.0"

_LAZY = {
    "Client": "plinth.client",
    "Run": "plinth.tracking.run",
    "start_run": "plinth.tracking.run",
    "step": "plinth.pipelines.dsl",
    "pipeline": "plinth.pipelines.dsl",
    "dataset": "plinth.pipelines.dsl",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'plinth' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "BlobMissing",
    "Client",
    "Conflict",
    "CorruptArtifact",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PlinthError",
    "Run",
    "Unauthenticated",
    "__version__",
    "dataset",
    "pipeline",
    "start_run",
    "step",
]
