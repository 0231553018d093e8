"""One suite every database dialect passes: the statements whose SQL differs between
SQLite and Postgres (``core/db.py``'s ``Dialect``) behave the same on both."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from plinth.core.db import Database
from tests import services

rows = sa.Table(
    "contract_rows",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("value", sa.Float),
    sa.Column("state", sa.String(16), nullable=False),
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'contract.db'}")
        rows.create(database.engine)
        yield database
        database.dispose()
        return
    with services.postgres_database(request.getfixturevalue("postgres_server_url")) as url:
        database = Database(url)
        rows.create(database.engine)
        yield database
        database.dispose()


def _all(db: Database) -> list[tuple[int, float | None, str]]:
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(sa.select(rows).order_by(rows.c.id))]  # type: ignore[misc]


def test_insert_ignoring_duplicates_keeps_the_first(db: Database) -> None:
    with db.write() as conn:
        conn.execute(db.insert_ignoring_duplicates(rows), {"id": 1, "value": 1.0, "state": "a"})
        conn.execute(db.insert_ignoring_duplicates(rows), {"id": 1, "value": 2.0, "state": "b"})
    assert _all(db) == [(1, 1.0, "a")]


def test_upsert_updates_only_where_the_condition_holds(db: Database) -> None:
    stmt = db.upsert(rows, ["id"], ["value", "state"], where=lambda new: new.value > rows.c.value)
    with db.write() as conn:
        conn.execute(stmt, [{"id": 1, "value": 5.0, "state": "first"}])
        conn.execute(stmt, [{"id": 1, "value": 3.0, "state": "lower"}])  # not newer: kept
        conn.execute(stmt, [{"id": 1, "value": 9.0, "state": "higher"}])
    assert _all(db) == [(1, 9.0, "higher")]


def _insert_many(db: Database, values: list[tuple[int, float | None, str]]) -> None:
    insert = db.prepare(rows.insert())
    with db.write() as conn:
        insert.run_many(conn, [dict(zip(("id", "value", "state"), v, strict=True)) for v in values])


def test_prepared_statements_run_on_the_driver_in_either_paramstyle(db: Database) -> None:
    _insert_many(db, [(i, i / 2, "new") for i in range(500)])
    assert len(_all(db)) == 500 and _all(db)[3] == (3, 1.5, "new")
    one = db.prepare(sa.select(rows.c.value).where(rows.c.id == sa.bindparam("id")))
    with db.read() as conn:
        assert one.run(conn, {"id": 3}) == [(1.5,)]


def test_a_rollback_leaves_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute(rows.insert(), {"id": 1, "value": None, "state": "gone"})
        raise RuntimeError
    assert _all(db) == []


def test_claiming_rows_never_hands_one_row_to_two_workers(db: Database) -> None:
    """The pattern a work queue uses: each worker claims what others have not."""
    _insert_many(db, [(i, None, "queued") for i in range(40)])
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        mine = []
        while True:
            with db.write() as conn:
                pick = db.sql.lock_rows(
                    sa.select(rows.c.id).where(rows.c.state == "queued").limit(3),
                    skip_locked=True,
                )
                ids = list(conn.execute(pick).scalars())
                if not ids:
                    break
                conn.execute(rows.update().where(rows.c.id.in_(ids)).values(state="taken"))
                mine += ids
        claimed.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = sorted(i for ids in claimed for i in ids)
    assert everything == list(range(40))  # each row once, none twice, none lost


def test_each_dialect_reads_what_its_errors_say_of_the_database(tmp_path: Path) -> None:
    """Full (507), down (503), or a bug (500): read from real driver errors."""
    import sqlite3

    import psycopg

    from plinth.core.db import database_fault

    assert database_fault(sqlite3.OperationalError("database or disk is full")) == "full"
    assert database_fault(sqlite3.OperationalError("disk I/O error")) == "down"
    broken = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(sa.exc.OperationalError) as bad_sql, broken.read() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    assert database_fault(bad_sql.value) is None  # bad SQL is a bug, not an outage
    broken.dispose()
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{services.free_port()}/x", connect_timeout=5
        )
    assert database_fault(refused.value) == "down"


def test_a_read_only_database_is_down(db: Database, tmp_path: Path) -> None:
    """A database that takes no writes (an SQLite file opened read-only, a Postgres
    standby or a primary demoted in a fail-over): down (503), never a bug (500), read
    through SQLAlchemy's wrapper as through the driver's own error."""
    from plinth.core.db import database_fault

    if db.dialect == "sqlite":
        url = f"sqlite:///file:{tmp_path / 'contract.db'}?mode=ro&uri=true"
        read_only = Database(url)
    else:
        read_only = Database(db.url)

        @sa.event.listens_for(read_only.engine, "connect")
        def _standby(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute("SET default_transaction_read_only = on")
            dbapi_conn.commit()

    try:
        with pytest.raises(sa.exc.DBAPIError) as refused, read_only.write() as conn:
            conn.execute(rows.insert().values(id=1, value=1.0, state="new"))
    finally:
        read_only.dispose()
    assert database_fault(refused.value) == database_fault(refused.value.orig) == "down"
    assert _all(db) == []
