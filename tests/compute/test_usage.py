"""Usage accounting: resource-hours per project, user, pool and job, and their cost.

The arithmetic is checked exactly on attempts written with known times and grants
(jobs queued through the API on a home that dispatches nothing, then their attempts
put in the database as the dispatcher would); real short jobs, a gang among them,
are checked against their own start and end times; and who sees which rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from plinth.cli import app
from plinth.client import Client
from plinth.compute import tables as t
from plinth.compute.client import moment
from plinth.core.db import Database
from plinth.errors import InvalidInput, NotFound
from plinth.settings import Settings
from tests.compute.conftest import py, with_compute
from tests.conftest import make_settings

H = 3600.0
GIB = 1 << 30
PRICES = {"price_cpu_hour": 0.5, "price_gpu_hour": 10.0, "price_gib_hour": 0.1}


@dataclass
class Ledger:
    """Three jobs in two projects, with attempts of known grants and times:

    a (p1, alice, pool gpu): 4 CPUs, 2 GPUs, 8 GiB over [0h, 2h] and again [3h, 4h]
    b (p1, bob, pool local): 1 CPU, 1 GiB from 1h on, still running
    c (p2, alice, pool local): 2 CPUs, no memory limit, over [0h, 1h]
    """

    client: Client
    base: float  # 0h, ten hours ago
    ids: dict[str, str]


@pytest.fixture
def ledger(own_settings: Settings) -> Iterator[Ledger]:
    settings = with_compute(own_settings, dispatch=False, **PRICES)
    base = time.time() - 10 * H
    with Client(settings=settings) as c:
        ids = {name: c.submit_job(p, ["true"]).id for name, p in (("a", "p1"), ("b", "p1"))}
        ids["c"] = c.submit_job("p2", ["true"]).id
        db = Database(settings.resolved_database_url())
        try:
            with db.write() as conn:
                _job(conn, ids["a"], "alice", "gpu")
                _job(conn, ids["b"], "bob", "local")
                _job(conn, ids["c"], "alice", "local")
                _attempt(conn, ids["a"], 1, base, base + 2 * H, 4, 2, 8 * GIB)
                _attempt(conn, ids["a"], 2, base + 3 * H, base + 4 * H, 4, 2, 8 * GIB)
                _attempt(conn, ids["b"], 1, base + 1 * H, None, 1, 0, GIB)
                _attempt(conn, ids["c"], 1, base, base + 1 * H, 2, 0, 0)
        finally:
            db.dispose()
        yield Ledger(c, base, ids)


def _job(conn: Any, job_id: str, user: str, pool: str) -> None:
    conn.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(user=user, pool=pool))


def _attempt(
    conn: Any,
    job_id: str,
    n: int,
    start: float,
    end: float | None,
    cpus: float,
    gpus: int,
    mem: int,
) -> None:
    conn.execute(
        t.job_attempts.insert(),
        {
            "job_id": job_id,
            "attempt": n,
            "status": "running" if end is None else "succeeded",
            "nodes": "[]",
            "allocations": "[]",
            "handles": "[]",
            "started_at": start,
            "ended_at": end,
            "cpus": cpus,
            "gpus": gpus,
            "memory_bytes": mem,
        },
    )


def _rows(usage: Any) -> dict[str, tuple[float, ...]]:
    return {
        r.key: (r.jobs, r.attempts, r.hours, r.cpu_hours, r.gpu_hours, r.gib_hours, r.cost)
        for r in usage.rows
    }


def test_resource_hours_and_cost_by_project(ledger: Ledger) -> None:
    c, base = ledger.client, ledger.base
    found = c.usage(by="project", since=base, until=base + 5 * H)
    # p1: a 8+4 CPU-h, 4+2 GPU-h, 16+8 GiB-h; b 4h of 1 CPU and 1 GiB
    # p2: c 1h of 2 CPUs
    assert _rows(found) == {
        "p1": pytest.approx((2, 3, 7.0, 16.0, 6.0, 28.0, 8.0 + 60.0 + 2.8)),
        "p2": pytest.approx((1, 1, 1.0, 2.0, 0.0, 0.0, 1.0)),
    }
    assert [r.key for r in found.rows] == ["p1", "p2"]  # largest cost first
    assert found.total.cost == pytest.approx(71.8) and found.total.jobs == 3
    assert (found.prices.cpu_hour, found.prices.gpu_hour, found.prices.gib_hour) == (0.5, 10, 0.1)


def test_the_window_clips_attempts(ledger: Ledger) -> None:
    c, base = ledger.client, ledger.base
    found = c.usage(by="project", since=base + 1.5 * H, until=base + 3.5 * H)
    # a: half an hour of each attempt; b: two hours; c ended before the window
    assert _rows(found) == {"p1": pytest.approx((2, 3, 3.0, 6.0, 2.0, 10.0, 3 + 20 + 1.0))}
    assert c.usage(since=base - 5 * H, until=base).rows == []  # before any job


def test_a_running_attempt_counts_until_now(ledger: Ledger) -> None:
    c, base = ledger.client, ledger.base
    before = time.time()
    [row] = c.usage(by="job", project="p1", since=base + 5 * H).rows  # only b runs on
    after = time.time()
    assert (row.key, row.project, row.attempts) == (ledger.ids["b"], "p1", 1)
    assert (before - base - 5 * H) / H <= row.cpu_hours <= (after - base - 5 * H) / H
    assert row.gib_hours == pytest.approx(row.cpu_hours) and row.gpu_hours == 0


def test_by_user_pool_and_job(ledger: Ledger) -> None:
    c, base, ids = ledger.client, ledger.base, ledger.ids
    window = {"since": base, "until": base + 5 * H}
    by_user = _rows(c.usage(by="user", **window))
    assert by_user == {
        "alice": pytest.approx((2, 3, 4.0, 14.0, 6.0, 24.0, 7 + 60 + 2.4)),
        "bob": pytest.approx((1, 1, 4.0, 4.0, 0.0, 4.0, 2 + 0.4)),
    }
    by_pool = _rows(c.usage(by="pool", **window))
    assert set(by_pool) == {"gpu", "local"} and by_pool["local"][3] == pytest.approx(6.0)
    by_job = c.usage(by="job", **window)
    assert {r.key: r.project for r in by_job.rows} == {
        ids["a"]: "p1",
        ids["b"]: "p1",
        ids["c"]: "p2",
    }
    limited = c.usage(by="job", limit=1, **window)
    assert [r.key for r in limited.rows] == [ids["a"]] and limited.total == by_job.total


def test_bad_windows_are_refused(ledger: Ledger) -> None:
    c = ledger.client
    with pytest.raises(InvalidInput, match="since"):
        c.usage(since=time.time() - 60, until=time.time() - 3600)
    with pytest.raises(InvalidInput, match="since"):
        c.usage(since=time.time() + 3600)  # the future holds no usage yet
    with pytest.raises(InvalidInput, match="ISO date"):
        c.usage(since="last tuesday")
    with pytest.raises(NotFound):
        c.usage(project="no-such-project")


def test_moments_users_type() -> None:
    assert moment(12.5) == 12.5
    assert moment("2025-01-31T00:00:00+00:00") == 1738281600.0
    assert abs(moment("7d") - (time.time() - 7 * 86400)) < 5


def test_real_jobs_are_counted_from_their_attempts(settings: Settings, project: str) -> None:
    with Client(settings=with_compute(settings, **PRICES)) as c:
        # a gang: 2 processes of 1.5 CPUs, 1 GPU and 512 MiB each
        gang = c.submit_job(
            project,
            py("import time; time.sleep(0.3)"),
            cpus=1.5,
            gpus=1,
            memory="512Mi",
            procs_per_node=2,
        )
        single = c.submit_job(project, py("import sys; sys.exit(1)"), cpus=2, retries=1)
        gang, single = (c.wait_job(project, j.id, timeout=30) for j in (gang, single))
        found = c.usage(by="job", project=project)
    rows = {r.key: r for r in found.rows}
    assert gang.started_at and gang.ended_at
    hours = (gang.ended_at - gang.started_at) / H
    row = rows[gang.id]
    assert row.attempts == 1 and row.hours == pytest.approx(hours, rel=1e-6)
    assert (row.cpu_hours, row.gpu_hours, row.gib_hours) == pytest.approx(
        (3 * hours, 2 * hours, 1.0 * hours), rel=1e-6
    )
    assert row.cost == pytest.approx(3 * hours * 0.5 + 2 * hours * 10 + hours * 0.1, rel=1e-6)
    retried = rows[single.id]  # both attempts count
    assert (single.attempt, retried.attempts) == (2, 2) and retried.cpu_hours == pytest.approx(
        2 * retried.hours
    )


def test_each_caller_sees_the_projects_they_may_read(own_settings: Settings) -> None:
    settings = with_compute(own_settings, dispatch=False)
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        for p in ("mine", "theirs"):
            job = root.submit_job(p, ["true"])
            _started(settings, job.id)
        users = {n: root.create_user(n).token.token for n in ("vic", "out")}
        root.add_member("mine", "vic", "viewer")
        scoped = root.create_token("theirs-only", project="theirs", role="viewer").token
        assert {r.key for r in root.usage().rows} == {"mine", "theirs"}
        with as_user(users["vic"]) as vic:
            assert [r.key for r in vic.usage().rows] == ["mine"]
            assert {r.key for r in vic.usage(by="job").rows} == {
                r.key for r in root.usage(by="job", project="mine").rows
            }
            with pytest.raises(NotFound):
                vic.usage(project="theirs")
        with as_user(users["out"]) as out:
            assert out.usage().rows == [] and out.usage(by="user").rows == []
            with pytest.raises(NotFound):
                out.usage(project="mine")
        with as_user(scoped) as token:
            assert [r.key for r in token.usage().rows] == ["theirs"]


def _started(settings: Settings, job_id: str) -> None:
    db = Database(settings.resolved_database_url())
    try:
        with db.write() as conn:
            _attempt(conn, job_id, 1, time.time() - H, time.time(), 1, 0, 0)
    finally:
        db.dispose()


def test_the_command_prints_a_table_and_json(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_settings(home)
    env = {
        "PLINTH_HOME": str(home),
        "PLINTH_URL": "",
        "PLINTH_TOKEN": "",
        "PLINTH_COMPUTE__DISPATCH": "false",
        "PLINTH_COMPUTE__PRICE_CPU_HOUR": "2",
        "COLUMNS": "200",
    }
    runner = CliRunner()
    submitted = runner.invoke(
        app, ["jobs", "submit", "-p", "cli", "--no-workdir", "--", "true"], env=env
    )
    assert submitted.exit_code == 0, submitted.output
    _started(make_settings(home), submitted.output.strip())
    shown = runner.invoke(app, ["usage", "--by", "project", "--since", "7d"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "cpu-hours" in shown.output and "cli" in shown.output and "total" in shown.output
    assert "2.00" in shown.output  # an hour of one CPU at 2 an hour
    as_json = runner.invoke(app, ["usage", "--by", "user", "--json"], env=env)
    data = json.loads(as_json.output)
    assert data["by"] == "user" and data["total"]["cpu_hours"] == pytest.approx(1.0, rel=1e-3)
    refused = runner.invoke(app, ["usage", "--by", "galaxy"], env=env)
    assert isinstance(refused.exception, InvalidInput) and "galaxy" in str(refused.exception)
