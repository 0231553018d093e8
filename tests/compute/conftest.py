"""Compute's tests run jobs as real processes on the local executor, over a home with
one declared node (4 CPUs, 8 GiB, 2 GPU slots) so that what fits does not depend on
the machine; waits are on conditions with deadlines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from plinth.client import Client
from plinth.compute import schemas as s
from plinth.settings import ComputeSettings, NodeSettings, PoolSettings, Settings

PY = sys.executable


def compute(**extra: Any) -> ComputeSettings:
    node = NodeSettings(name="n1", cpus=4, memory="8Gi", gpus=2)
    values: dict[str, Any] = {
        "pools": [PoolSettings(name="local", nodes=[node])],
        "grace_seconds": 1.0,
        "lease_seconds": 5.0,
        "retry_backoff_seconds": 0.05,
        "retry_backoff_max_seconds": 0.2,
        "handoff": False,  # a test's jobs end with it (test_handoff turns it on)
    }
    return ComputeSettings(**{**values, **extra})


def with_compute(settings: Settings, **extra: Any) -> Settings:
    return settings.model_copy(update={"compute": compute(**extra)})


@pytest.fixture
def jobs(settings: Settings) -> Iterator[Client]:
    with Client(settings=with_compute(settings)) as c:
        yield c


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


def wait_status(
    c: Client, project: str, job_id: str, *statuses: str, timeout: float = 20.0
) -> s.Job:
    def check() -> s.Job | None:
        job = c.get_job(project, job_id)
        return job if job.status in statuses else None

    return wait_for(check, timeout, f"job {job_id} to be {statuses}")  # type: ignore[no-any-return]


def py(code: str) -> list[str]:
    return [PY, "-c", code]
