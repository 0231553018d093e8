"""The projects' id cache never keeps a project that its transaction did not commit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plinth.core.access import LOCAL
from plinth.core.platform import Platform
from plinth.settings import Settings


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    opened = Platform.open(settings)
    yield opened
    opened.close()


def test_a_project_made_by_a_transaction_that_rolls_back_is_not_remembered(
    platform: Platform,
) -> None:
    projects, db = platform.projects, platform.db
    with pytest.raises(RuntimeError, match="the rest of the change failed"), db.write() as conn:
        made = projects.create_or_require(conn, "fleeting", LOCAL)
        assert projects.id_of(conn, "fleeting") == made  # seen inside its transaction
        raise RuntimeError("the rest of the change failed")
    with db.read() as conn:
        assert projects.id_of(conn, "fleeting") is None
    with db.write() as conn:  # made again, for good this time
        again = projects.create_or_require(conn, "fleeting", LOCAL)
        assert again != made and projects.id_of(conn, "fleeting") == again
    with db.read() as conn:
        assert projects.id_of(conn, "fleeting") == again
