"""A failing backend answers like a service, not like a bug.

A database that is down, an object store that does not answer and a full disk are
faults of the service: 503 with ``Retry-After`` (507 for a full disk), one line in the
log and no traceback, ``/readyz`` naming the dependency, and recovery once it is back.
All against the real parts: a ``plinth server`` on a Postgres database whose
connections are cut and refused, a SeaweedFS that is killed, a tmpfs that fills up.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError, EndpointConnectionError

from plinth import Client
from plinth.api.errors import backend_fault
from plinth.errors import InsufficientStorage, ServiceUnavailable
from plinth.settings import ClientSettings, S3Settings
from tests import services
from tests.conftest import S3_KEY, S3_SECRET, make_settings, raw_http
from tests.processes import REPO, Processes, child_env

# 1. what counts as a backend fault -------------------------------------------------------


def _wrapped(orig: Exception, kind: type[sa.exc.DBAPIError] = sa.exc.OperationalError) -> Any:
    return kind("SELECT 1", {}, orig)


def _s3_error(status: int, code: str) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetObject")


def _translated_by_s3fs(cause: Exception) -> OSError:
    err = OSError(errno.EIO, "We encountered an internal error. Please try again.")
    err.__cause__ = cause
    return err


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), InsufficientStorage),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), InsufficientStorage),
        (_wrapped(sqlite3.OperationalError("database or disk is full")), InsufficientStorage),
        (_wrapped(psycopg.errors.DiskFull("could not extend file")), InsufficientStorage),
        (_wrapped(sqlite3.OperationalError("disk I/O error")), ServiceUnavailable),
        (_wrapped(sqlite3.OperationalError("unable to open database file")), ServiceUnavailable),
        (_wrapped(psycopg.OperationalError("connection failed")), ServiceUnavailable),
        (_wrapped(psycopg.InterfaceError("the connection is lost")), ServiceUnavailable),
        (psycopg.OperationalError("server closed the connection unexpectedly"), ServiceUnavailable),
        (sa.exc.TimeoutError("QueuePool limit of size 8 overflow 16 reached"), ServiceUnavailable),
        (EndpointConnectionError(endpoint_url="http://s3"), ServiceUnavailable),
        (_s3_error(503, "SlowDown"), ServiceUnavailable),
        (_translated_by_s3fs(_s3_error(500, "InternalError")), ServiceUnavailable),
        (OSError(errno.EIO, "Input/output error"), ServiceUnavailable),  # the local disk
        (OSError(errno.EROFS, "Read-only file system"), ServiceUnavailable),
        (
            _wrapped(sqlite3.OperationalError("attempt to write a readonly database")),
            ServiceUnavailable,
        ),
        (
            _wrapped(psycopg.errors.ReadOnlySqlTransaction("read-only"), sa.exc.InternalError),
            ServiceUnavailable,
        ),
        (_wrapped(psycopg.errors.AdminShutdown("terminating")), ServiceUnavailable),
        # bugs and refusals stay what they are
        (_wrapped(sqlite3.OperationalError("no such table: runs")), None),
        (_wrapped(sqlite3.IntegrityError("UNIQUE constraint failed"), sa.exc.IntegrityError), None),
        (_wrapped(psycopg.errors.UndefinedTable("no runs"), sa.exc.ProgrammingError), None),
        (_s3_error(403, "AccessDenied"), None),
        (_translated_by_s3fs(_s3_error(400, "InvalidRequest")), None),
        (OSError(errno.EACCES, "Permission denied"), None),
        (RuntimeError("a bug"), None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_backend_faults_are_recognised_and_bugs_are_not(
    exc: BaseException, expected: type | None
) -> None:
    fault = backend_fault(exc)
    assert (type(fault) if fault else None) is expected


# 2. a Postgres database that goes away and comes back -------------------------------------


def _admin(server_url: str) -> sa.Engine:
    url = server_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def _cut_connections(admin: sa.Engine, database: str) -> int:
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": database},
        ).scalar()
    return int(killed or 0)


def _allow_connections(admin: sa.Engine, database: str, allow: bool) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {allow}'))


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_outage_answers_503_and_the_sdk_rides_it_out(
    processes: Processes, tmp_path: Path, postgres_server_url: str
) -> None:
    admin = _admin(postgres_server_url)
    with services.postgres_database(postgres_server_url) as database_url:
        database = sa.engine.make_url(database_url).database
        assert database is not None
        server = processes.server(tmp_path / "home", PLINTH_DATABASE_URL=database_url)
        client = Client(
            settings=make_settings(tmp_path / "sdk").model_copy(update={"url": server.url})
        )
        http = httpx.Client(base_url=server.url, timeout=30)
        run = client.create_run("outage")
        client.log_batch(
            run.id, metrics=[{"key": "m", "value": 0.0, "step": 0}], batch_id="b-000000"
        )

        # Killed connections alone (a fail-over, an idle-connection reaper): the pool
        # notices and reconnects, and nobody sees an error.
        assert _cut_connections(admin, database) > 0
        assert http.get(f"/api/v1/runs/{run.id}").status_code == 200

        # The database goes down: it refuses new connections, and the old ones die.
        _allow_connections(admin, database, False)
        _cut_connections(admin, database)
        answer = http.get(f"/api/v1/runs/{run.id}")
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["error"]["type"] == "ServiceUnavailable"
        assert "database" in answer.json()["error"]["message"]
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("failing")
        assert ready.json()["checks"]["blob store"] == "ok"
        assert http.get("/healthz").status_code == 200  # alive, just not ready

        # The SDK's calls made during the outage wait for the database to come back.
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                created = client.create_run("outage", "during")
                outcome["created"] = created.id
                outcome["applied"] = client.log_batch(
                    run.id, metrics=[{"key": "m", "value": 1.0, "step": 1}], batch_id="b-000001"
                )
                outcome["status"] = client.get_run(created.id).status
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=work)
        worker.start()
        time.sleep(3)
        assert worker.is_alive(), outcome  # still retrying, not failed
        _allow_connections(admin, database, True)
        worker.join(timeout=60)
        assert "error" not in outcome, outcome
        assert outcome["applied"] is True and outcome["status"] == "running"

        assert http.get("/readyz").json() == {
            "status": "ok",
            "checks": {"database": "ok", "blob store": "ok"},
        }
        # Nothing lost, nothing made twice.
        names = sorted(r.name for r in client.search_runs("outage").runs)
        assert names == sorted([run.name, "during"])
        assert [(p.step, p.value) for p in client.metric_history(run.id, "m")] == [
            (0, 0.0),
            (1, 1.0),
        ]
        client.close()
        http.close()
    admin.dispose()
    log = server.log.read_text(errors="replace")  # all of it, not the tail
    assert "the database is unavailable" in log
    assert "Traceback" not in log


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_that_takes_no_writes_is_down_until_it_does(
    processes: Processes, tmp_path: Path, postgres_server_url: str
) -> None:
    """A primary demoted in a fail-over (read-only): writes answer 503, /readyz says so,
    reads still answer; promoted again, writes go on."""
    admin = _admin(postgres_server_url)
    with services.postgres_database(postgres_server_url) as database_url:
        database = sa.engine.make_url(database_url).database
        server = processes.server(tmp_path / "home", PLINTH_DATABASE_URL=database_url)
        http = httpx.Client(base_url=server.url, timeout=30)
        created = http.post("/api/v1/runs", json={"project": "standby"})
        assert created.status_code == 201, created.text

        def read_only(on: bool) -> None:
            with admin.connect() as conn:
                setting = "SET default_transaction_read_only = on" if on else "RESET ALL"
                conn.execute(sa.text(f'ALTER DATABASE "{database}" {setting}'))
            _cut_connections(admin, str(database))  # new sessions take the setting

        read_only(True)
        refused = http.post("/api/v1/runs", json={"project": "standby"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["type"] == "ServiceUnavailable"
        assert http.get(f"/api/v1/runs/{created.json()['id']}").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == (
            "failing: the database takes no writes (a standby, or read-only)"
        )
        read_only(False)
        assert http.post("/api/v1/runs", json={"project": "standby"}).status_code == 201
        assert http.get("/readyz").status_code == 200
        http.close()
    admin.dispose()
    assert "Traceback" not in server.log.read_text(errors="replace")


# 3. an object store that dies ----------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.slow
def test_an_object_store_outage_answers_503_and_readyz_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(1000))
    bucket = f"plinth-{uuid.uuid4().hex[:12]}"
    with services.seaweedfs() as endpoint:
        s3 = S3Settings(endpoint_url=endpoint, access_key_id=S3_KEY, secret_access_key=S3_SECRET)  # type: ignore[arg-type]
        settings = make_settings(
            tmp_path / "home",
            artifacts_url=f"s3://{bucket}/artifacts",
            s3=s3,
            client=ClientSettings(retry_seconds=0),
        )
        client = Client(settings=settings)
        http = raw_http(client)
        httpx.put(f"{endpoint}/{bucket}").raise_for_status()
        run = client.create_run("s3-outage")
        client.log_artifact(run.id, model, "kept.bin")
        assert http.get("/readyz").status_code == 200
    # SeaweedFS is killed as the block ends: nothing answers on its port any more.

    with caplog.at_level(logging.WARNING, logger="plinth.server"):
        upload = http.put(
            f"/api/v1/runs/{run.id}/artifacts/new.bin",
            content=b"new bytes",
            headers={"Content-Type": "application/octet-stream"},
        )
        download = http.get(f"/api/v1/runs/{run.id}/artifacts/kept.bin")
        ready = http.get("/readyz")
        with pytest.raises(ServiceUnavailable, match="artifact store"):
            client.download_artifact(run.id, "kept.bin", tmp_path / "out")
    for answer in (upload, download):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["error"] == {
            "type": "ServiceUnavailable",
            "message": "the artifact store is unavailable; try again shortly",
        }
    assert ready.status_code == 503
    assert ready.json()["checks"]["blob store"].startswith("failing")
    assert ready.json()["checks"]["database"] == "ok"
    assert [a.path for a in client.list_artifacts(run.id)] == ["kept.bin"]  # metadata still reads
    lines = [r for r in caplog.records if "artifact store is unavailable" in r.getMessage()]
    assert len(lines) >= 3
    assert not any(r.exc_info for r in caplog.records)  # one line each, no traceback
    client.close()


# 4. a disk that fills up ---------------------------------------------------------------------

FILLER = """
    import json, os, sys
    import httpx
    from plinth import Client, errors
    from plinth.settings import Settings

    home, artifact = sys.argv[1:]
    results = {}
    client = Client(settings=Settings(home=home, url=None, token=None))
    http = client._transport.http
    run = client.create_run("full")

    def attempt(name, call):
        try:
            call()
            results[name] = "ok"
        except errors.PlinthError as exc:
            results[name] = [type(exc).__name__, exc.status_code]

    # An artifact larger than the free space: the artifact volume fills up.
    attempt("upload", lambda: client.log_artifact(run.id, artifact, "model.bin"))
    with open(artifact, "rb") as f:
        answer = http.put(f"/api/v1/runs/{run.id}/artifacts/raw.bin", content=f.read())
    results["raw upload"] = [answer.status_code, answer.headers.get("Retry-After")]

    # Then nothing is left for SQLite either.
    filler = os.path.join(home, "filler")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError:
            pass
    many = [{"key": "m", "value": float(i), "step": i} for i in range(20000)]
    attempt("batch", lambda: client.log_batch(run.id, metrics=many, batch_id="full-0001"))
    attempt("create", lambda: client.create_run("full", "second"))

    os.remove(filler)  # space is freed: the same calls now go through
    attempt("batch again", lambda: client.log_batch(run.id, metrics=many, batch_id="full-0001"))
    results["points"] = len(client.metric_history(run.id, "m"))
    results["runs"] = len(client.search_runs("full").runs)
    results["artifacts"] = [a.path for a in client.list_artifacts(run.id)]
    print("RESULTS", json.dumps(results))
"""


@pytest.mark.slow
def test_a_full_disk_answers_507_and_recovers_when_space_is_freed(tmp_path: Path) -> None:
    """A real full disk: the home on a 4 MiB tmpfs, mounted in a mount namespace of
    this test's own (``unshare``: no root needed, nothing visible outside)."""
    disk, script, artifact = tmp_path / "disk", tmp_path / "filler.py", tmp_path / "big.bin"
    disk.mkdir()
    script.write_text(textwrap.dedent(FILLER))
    artifact.write_bytes(os.urandom(6 << 20))
    home = disk / "home"
    inner = (
        f"mount -t tmpfs -o size=4m tmpfs {disk} && mkdir {home} && "
        f"exec {sys.executable} {script} {home} {artifact}"
    )
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to mount a small disk"
    out = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", inner],
        env=child_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    results = json.loads(out.stdout.split("RESULTS", 1)[1])
    assert results["upload"] == ["InsufficientStorage", 507]
    assert results["raw upload"] == [507, "60"]
    assert results["batch"] == ["InsufficientStorage", 507]  # SQLite: database or disk is full
    assert results["create"] == ["InsufficientStorage", 507]
    assert results["batch again"] == "ok"
    assert results["points"] == 20000  # the refused batch left nothing behind
    assert results["runs"] == 1 and results["artifacts"] == []
    assert "the server's disk is full" in out.stderr  # one line per refusal
    assert "Traceback" not in out.stderr
