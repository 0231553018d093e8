"""What a tabular file holds (format, rows, Arrow schema), read with pyarrow where the
data is: on the machine that pushes it. Parquet answers from its footer; CSV and JSON
lines are streamed once, block by block, so a file larger than memory is fine."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import IO, Any

from plinth.data.schemas import Column, Table

log = logging.getLogger("plinth.data")
SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def format_of(path: str) -> str | None:
    """The tabular format a file's name says it has, or None."""
    name = path.rsplit("/", 1)[-1].lower()
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def read_table(path: str, opener: Callable[[], IO[bytes]]) -> Table | None:
    """The table in a file whose name says it is tabular; None for any other file, and
    (with a warning) for one pyarrow cannot read as its name says."""
    fmt = format_of(path)
    if fmt is None:
        return None
    import pyarrow as pa

    try:
        with opener() as f:
            rows, schema = _READERS[fmt](f)
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("%s: not readable as %s, kept without a schema: %s", path, fmt, first)
        return None
    return Table.model_validate({"format": fmt, "rows": rows, "columns": columns_of(schema)})


def columns_of(schema: Any) -> list[Column]:
    return [Column(name=f.name, type=str(f.type), nullable=f.nullable) for f in schema]


def _parquet(f: IO[bytes]) -> tuple[int, Any]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(f)
    return meta.metadata.num_rows, meta.schema_arrow


def _csv(f: IO[bytes]) -> tuple[int, Any]:
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(f)
    return sum(batch.num_rows for batch in reader), reader.schema


def _jsonl(f: IO[bytes]) -> tuple[int, Any]:
    import pyarrow.json as pjson

    reader = pjson.open_json(f)
    return sum(batch.num_rows for batch in reader), reader.schema


_READERS: dict[str, Callable[[IO[bytes]], tuple[int, Any]]] = {
    "parquet": _parquet,
    "csv": _csv,
    "jsonl": _jsonl,
}
