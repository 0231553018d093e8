"""What a tabular file holds (format, rows, Arrow schema) and its profile, read with
pyarrow where the data is: on the machine that pushes it. Every format is streamed
once, batch by batch, so a file larger than memory is fine; without a profile a
Parquet file answers from its footer alone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from plinth.data.profile import Profiler
from plinth.data.rules import Validator
from plinth.data.schemas import Column, Profile, RuleResult, Table

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


@dataclass
class Read:
    """What reading a file found: its table, its profile, its rules' results."""

    table: Table | None = None
    profile: Profile | None = None
    results: list[RuleResult] = field(default_factory=list)


def read_table(
    path: str,
    opener: Callable[[], IO[bytes]],
    profile: bool = True,
    validator: Validator | None = None,
) -> Read:
    """The table in a file whose name says it is tabular, with its profile (when
    asked) and its rules' results (with a validator), all in one pass. Nothing for
    any other file; for one pyarrow cannot read as its name says, a warning (and a
    failing result when rules would have read it)."""
    fmt = format_of(path)
    if fmt is None:
        return Read()
    import pyarrow as pa

    try:
        with opener() as f:
            schema, batches, rows = _READERS[fmt](f)
            profiler = Profiler(schema) if profile else None
            checker = validator.for_file(path, schema) if validator is not None else None
            readers: list[Any] = [r for r in (profiler, checker) if r is not None]
            counted = 0
            if readers or rows is None:
                for batch in batches:
                    counted += batch.num_rows
                    for reader in readers:
                        reader.add(batch)
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("%s: not readable as %s, kept without a schema: %s", path, fmt, first)
        why = f"not readable as {fmt}: {first}"
        return Read(results=validator.unreadable(path, why) if validator is not None else [])
    table = Table.model_validate(
        {"format": fmt, "rows": counted if rows is None else rows, "columns": columns_of(schema)}
    )
    return Read(
        table,
        profiler.result() if profiler is not None else None,
        checker.results() if checker is not None else [],
    )


def columns_of(schema: Any) -> list[Column]:
    return [Column(name=f.name, type=str(f.type), nullable=f.nullable) for f in schema]


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
