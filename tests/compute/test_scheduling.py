"""Scheduling through the service, with real processes: two projects competing for
two GPU slots declared in config (``PLINTH_COMPUTE__POOLS``), fair share between
them, priority, a per-project quota, and preemption carried out (SIGTERM, requeued
as a disruption, started again later)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.client import Client
from plinth.settings import Settings
from tests.compute.conftest import py, wait_for, wait_status

POOLS = [{"name": "local", "nodes": [{"name": "n1", "cpus": 8, "memory": "8Gi", "gpus": 2}]}]


@pytest.fixture
def gpus(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Client, Path]]:
    """A client whose compute config comes from the environment, as a user sets it."""
    monkeypatch.setenv("PLINTH_COMPUTE__POOLS", json.dumps(POOLS))
    monkeypatch.setenv("PLINTH_COMPUTE__GRACE_SECONDS", "2")
    monkeypatch.setenv("PLINTH_COMPUTE__QUOTAS", json.dumps({"capped": {"gpus": 1}}))
    configured = Settings(home=settings.home, database_url=settings.database_url)
    assert configured.compute.pools[0].nodes[0].gpus == 2
    with Client(settings=configured) as c:
        yield c, tmp_path


def _held(gate: Path, name: str) -> list[str]:
    """A job that runs until the test creates ``gate/name``."""
    path = str(gate / name)
    return py(f"import os, time\nwhile not os.path.exists({path!r}): time.sleep(0.02)\n")


def _status(c: Client, project: str, job_id: str) -> str:
    return c.get_job(project, job_id).status


def test_fair_share_between_two_projects(gpus: tuple[Client, Path]) -> None:
    c, gate = gpus
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    a_jobs = [c.submit_job(a, _held(gate, f"a{i}"), gpus=1) for i in range(3)]
    for job in a_jobs[:2]:
        wait_status(c, a, job.id, "running")
    b_jobs = [c.submit_job(b, _held(gate, f"b{i}"), gpus=1) for i in range(2)]
    assert _status(c, a, a_jobs[2].id) == "queued" and _status(c, b, b_jobs[0].id) == "queued"
    (gate / "a0").write_text("")
    wait_status(c, b, b_jobs[0].id, "running")  # b holds no GPU: it goes before a's third
    assert _status(c, a, a_jobs[2].id) == "queued"
    (gate / "a1").write_text("")
    wait_status(c, a, a_jobs[2].id, "running")  # now one each: a's turn (it came first)
    assert _status(c, b, b_jobs[1].id) == "queued"
    for name in ("a2", "b0", "b1"):
        (gate / name).write_text("")
    for project, job in [(a, a_jobs[2]), (b, b_jobs[0]), (b, b_jobs[1])]:
        assert c.wait_job(project, job.id, timeout=20).status == "succeeded"
    used = {n.name: n.gpus_used for n in c.list_nodes()}
    assert used == {"n1": 0}


def test_priority_goes_first_and_a_quota_holds_a_project_back(gpus: tuple[Client, Path]) -> None:
    c, gate = gpus
    other = f"o-{uuid.uuid4().hex[:8]}"
    capped = [c.submit_job("capped", _held(gate, f"c{i}"), gpus=1) for i in range(2)]
    wait_status(c, "capped", capped[0].id, "running")
    low = c.submit_job(other, _held(gate, "low"), gpus=1, priority=0)
    wait_status(c, other, low.id, "running")  # the quota keeps capped's second out
    assert _status(c, "capped", capped[1].id) == "queued"
    plain = c.submit_job(other, _held(gate, "plain"), gpus=1)
    urgent = c.submit_job(other, _held(gate, "urgent"), gpus=1, priority=5)
    (gate / "low").write_text("")
    wait_status(c, other, urgent.id, "running")
    assert _status(c, other, plain.id) == "queued"
    pools = {p.name: p for p in c.list_pools()}
    assert pools["local"].gpus == 2 and pools["local"].gpus_used == 2
    for name in ("c0", "c1", "plain", "urgent"):
        (gate / name).write_text("")
    c.wait_job(other, plain.id, timeout=20)
    c.wait_job("capped", capped[1].id, timeout=20)


def test_preemption_requeues_lower_priority_work(gpus: tuple[Client, Path]) -> None:
    c, gate = gpus
    project = f"p-{uuid.uuid4().hex[:8]}"
    low = c.submit_job(project, _held(gate, "low"), gpus=2, priority=0)
    wait_status(c, project, low.id, "running")
    high = c.submit_job(project, _held(gate, "high"), gpus=1, priority=10)
    wait_status(c, project, high.id, "running")
    requeued = wait_status(c, project, low.id, "queued")
    assert requeued.disruptions == 1 and requeued.retries_used == 0 and requeued.attempt == 1
    (gate / "high").write_text("")
    again = wait_status(c, project, low.id, "running")
    assert again.attempt == 2
    (gate / "low").write_text("")
    done = c.wait_job(project, low.id, timeout=20)
    assert (done.status, done.attempt, done.disruptions) == ("succeeded", 2, 1)
    wait_for(lambda: all(n.gpus_used == 0 for n in c.list_nodes()), what="GPUs freed")
