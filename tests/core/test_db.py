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


def test_unsupported_database_url_is_refused() -> None:
    import plinth

    with pytest.raises(plinth.InvalidInput):
        Database("mysql://root@localhost/db")
