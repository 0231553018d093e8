"""What a tabular file holds (format, rows, Arrow schema) and its profile, read with
pyarrow where the data is: on the machine that pushes it. Every format is streamed
once, batch by batch, so a file larger than memory is fine; without a profile a
Parquet file answers from its footer alone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from plinth.data.profile import profile_batches
from plinth.data.schemas import Column, Profile, Table

log = logging.getLogger("plinth.data")
BATCH_ROWS = 65_536  # rows read at once from Parquet: memory stays bounded
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


def read_table(
    path: str, opener: Callable[[], IO[bytes]], profile: bool = True
) -> tuple[Table | None, Profile | None]:
    """The table in a file whose name says it is tabular, and with ``profile`` its
    profile, in one pass; (None, None) for any other file, and (with a warning) for
    one pyarrow cannot read as its name says."""
    fmt = format_of(path)
    if fmt is None:
        return None, None
    import pyarrow as pa

    try:
        with opener() as f:
            schema, batches, rows = _READERS[fmt](f)
            counted = _Counted(batches)
            found = profile_batches(schema, counted) if profile else None
            if found is None:
                counted.drain(rows is None)
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("%s: not readable as %s, kept without a schema: %s", path, fmt, first)
        return None, None
    table = Table.model_validate(
        {
            "format": fmt,
            "rows": counted.rows if rows is None else rows,
            "columns": columns_of(schema),
        }
    )
    return table, found


def columns_of(schema: Any) -> list[Column]:
    return [Column(name=f.name, type=str(f.type), nullable=f.nullable) for f in schema]


class _Counted:
    """Record batches passed through, their rows counted."""

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches = batches
        self.rows = 0

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            self.rows += batch.num_rows
            yield batch

    def drain(self, needed: bool) -> None:
        if needed:
            for _ in self:
                pass


Reader = Callable[[IO[bytes]], tuple[Any, Iterable[Any], int | None]]


def _parquet(f: IO[bytes]) -> tuple[Any, Iterable[Any], int | None]:
    """Its schema, its batches (read only if walked), and its rows from the footer."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(f)
    return meta.schema_arrow, meta.iter_batches(batch_size=BATCH_ROWS), meta.metadata.num_rows


def _csv(f: IO[bytes]) -> tuple[Any, Iterable[Any], int | None]:
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(f)
    return reader.schema, reader, None


def _jsonl(f: IO[bytes]) -> tuple[Any, Iterable[Any], int | None]:
    import pyarrow.json as pjson

    reader = pjson.open_json(f)
    return reader.schema, reader, None


_READERS: dict[str, Reader] = {"parquet": _parquet, "csv": _csv, "jsonl": _jsonl}
