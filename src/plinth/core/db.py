"""The metadata database: one engine, and every SQLite/Postgres difference in one place.

SQLite runs in WAL mode with a busy timeout and ``synchronous=FULL`` (a commit is on
disk before it returns). Writers open their transaction with ``BEGIN IMMEDIATE`` so two
processes never both hold a read snapshot they then try to upgrade: SQLite would fail
one of them at once with "database is locked", whatever the busy timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from plinth.errors import InvalidInput, MissingDependency, ServiceUnavailable

BUSY_TIMEOUT_S = 60.0
Fault = Literal["full", "down"]
_SQLITE_FULL = "database or disk is full"
_SQLITE_UNAVAILABLE = (
    "disk i/o error",
    "unable to open database",
    "database is locked",
    "readonly database",  # its file, or the file system, made read-only
)
_PG_DISK_FULL = "53100"
# SQLSTATEs of a server that cannot serve now: a read-only transaction (a standby, or a
# primary demoted in a fail-over), and the classes of connection exceptions, of
# insufficient resources and of operator intervention (a shutdown, a restart)
_PG_UNAVAILABLE = ("25006", "08", "53", "57P")
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


class Dialect:
    """What differs between SQLite and Postgres, and nothing else: the SQL itself is
    written once, in ``Database`` and the services."""

    name = ""

    def create_engine(self, url: str, synchronous: str) -> Engine:
        raise NotImplementedError

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ON CONFLICT clauses."""
        raise NotImplementedError

    def connection_options(self, *, write: bool) -> dict[str, Any]:
        return {}

    def lock_rows(self, stmt: Any, *, skip_locked: bool = False) -> Any:
        """``SELECT … FOR UPDATE [SKIP LOCKED]``: claim rows for this transaction
        (a work queue claims with ``skip_locked``)."""
        return stmt.with_for_update(skip_locked=skip_locked)

    @contextlib.contextmanager
    def migration_lock(self, engine: Engine, url: str) -> Iterator[None]:
        raise NotImplementedError
        yield

    @staticmethod
    def fault(exc: BaseException) -> Fault | None:
        """What a driver error says of the database itself: full, down, or nothing
        (then it is a bug, or bad SQL)."""
        return None

    def ping(self, conn: Connection) -> None:
        conn.exec_driver_sql("SELECT 1")


class SQLiteDialect(Dialect):
    name = "sqlite"

    @staticmethod
    def fault(exc: BaseException) -> Fault | None:
        if not isinstance(exc, sqlite3.Error):  # its OperationalError also means bad SQL
            return None
        text = str(exc).lower()
        if _SQLITE_FULL in text:
            return "full"
        return "down" if any(words in text for words in _SQLITE_UNAVAILABLE) else None

    def create_engine(self, url: str, synchronous: str) -> Engine:
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=8,
            max_overflow=16,
            # the connection used last is used next: its page cache is the warm one (a
            # connection that sat out other commits reads their pages again)
            pool_use_lifo=True,
        )
        _configure_sqlite(engine, synchronous)
        return engine

    def insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    def connection_options(self, *, write: bool) -> dict[str, Any]:
        return {"plinth_write": write}  # read by the "begin" listener: BEGIN IMMEDIATE or not

    def lock_rows(self, stmt: Any, *, skip_locked: bool = False) -> Any:
        # A write transaction already holds the one writer lock (BEGIN IMMEDIATE), so
        # no other writer can claim the same rows meanwhile.
        return stmt

    @contextlib.contextmanager
    def migration_lock(self, engine: Engine, url: str) -> Iterator[None]:
        path = sa.engine.make_url(url).database
        if not path or path == ":memory:":
            yield
            return
        with open(f"{path}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


PG_CONNECT_TIMEOUT_S = 5


class PostgresDialect(Dialect):
    name = "postgresql"

    @staticmethod
    def fault(exc: BaseException) -> Fault | None:
        state = getattr(exc, "sqlstate", None) or ""
        if state == _PG_DISK_FULL:
            return "full"
        psycopg = sys.modules.get("psycopg")  # loaded if, and only if, Postgres is used
        down = psycopg is not None and isinstance(
            exc, psycopg.OperationalError | psycopg.InterfaceError
        )
        return "down" if down or state.startswith(_PG_UNAVAILABLE) else None

    def ping(self, conn: Connection) -> None:
        """A standby, or a primary demoted in a fail-over, answers but takes no writes."""
        if conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on":
            raise ServiceUnavailable("the database takes no writes (a standby, or read-only)")

    def create_engine(self, url: str, synchronous: str) -> Engine:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise MissingDependency("psycopg", "postgres") from exc
        # A server that takes the connection but never answers (hung, or its host gone)
        # fails a new connection in seconds, and a host gone fails an idle one too, so
        # requests answer 503 rather than wait for it.
        return sa.create_engine(
            url,
            pool_size=8,
            max_overflow=16,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": PG_CONNECT_TIMEOUT_S,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "tcp_user_timeout": 30_000,  # ms that sent data may go unacknowledged
            },
        )

    def insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    @contextlib.contextmanager
    def migration_lock(self, engine: Engine, url: str) -> Iterator[None]:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(7265746)"))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(7265746)"))
                conn.commit()


def _is_required(value: Any) -> bool:
    from sqlalchemy.sql.crud import REQUIRED

    return value is REQUIRED


class Prepared:
    """A statement compiled once for one database and run on the driver's own cursor.

    SQLAlchemy's execution layer costs some 45 µs a statement here, ten times SQLite's
    own work on a small write; the statements every run makes (its audit record, its
    batch, its end) go this way. Raw driver errors reach the error table as they are
    (``database_fault`` reads either dialect's), and the transaction is the caller's,
    begun and committed by SQLAlchemy as ever. Only plain bound values: no expanding
    ``IN``, no type processing beyond the driver's.
    """

    def __init__(self, db: Database, stmt: Any, keys: Sequence[str] | None = None) -> None:
        compiled = stmt.compile(dialect=db.engine.dialect, column_keys=keys)
        self.sql = str(compiled)
        self.defaults = dict(compiled.params)  # values SQLAlchemy made into binds
        self.order = compiled.positiontup  # positional paramstyle: the values' order
        # binds with no value of their own: a call must give each (a missing one would
        # reach the driver as SQLAlchemy's placeholder object, stored as garbage)
        self.required = frozenset(k for k, v in self.defaults.items() if _is_required(v))

    def _args(self, params: dict[str, Any]) -> Any:
        if not self.required <= params.keys():
            missing = ", ".join(sorted(self.required - params.keys()))
            raise TypeError(f"no value for {missing} in {self.sql[:80]!r}")
        merged = {**self.defaults, **params}
        return merged if self.order is None else tuple(merged[k] for k in self.order)

    def run(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        """Execute once; the rows it returns (RETURNING, SELECT), else []."""
        cursor = conn.connection.cursor()
        try:
            cursor.execute(self.sql, self._args(params))
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def run_many(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(self.sql, [self._args(row) for row in rows])
        finally:
            cursor.close()


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps, outermost first: drivers and libraries wrap what
    failed (SQLAlchemy the DB-API error, s3fs a botocore one, botocore aiohttp's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, sa.exc.DBAPIError) and isinstance(current.orig, BaseException):
            yield current.orig
        suppressed = current.__suppress_context__
        current = current.__cause__ or (None if suppressed else current.__context__)


def database_fault(exc: BaseException) -> Fault | None:
    """A driver's or SQLAlchemy's error, or one it caused, read as the state of the
    database: ``full`` (507 to the caller), ``down`` (503), or None. Either dialect's
    errors are read: which one failed is in the exception, not in a setting."""
    found = [_fault(cause) for cause in causes(exc)]
    return "full" if "full" in found else "down" if "down" in found else None


def _fault(exc: BaseException) -> Fault | None:
    for dialect in (SQLiteDialect, PostgresDialect):
        found = dialect.fault(exc)
        if found is not None:
            return found
    if isinstance(exc, sa.exc.DBAPIError):
        wrapped_driver = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
        if exc.connection_invalidated or (
            wrapped_driver and not isinstance(exc.orig, sqlite3.Error)
        ):
            return "down"
    return "down" if isinstance(exc, sa.exc.TimeoutError) else None  # an exhausted pool


class Database:
    """An engine plus the two transaction kinds the services use: read and write."""

    def __init__(self, url: str, *, synchronous: str = "FULL") -> None:
        self.url = _normalize_url(url)
        self.sql: Dialect = SQLiteDialect() if self.url.startswith("sqlite") else PostgresDialect()
        self.engine = self.sql.create_engine(self.url, synchronous)
        self.dialect = self.sql.name

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write; commits on exit, rolls back on error. What it
        noted in ``uncommitted(conn)`` goes with it."""
        with self._connect(write=True) as conn:
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop(_UNCOMMITTED, None)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self._connect(write=False) as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[Connection]:
        conn = self.engine.connect()
        try:
            options = self.sql.connection_options(write=write)
            yield conn.execution_options(**options) if options else conn
        finally:
            conn.close()

    def ping(self) -> None:
        """Raise unless the database answers, and, where it can say so without waiting
        on a writer, would take writes (for readiness)."""
        with self.engine.connect() as conn:
            self.sql.ping(conn)

    def prepare(self, stmt: Any, keys: Sequence[str] | None = None) -> Prepared:
        """``stmt`` compiled once for this database (``keys``: an INSERT's columns)."""
        return Prepared(self, stmt, keys)

    def insert_ignoring_duplicates(self, table: sa.Table) -> Any:
        """INSERT that skips rows whose primary key already exists."""
        return self.sql.insert(table).on_conflict_do_nothing()

    def upsert(
        self, table: sa.Table, keys: Sequence[str], update: Sequence[str], where: Any = None
    ) -> Any:
        """INSERT … ON CONFLICT (keys) DO UPDATE SET update-columns [WHERE where]."""
        stmt = self.sql.insert(table)
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
        with self.sql.migration_lock(self.engine, self.url):
            migrations.upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


_UNCOMMITTED = "plinth.uncommitted"


def uncommitted(conn: Connection) -> dict[str, Any]:
    """What the write transaction on ``conn`` made that may yet roll back, by kind (a
    cache must not keep it): noted by its makers, dropped when ``Database.write`` ends."""
    found: dict[str, Any] = conn.info.setdefault(_UNCOMMITTED, {})
    return found


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
        driver: Any = conn.connection.driver_connection  # SQLAlchemy's execution costs more
        _retry_locked(lambda: driver.execute(stmt))


def _retry_locked(fn: Any) -> Any:
    """Retry what SQLite refuses with "database is locked" (or "locking protocol", its
    SQLITE_PROTOCOL: processes opening one WAL database at the same moment) despite
    the busy timeout.

    The busy handler does not cover every path (switching to WAL, a checkpoint racing
    a new writer), so these few calls get a short back-off of their own; but not past
    the busy timeout in all (a writer that holds the lock longer, another process, say,
    makes the caller's request a 503, not a wait of twenty busy timeouts).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    for attempt in range(_LOCKED_RETRIES):
        try:
            return fn()
        except Exception as exc:  # sqlite3.OperationalError, possibly wrapped
            transient = "locked" in str(exc) or "locking protocol" in str(exc)
            if not transient or attempt == _LOCKED_RETRIES - 1 or time.monotonic() > deadline:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None
