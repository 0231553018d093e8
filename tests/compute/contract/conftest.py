"""The contract suite runs once per executor (the ``harness`` parameter); the Ray runs
share one real two-node cluster for the session, started by the first of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compute.ray_cluster import RaySetup, ray_setup_fixture

RAY_MARKER = "ray: needs a real Ray cluster (two local nodes, started by a fixture)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", RAY_MARKER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the Ray runs ``ray`` (and serial), so ``-m "not ray"`` leaves them out."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("harness") == "ray":
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def ray_setup() -> Iterator[RaySetup]:
    yield from ray_setup_fixture()


@pytest.fixture(autouse=True)
def _ray_cluster_for_ray_runs(request: pytest.FixtureRequest) -> None:
    """Start the session's Ray cluster before the first Ray run (not at import, and
    not for the local runs); its teardown is the session fixture's."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("harness") == "ray":
        request.getfixturevalue("ray_setup")
