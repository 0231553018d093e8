"""The metadata database: one engine, and every SQLite/Postgres difference in one place.

SQLite runs in WAL mode with a busy timeout and ``synchronous=FULL`` (a commit is on
disk before it returns). Writers open their transaction with ``BEGIN IMMEDIATE`` so two
processes never both hold a read snapshot they then try to upgrade: SQLite would fail
one of them at once with "database is locked", whatever the busy timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from plinth.errors import InvalidInput, MissingDependency

BUSY_TIMEOUT_S = 60.0
metadata = sa.MetaData()  # every capability's tables; the migrations must produce them all
_LOCKED_RETRIES = 20


def _normalize_url(url: str) -> str:
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        return url
    if url.startswith("postgresql+"):
        return url
    raise InvalidInput("database URL must be sqlite:///PATH or postgresql://…")


class Database:
    """An engine plus the two transaction kinds the services use: read and write."""

    def __init__(self, url: str, *, synchronous: str = "FULL") -> None:
        self.url = _normalize_url(url)
        self.engine = self._create_engine(synchronous)
        self.dialect = self.engine.dialect.name

    def _create_engine(self, synchronous: str) -> Engine:
        if self.url.startswith("sqlite"):
            path = sa.engine.make_url(self.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(
                self.url,
                connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
                pool_size=8,
                max_overflow=16,
            )
            _configure_sqlite(engine, synchronous)
            return engine
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise MissingDependency("psycopg", "postgres") from exc
        return sa.create_engine(self.url, pool_size=8, max_overflow=16, pool_pre_ping=True)

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write; commits on exit, rolls back on error."""
        with self._connect(write=True) as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self._connect(write=False) as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[Connection]:
        conn = self.engine.connect()
        try:
            if self.dialect == "sqlite":
                conn = conn.execution_options(plinth_write=write)
            yield conn
        finally:
            conn.close()

    def ping(self) -> None:
        """Raise unless the database answers a trivial query (for readiness)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def insert_ignoring_duplicates(self, table: sa.Table) -> Any:
        """INSERT that skips rows whose primary key already exists."""
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()

    def bulk_insert(self, conn: Connection, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        """Insert many rows given as tuples in column order, as one executemany.

        SQLAlchemy's ``insert()`` with dicts costs twice as much per row, which matters
        on the metric hot path.
        """
        quote = self.engine.dialect.identifier_preparer.quote
        marker = "?" if self.dialect == "sqlite" else "%s"
        columns = ", ".join(quote(c.name) for c in table.columns)
        markers = ", ".join([marker] * len(table.columns))
        conn.exec_driver_sql(
            f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({markers})", rows
        )

    def upsert(
        self, table: sa.Table, keys: Sequence[str], update: Sequence[str], where: Any = None
    ) -> Any:
        """INSERT … ON CONFLICT (keys) DO UPDATE SET update-columns [WHERE where]."""
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt: Any = sqlite_insert(table)
        else:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c: stmt.excluded[c] for c in update},
            where=where(stmt.excluded) if where is not None else None,
        )

    def migrate(self) -> None:
        """Bring the schema to the newest revision, once, even with many processes."""
        from plinth.core import migrations

        if migrations.current_revision(self.engine) == migrations.HEAD:
            return
        with self._migration_lock():
            migrations.upgrade(self.engine)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.dialect == "sqlite":
            path = sa.engine.make_url(self.url).database
            if not path or path == ":memory:":
                yield
                return
            with open(f"{path}.migrate-lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield
            return
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(7265746)"))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(7265746)"))
                conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        _retry_locked(lambda: cur.execute("PRAGMA journal_mode=WAL"))
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA case_sensitive_like=ON")  # LIKE as on Postgres
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("plinth_write", True)
        stmt = "BEGIN IMMEDIATE" if write else "BEGIN"
        _retry_locked(lambda: conn.exec_driver_sql(stmt))


def _retry_locked(fn: Any) -> Any:
    """Retry what SQLite refuses with "database is locked" despite the busy timeout.

    The busy handler does not cover every path (switching to WAL, a checkpoint racing
    a new writer), so these few calls get a short back-off of their own.
    """
    for attempt in range(_LOCKED_RETRIES):
        try:
            return fn()
        except Exception as exc:  # sqlite3.OperationalError, possibly wrapped
            if "locked" not in str(exc) or attempt == _LOCKED_RETRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None
