"""Data: versioned datasets (content-addressed manifests of files, deduplicated across
versions, with the schema and row count of each tabular file)."""

from plinth.core.capability import Capability

CAPABILITY = Capability(
    name="data",
    services=("plinth.data.service:DatasetService",),  # after tracking's: it takes runs
    routers=("plinth.data.routes:router",),
    commands=(
        ("datasets", "plinth.data.cli:datasets_app"),
        ("datasets rules", "plinth.data.cli:rules_app"),
    ),
    calls=("plinth.data.client:DataCalls",),
    tables=("plinth.data.tables",),
)
