"""Many runs from one, in SQL: the set-up of the large search benchmarks.

One run made through the SDK (Plinth's or MLflow's) is copied ``count`` times, row for
row in every table that names it, by one ``INSERT … SELECT`` per table from a temporary
table of new ids and values (``generate_series`` on Postgres, a recursive CTE on
SQLite): a million runs take seconds to a minute, where the SDK would take hours.
Each copy gets its own id, name and start time, a metric ``acc`` uniform in [0, 1) and
a param ``lr`` of 0.1 or 0.01, half each.

Imported by ``tracking.py`` (Plinth's virtualenv) and ``mlflow_worker.py`` (MLflow's):
only the standard library at import; SQLAlchemy, which both have, when called.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Schema:
    """Where a run lives in one tracking store's tables, and what each copy changes.

    Values are SQL over ``t`` (the template's row) and ``c`` (the copy: ``id``, ``n``
    from 1, ``acc``, ``lr``)."""

    runs: str
    id: str  # the runs table's key
    ref: str  # the column other tables name a run by
    run_values: dict[str, str]
    values: dict[tuple[str, str], str] = field(default_factory=dict)


_ACC = "CASE WHEN t.key = 'acc' THEN c.acc ELSE t.value END"
_LR_TEXT = (
    "CASE WHEN t.key = 'lr' THEN (CASE WHEN c.lr > 0.05 THEN '0.1' ELSE '0.01' END) "
    "ELSE t.value END"
)

PLINTH = Schema(
    runs="runs",
    id="id",
    ref="run_id",
    run_values={
        "name": "'run-' || substr(c.id, 1, 8)",
        "status": "'finished'",
        "start_time": "t.start_time + c.n * 0.001",
        "end_time": "t.start_time + c.n * 0.001 + 1",
        "heartbeat_at": "t.start_time + c.n * 0.001 + 1",
    },
    values={
        ("params", "value"): _LR_TEXT,  # JSON: 0.1 is written 0.1
        ("params", "number"): "CASE WHEN t.key = 'lr' THEN c.lr ELSE t.number END",
        ("latest_metrics", "value"): _ACC,  # metric_chunks: the template's history
    },
)

MLFLOW = Schema(
    runs="runs",
    id="run_uuid",
    ref="run_uuid",
    run_values={
        "name": "'run-' || substr(c.id, 1, 8)",
        "status": "'FINISHED'",
        "start_time": "t.start_time + c.n",
        "end_time": "t.start_time + c.n + 1000",
    },
    values={
        ("params", "value"): _LR_TEXT,  # MLflow keeps params as text
        ("latest_metrics", "value"): _ACC,
        ("metrics", "value"): _ACC,
    },
)

_SQLITE_CLONES = """
CREATE TEMP TABLE clones AS
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :count)
SELECT lower(hex(randomblob(16))) AS id, n,
       random() / 18446744073709551616.0 + 0.5 AS acc,
       CASE WHEN random() % 2 = 0 THEN 0.1 ELSE 0.01 END AS lr
FROM s
"""
_POSTGRES_CLONES = """
CREATE TEMP TABLE clones AS
SELECT md5(random()::text || n::text) AS id, n, random() AS acc,
       (CASE WHEN random() < 0.5 THEN 0.1 ELSE 0.01 END)::float8 AS lr
FROM generate_series(1, :count) AS n
"""


def clone_runs(url: str, schema: Schema, template: str, count: int) -> float:
    """Copy run ``template`` ``count`` times in the database at ``url`` (a SQLAlchemy
    URL); seconds taken. On Postgres the tables are then vacuumed and analysed, as
    autovacuum would do after such a load."""
    import sqlalchemy as sa

    started = time.perf_counter()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            make = _POSTGRES_CLONES if postgres else _SQLITE_CLONES
            conn.execute(sa.text(make), {"count": count})
            inspector = sa.inspect(conn)
            tables = [
                name
                for name in inspector.get_table_names()
                if name != schema.runs
                and schema.ref in {c["name"] for c in inspector.get_columns(name)}
            ]
            _copy(conn, schema, schema.runs, schema.id, schema.run_values, inspector, template)
            for name in tables:
                values = {col: sql for (tab, col), sql in schema.values.items() if tab == name}
                _copy(conn, schema, name, schema.ref, values, inspector, template)
            conn.execute(sa.text("DROP TABLE clones"))
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
    finally:
        engine.dispose()
    return time.perf_counter() - started


def _copy(
    conn: Any,
    schema: Schema,
    table: str,
    key: str,
    values: dict[str, str],
    inspector: Any,
    template: str,
) -> None:
    import sqlalchemy as sa

    # A surrogate key (Plinth's metric_chunks.id) is the database's to number.
    surrogate = inspector.get_pk_constraint(table)["constrained_columns"] == ["id"]
    columns = [
        c["name"]
        for c in inspector.get_columns(table)
        if not (surrogate and c["name"] == "id" and key != "id")
    ]
    exprs = ["c.id" if col == key else values.get(col, f't."{col}"') for col in columns]
    names = ", ".join(f'"{col}"' for col in columns)
    conn.execute(
        sa.text(
            f'INSERT INTO "{table}" ({names}) SELECT {", ".join(exprs)} '
            f'FROM "{table}" AS t CROSS JOIN clones AS c WHERE t."{key}" = :template '
            "ORDER BY c.id"  # random ids, inserted in order: each index page is written once
        ),
        {"template": template},
    )


@contextmanager
def postgres_database(server_url: str, prefix: str) -> Iterator[str]:
    """A fresh database on the Postgres server at ``server_url`` (a SQLAlchemy URL of
    any database there), dropped on exit; yields its URL."""
    import sqlalchemy as sa

    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield (
                sa.engine.make_url(server_url)
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
