from __future__ import annotations

import pytest

from plinth.settings import Settings


@pytest.fixture
def settings(own_settings: Settings) -> Settings:
    """A database of its own per test: the audit chain spans the whole database, and
    these tests break it on purpose."""
    return own_settings
