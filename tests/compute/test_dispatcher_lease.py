"""One dispatcher per database: two apps on one home never both start jobs (so they
never over-book a node), the lease passes on when its holder stops or goes silent,
and an embedded program that ends with jobs left hands them to a detached
``plinth jobs agent`` that runs them to their end and then exits."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psutil

from plinth.client import Client
from plinth.compute.store import JobStore
from plinth.core.db import Database
from plinth.settings import Settings
from tests.compute.conftest import py, wait_for, wait_status, with_compute


def test_the_lease_has_one_holder_at_a_time(settings: Settings) -> None:
    with Client(settings=settings):  # a migrated database
        pass
    db = Database(settings.resolved_database_url())
    try:
        store, now = JobStore(db), time.time()
        store.resign("nobody")  # no row yet: nothing to give up
        assert store.lead("a", now, now + 30)
        assert not store.lead("b", now, now + 30)
        assert store.lead("a", now + 1, now + 31)  # renewed by its holder
        store.resign("b")  # not b's to give up
        assert not store.lead("b", now + 2, now + 32)
        store.resign("a")
        assert store.lead("b", now + 3, now + 33)
        assert not store.lead("a", now + 4, now + 34)
        assert store.lead("a", now + 40, now + 70)  # b went silent: its lease ran out
        store.resign("a")  # the database outlives this test (Postgres: the session's)
    finally:
        db.dispose()


def test_two_apps_on_one_home_never_over_book_the_gpus(settings: Settings, tmp_path: Path) -> None:
    """Two slots; six one-GPU jobs submitted through two apps at once. Each app
    alone would count both slots as its own."""
    project = f"lease-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "done"
    done.mkdir()
    code = "import sys, time; time.sleep(0.3); open(sys.argv[1], 'w').close()"
    with Client(settings=with_compute(settings)) as a, Client(settings=with_compute(settings)) as b:
        ids = [
            (a if i % 2 else b).submit_job(project, [*py(code), str(done / f"{i}")], gpus=1).id
            for i in range(6)
        ]
        most = 0
        while len(list(done.iterdir())) < 6:
            running = a.list_jobs(project, status="running").jobs
            most = max(most, len(running))
            assert most <= 2, f"{most} one-GPU jobs ran at once on two GPU slots"
            time.sleep(0.02)
        for job_id in ids:
            wait_status(a, project, job_id, "succeeded")
    assert most >= 1


def _agents(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            agent = proc.info["cmdline"][-2:] == ["jobs", "agent"]
            if agent and proc.environ().get("PLINTH_HOME") == str(home):
                found.append(proc)
        except (psutil.Error, TypeError):
            continue
    return found


def test_an_embedded_program_hands_its_jobs_to_an_agent(settings: Settings, tmp_path: Path) -> None:
    project = f"handoff-{uuid.uuid4().hex[:8]}"
    gate, out = tmp_path / "gate", tmp_path / "out"
    held = (
        "import os, sys, time\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
        "open(sys.argv[1], 'a').write('ran\\n')\n"
    )
    with Client(settings=with_compute(settings, handoff=True)) as c:
        first = c.submit_job(project, [*py(held), str(out)], gpus=2)
        wait_status(c, project, first.id, "running")
        second = c.submit_job(project, [*py(held), str(out)], gpus=2)  # waits for the slots
    # the program ended; nothing of it dispatches any more
    watcher = with_compute(settings, dispatch=False)
    with Client(settings=watcher) as w:
        agents = wait_for(lambda: _agents(settings.home), what="an agent to start")
        gate.write_text("")
        wait_status(w, project, first.id, "succeeded")
        wait_status(w, project, second.id, "succeeded")
        assert out.read_text() == "ran\nran\n"
        for agent in agents:  # idle now: it exits by itself
            assert agent.wait(timeout=30) == 0
