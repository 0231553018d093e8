"""The migration tree, the tables it must produce, and SQLite's concurrency settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from plinth.capabilities import load_tables
from plinth.core import migrations
from plinth.core.db import Database, metadata

load_tables()  # the kernel's and every capability's, on the one metadata


def test_head_constant_matches_the_tree() -> None:
    engine = sa.create_engine("sqlite://")
    script = ScriptDirectory.from_config(migrations.alembic_config(engine))
    assert script.get_current_head() == migrations.HEAD


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    from tests import services

    ctx = services.postgres_database(request.getfixturevalue("postgres_server_url"))
    url = ctx.__enter__()
    request.addfinalizer(lambda: ctx.__exit__(None, None, None))
    db = Database(url)
    request.addfinalizer(db.dispose)
    return db


def test_migrations_produce_exactly_the_declared_tables(database: Database) -> None:
    database.migrate()
    assert migrations.current_revision(database.engine) == migrations.HEAD
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    database.migrate()  # a second call is a no-op


def test_sqlite_is_in_wal_mode_with_durable_commits(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_write_transactions_roll_back_on_error(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    from plinth.tracking import tables as t

    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute(t.projects.insert(), {"id": "a" * 32, "name": "x", "created_at": 1.0})
        raise RuntimeError
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.projects)).scalar() == 0


def test_a_write_lock_held_past_the_busy_timeout_is_an_outage_not_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding SQLite's write lock longer than the busy timeout: the
    write fails as the database down (a 503), after about that timeout, not after
    twenty of them."""
    import sqlite3
    import time

    from plinth.core import db as dbmod

    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_S", 0.3)
    path = tmp_path / "db.sqlite"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held
    try:
        start = time.monotonic()
        with (
            pytest.raises((sa.exc.OperationalError, sqlite3.OperationalError)) as locked,
            db.write(),
        ):
            pass
        waited = time.monotonic() - start
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        db.dispose()
    assert dbmod.database_fault(locked.value) == "down"
    assert waited < 3, waited


def test_unsupported_database_url_is_refused() -> None:
    import plinth

    with pytest.raises(plinth.InvalidInput):
        Database("mysql://root@localhost/db")


def test_metric_rows_become_history_chunks_on_upgrade(database: Database) -> None:
    """0013 packs each metric's rows into chunks in step, then time, order; NULL was NaN."""
    from plinth.tracking import history

    script = ScriptDirectory.from_config(migrations.alembic_config(database.engine))
    before = script.get_revision("0013").down_revision
    assert isinstance(before, str)
    migrations.upgrade(database.engine, before)
    points = [(i, 1000.0 + i, i / 2) for i in range(12_000)]
    points[5] = (5, 1005.0, None)  # NaN, as the rows stored it
    points += [(7, 999.0, -1.0)]  # a second point at step 7, earlier than the first
    with database.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO projects (id, name, created_at) VALUES ('p1', 'p', 0)"))
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, project_id, name, status, start_time, heartbeat_at) "
                "VALUES ('r1', 'p1', 'r', 'finished', 0, 0)"
            )
        )
        conn.execute(
            sa.text(
                'INSERT INTO metrics (run_id, "key", step, "timestamp", "value") '
                "VALUES ('r1', :key, :step, :ts, :value)"
            ),
            [{"key": "loss", "step": s, "ts": ts, "value": v} for s, ts, v in points]
            + [{"key": "acc", "step": 0, "ts": 1.0, "value": 0.5}],
        )
    database.migrate()
    with database.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("metrics")
        rows = conn.execute(
            sa.text(
                'SELECT count, steps, timestamps, "values" FROM metric_chunks '
                "WHERE run_id = 'r1' AND \"key\" = 'loss' ORDER BY id"
            )
        ).all()
    assert [r[0] for r in rows] == [10_000, 2_001]
    columns = history.from_chunks((bytes(r[1]), bytes(r[2]), bytes(r[3])) for r in rows)
    expected = sorted(points, key=lambda p: (p[0], p[1]))
    assert list(columns.steps) == [p[0] for p in expected]
    assert list(columns.timestamps) == [p[1] for p in expected]
    values = list(columns.values)
    assert values[5] != values[5]  # NaN
    assert values[:5] + values[6:] == [p[2] for p in expected[:5] + expected[6:]]


def test_search_scope_migration_copies_each_run_project(database: Database) -> None:
    """0012 fills the project_id it adds to params, tags and latest_metrics from runs."""
    migrations.upgrade(database.engine, "0011")
    rows = {
        "projects": [("pa", "a", 1.0), ("pb", "b", 1.0)],
        "runs": [
            ("r1", "pa", "one", "running", 1.0, 1.0),
            ("r2", "pb", "two", "running", 1.0, 1.0),
        ],
        "params": [("r1", "lr", "0.1", 0.1), ("r2", "lr", "0.2", 0.2), ("r2", "opt", '"x"', None)],
        "tags": [("r1", "team", "a", None), ("r2", "team", "b", None)],
        "latest_metrics": [("r1", "acc", 0, 1.0, 0.5), ("r2", "acc", 3, 2.0, None)],
    }
    columns = {
        "projects": "id, name, created_at",
        "runs": "id, project_id, name, status, start_time, heartbeat_at",
        "params": "run_id, key, value, number",
        "tags": "run_id, key, value, number",
        "latest_metrics": "run_id, key, step, timestamp, value",
    }
    with database.engine.begin() as conn:
        for table, values in rows.items():
            marks = ", ".join(f":c{i}" for i in range(len(values[0])))
            insert = sa.text(f"INSERT INTO {table} ({columns[table]}) VALUES ({marks})")
            conn.execute(insert, [{f"c{i}": v for i, v in enumerate(row)} for row in values])
    database.migrate()
    owner = {"r1": "pa", "r2": "pb"}
    with database.engine.connect() as conn:
        for table in ("params", "tags", "latest_metrics"):
            found = conn.execute(sa.text(f"SELECT run_id, key, project_id FROM {table}")).all()
            assert sorted(found) == sorted((r[0], r[1], owner[r[0]]) for r in rows[table])


def test_a_postgres_that_takes_the_connection_but_never_answers_is_down_in_seconds() -> None:
    """A hung server (or one whose host is gone behind a live listener) must not hold a
    request forever: a new connection gives up after the connect timeout, and the
    error reads as the database being down (503 to the caller)."""
    import socket
    import time

    from plinth.core.db import PG_CONNECT_TIMEOUT_S, database_fault

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections; nobody ever answers them
        port = silent.getsockname()[1]
        db = Database(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        began = time.monotonic()
        with pytest.raises(Exception) as refused, db.read() as conn:
            conn.execute(sa.text("SELECT 1"))
        assert time.monotonic() - began < PG_CONNECT_TIMEOUT_S + 5
        assert database_fault(refused.value) == "down"
        db.engine.dispose()
