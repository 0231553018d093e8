"""What a tabular file holds (format, rows, Arrow schema) and its profile, read with
pyarrow where the data is: on the machine that pushes it. Every format is streamed
once, batch by batch, so a file larger than memory is fine; without a profile a
Parquet file answers from its footer alone."""

from __future__ import annotations

import logging
import re
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
    failing result when rules would have read it).

    A CSV column's type is inferred from the file's first block (1 MiB); a later value
    that type cannot hold (text after 2 MB of integers) widens it, and the file is read
    again from its start, so the schema, the profile and the rules all see one type."""
    fmt = format_of(path)
    if fmt is None:
        return Read()
    import pyarrow as pa

    wider: dict[str, Any] = {}  # CSV columns read as wider than their first block says
    try:
        while True:
            try:
                return _read(path, fmt, opener, profile, validator, wider)
            except _Widened:
                continue
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("%s: not readable as %s, kept without a schema: %s", path, fmt, first)
        why = f"not readable as {fmt}: {first}"
        return Read(results=validator.unreadable(path, why) if validator is not None else [])


class _Widened(Exception):
    """A CSV column's type was widened: read the file again from its start."""


def _read(
    path: str,
    fmt: str,
    opener: Callable[[], IO[bytes]],
    profile: bool,
    validator: Validator | None,
    wider: dict[str, Any],
) -> Read:
    import pyarrow as pa

    with opener() as f:
        schema, batches, rows = _READERS[fmt](f, wider)
        profiler = Profiler(schema) if profile else None
        checker = validator.for_file(path, schema) if validator is not None else None
        readers: list[Any] = [r for r in (profiler, checker) if r is not None]
        counted = 0
        if readers or rows is None:
            try:
                for batch in batches:
                    counted += batch.num_rows
                    for reader in readers:
                        reader.add(batch)
            except pa.ArrowInvalid as exc:
                if fmt == "csv" and _widen(path, str(exc), schema, wider):
                    raise _Widened from exc
                raise
    table = Table.model_validate(
        {"format": fmt, "rows": counted if rows is None else rows, "columns": columns_of(schema)}
    )
    return Read(
        table,
        profiler.result() if profiler is not None else None,
        checker.results() if checker is not None else [],
    )


_CONVERSION = re.compile(r"^In CSV column #(\d+):.*CSV conversion error to ")


def _widen(path: str, error: str, schema: Any, wider: dict[str, Any]) -> bool:
    """Widen the type of the CSV column a conversion ``error`` names, one step (no
    values → integers → floats → text; anything else → text). False when it cannot."""
    import pyarrow as pa

    found = _CONVERSION.match(error)
    if found is None or int(found.group(1)) >= len(schema):
        return False
    field = schema.field(int(found.group(1)))
    was = field.type
    if pa.types.is_null(was):
        to = pa.int64()
    elif pa.types.is_integer(was):
        to = pa.float64()
    elif pa.types.is_string(was) or pa.types.is_large_string(was):
        return False  # nothing wider to read it as (bytes that are not UTF-8)
    else:
        to = pa.string()
    if wider.get(field.name) == to:
        return False
    log.info(
        "%s: column %r read again as %s (not %s): a later value needs it", path, field.name, to, was
    )
    wider[field.name] = to
    return True


def columns_of(schema: Any) -> list[Column]:
    return [Column(name=f.name, type=str(f.type), nullable=f.nullable) for f in schema]


Reader = Callable[[IO[bytes], dict[str, Any]], tuple[Any, Iterable[Any], int | None]]


def _parquet(f: IO[bytes], wider: dict[str, Any]) -> tuple[Any, Iterable[Any], int | None]:
    """Its schema, its batches (read only if walked), and its rows from the footer."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(f)
    return meta.schema_arrow, meta.iter_batches(batch_size=BATCH_ROWS), meta.metadata.num_rows


def _csv(f: IO[bytes], wider: dict[str, Any]) -> tuple[Any, Iterable[Any], int | None]:
    """Types inferred from the first block, but for the columns ``wider`` names."""
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(f, convert_options=pcsv.ConvertOptions(column_types=wider))
    return reader.schema, reader, None


def _jsonl(f: IO[bytes], wider: dict[str, Any]) -> tuple[Any, Iterable[Any], int | None]:
    import pyarrow.json as pjson

    reader = pjson.open_json(f)
    return reader.schema, reader, None


_READERS: dict[str, Reader] = {"parquet": _parquet, "csv": _csv, "jsonl": _jsonl}
