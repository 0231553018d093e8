from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.settings import Settings
from tests import services
from tests.conftest import make_settings


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """A database of its own per test: the audit chain spans the whole database, and
    these tests break it on purpose."""
    if backend == "sqlite":
        yield make_settings(tmp_path / "home")
        return
    server = request.getfixturevalue("postgres_server_url")
    with services.postgres_database(server) as url:
        yield make_settings(tmp_path / "home", url)
