from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.client import Client
from plinth.settings import Settings
from tests import services


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with services.postgres_database() as url:
        yield url


def make_settings(home: Path, database_url: str | None = None, **extra: object) -> Settings:
    return Settings(home=home, database_url=database_url, url=None, token=None, **extra)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    db = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    return make_settings(tmp_path / "home", db)


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as c:
        yield c


@pytest.fixture
def project() -> str:
    """A project name no other test uses (the Postgres database is shared)."""
    return f"p-{uuid.uuid4().hex[:10]}"
