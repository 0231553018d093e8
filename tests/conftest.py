from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plinth.client import Client
from plinth.core.platform import Platform
from plinth.settings import ComputeSettings, Settings
from tests import services
from tests.processes import Processes
from tests.processes import started as processes_started


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server for the session: CI's, or one started from the wheel."""
    with services.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_template(postgres_server_url: str) -> Iterator[str]:
    """The name of a migrated database that each test database copies."""
    with services.migrated_template(postgres_server_url) as name:
        yield name


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url: str, postgres_template: str) -> Iterator[str]:
    """One database shared by the session's tests (they use projects of their own)."""
    with services.postgres_database(postgres_server_url, postgres_template) as url:
        yield url


def make_settings(home: Path, database_url: str | None = None, **extra: object) -> Settings:
    """Settings over ``home``; an SQLite home starts from the migrated template."""
    if database_url is None and "database_url" not in extra:
        services.seed_home(home)
    extra.setdefault("compute", ComputeSettings(handoff=False))  # no agent outlives a test
    return Settings(home=home, database_url=database_url, url=None, token=None, **extra)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    db = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    return make_settings(tmp_path / "home", db)


@pytest.fixture
def own_settings(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings over a database of this test's own: for tests that turn on auth or
    break the audit chain, which span a whole database."""
    if backend == "sqlite":
        yield make_settings(tmp_path / "own-home")
        return
    server = request.getfixturevalue("postgres_server_url")
    template = request.getfixturevalue("postgres_template")
    with services.postgres_database(server, template) as url:
        yield make_settings(tmp_path / "own-home", url)


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as c:
        yield c


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    """The kernel over the same home as ``client``: its database, stores, guard."""
    opened = Platform.open(settings)
    yield opened
    opened.close()


def raw_http(client: Client) -> httpx.Client:
    """The client's own connection (embedded: to its in-process app), for requests
    the SDK never makes."""
    http: httpx.Client = client._transport.http
    return http


@pytest.fixture
def project() -> str:
    """A project name no other test uses (the Postgres database is shared)."""
    return f"p-{uuid.uuid4().hex[:10]}"


# SeaweedFS runs without identities: any key is accepted, but requests are signed.
S3_KEY = "plinth-test"
S3_SECRET = "plinth-test-secret"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One SeaweedFS for the whole session, on loopback."""
    with services.seaweedfs() as endpoint:
        yield endpoint


def s3_options(endpoint: str) -> dict[str, Any]:
    """``open_store`` keyword arguments for the test server."""
    return {
        "s3_endpoint_url": endpoint,
        "s3_access_key_id": S3_KEY,
        "s3_secret_access_key": S3_SECRET,
    }


@pytest.fixture(scope="session")
def s3_fs(s3_endpoint: str) -> Any:
    """An s3fs filesystem to look at (and tamper with) buckets behind the store's back."""
    import s3fs

    return s3fs.S3FileSystem(
        key=S3_KEY,
        secret=S3_SECRET,
        client_kwargs={"endpoint_url": s3_endpoint},
        skip_instance_cache=True,
        use_listings_cache=False,
    )


@pytest.fixture
def s3_bucket(s3_fs: Any) -> Iterator[str]:
    """A new, empty bucket; removed afterwards (each SeaweedFS bucket holds volumes)."""
    name = f"plinth-{uuid.uuid4().hex[:12]}"
    s3_fs.mkdir(name)
    yield name
    s3_fs.rm(name, recursive=True)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    with processes_started(tmp_path) as procs:
        yield procs
