"""Plinth: from raw data to a monitored, governed prediction service.

The public SDK is what this module exports; everything else may change.
"""

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

__version__ = "0.1.0"

from plinth.client import Client
from plinth.tracking.run import Run, start_run

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
    "start_run",
]
