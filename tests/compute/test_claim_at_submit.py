"""A job that can start at once is claimed in its submit's own transaction (one commit
fewer before it runs); one that cannot, or that would jump a waiting queue, goes the
usual way; and a submit whose transaction fails after its claim holds nothing. (Here
too, as these hold the dispatcher between rounds: a job that ends before its deadline
comes round ended as it did.)"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.api.blocking import Blocking
from plinth.compute import dispatcher, snapshot
from plinth.compute import schemas as s
from plinth.compute.service import JobService
from plinth.core.access import LOCAL
from plinth.core.platform import Platform
from plinth.errors import NotFound
from plinth.server.app import build_services
from plinth.settings import ComputeSettings, NodeSettings, PoolSettings, Settings
from tests.compute.conftest import py, wait_for

POOL = PoolSettings(name="local", nodes=[NodeSettings(name="n1", cpus=4, memory="4Gi", gpus=2)])


@pytest.fixture
def compute(settings: Settings) -> Iterator[JobService]:
    """The compute service of an app over ``settings``, its dispatcher running."""
    configured = settings.model_copy(
        update={"compute": ComputeSettings(pools=[POOL], handoff=False, grace_seconds=1)}
    )
    platform = Platform.open(configured)
    service = build_services(platform, Blocking(inline=True)).get(JobService)
    service.dispatcher.start()
    try:
        yield service
    finally:
        service.dispatcher.stop()
        platform.close()


def _held(gate: Path) -> list[str]:
    return py(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)\n")


def _submit(compute: JobService, project: str, argv: list[str], gpus: int) -> s.Job:
    return _between_rounds(compute, s.JobSubmit(argv=argv, gpus=gpus), project)


def _between_rounds(compute: JobService, submit: s.JobSubmit, project: str) -> s.Job:
    """Submit while no dispatch round runs: a submit claims only then (a round would
    start the job anyway). The rounds wait on the dispatcher's lock while this thread
    holds it; the submit's claim, on this thread, takes it again."""
    with compute.dispatcher._lock:
        return compute.submit_job(project, submit, principal=LOCAL)


def _ended(compute: JobService, project: str, job_id: str) -> s.Job:
    def done() -> s.Job | None:
        job = compute.get_job(project, job_id, principal=LOCAL)
        return job if job.status not in ("queued", "running") else None

    found: s.Job = wait_for(done, timeout=60, what=f"job {job_id} to end")
    return found


def test_what_fits_starts_in_its_submit_and_what_waits_keeps_its_place(
    compute: JobService, tmp_path: Path
) -> None:
    project, gate = f"p-{uuid.uuid4().hex[:8]}", tmp_path / "go"
    first = _submit(compute, project, _held(gate), gpus=1)
    second = _submit(compute, project, _held(gate), gpus=1)
    # Claimed in the submit's transaction: already running when the call returns.
    assert [(j.status, j.attempt) for j in (first, second)] == [("running", 1)] * 2
    third = _submit(compute, project, _held(gate), gpus=2)  # both GPUs are taken
    assert third.status == "queued"
    # Whether or not the scheduler has read the third yet, the database says it waits.
    fourth = _submit(compute, project, _held(gate), gpus=0)  # fits, but the third waits
    assert fourth.status == "queued"
    gate.write_text("")
    for job in (first, second, third, fourth):
        done = _ended(compute, project, job.id)
        assert done.status == "succeeded", done


@pytest.mark.parametrize("bound", [None, 0])
def test_a_job_with_a_big_snapshot_is_not_claimed_in_its_submit(
    compute: JobService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: int | None
) -> None:
    """Its unpack would hold the submit's answer: it starts the usual way instead."""
    if bound is not None:
        monkeypatch.setattr(dispatcher, "CLAIM_SNAPSHOT_BYTES", bound)
    project, work = f"p-{uuid.uuid4().hex[:8]}", tmp_path / "work"
    work.mkdir()
    (work / "hello.py").write_text("print('from the snapshot')\n")
    archive = snapshot.pack(work, 1 << 20)
    digest = hashlib.sha256(archive).hexdigest()
    uploaded = compute.upload_snapshot(project, [archive], digest, principal=LOCAL)
    submit = s.JobSubmit(argv=py("exec(open('hello.py').read())"), snapshot=uploaded)
    job = _between_rounds(compute, submit, project)
    assert job.status == ("running" if bound is None else "queued")
    assert _ended(compute, project, job.id).status == "succeeded"
    logs = compute.job_logs(project, job.id, s.JobLogsQuery(), principal=LOCAL)
    assert logs.text == "from the snapshot\n"


def test_a_submit_whose_transaction_fails_after_its_claim_holds_nothing(
    compute: JobService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, gate = f"p-{uuid.uuid4().hex[:8]}", tmp_path / "go"
    real = compute.audit.recorded

    @contextlib.contextmanager
    def failing(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with real(*args, **kwargs) as opened:
            yield opened
            raise OSError("the disk is full")  # the transaction rolls back, claim and all

    monkeypatch.setattr(compute.audit, "recorded", failing)
    with pytest.raises(OSError, match="the disk is full"):
        _submit(compute, project, _held(gate), gpus=2)
    monkeypatch.undo()
    with pytest.raises(NotFound):  # nothing of it stays, not even its new project
        compute.list_jobs(project, s.JobsQuery(), principal=LOCAL)
    assert all(used.gpus == 0 for used in compute.dispatcher.scheduler.in_use().values())
    again = _submit(compute, project, _held(gate), gpus=2)  # both GPUs are free
    assert (again.status, again.attempt) == ("running", 1)
    gate.write_text("")
    assert _ended(compute, project, again.id).status == "succeeded"


def test_a_claim_that_fails_in_the_database_holds_nothing(
    compute: JobService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, gate = f"p-{uuid.uuid4().hex[:8]}", tmp_path / "go"

    def broken(*args: Any, **kwargs: Any) -> int | None:
        raise OSError("the database went away")

    monkeypatch.setattr(compute.dispatcher.store, "claim_in", broken)
    with pytest.raises(OSError, match="went away"):
        _submit(compute, project, _held(gate), gpus=2)
    monkeypatch.undo()
    assert all(used.gpus == 0 for used in compute.dispatcher.scheduler.in_use().values())
    again = _submit(compute, project, _held(gate), gpus=2)  # the GPUs, and the dispatcher
    assert (again.status, again.attempt) == ("running", 1)
    gate.write_text("")
    assert _ended(compute, project, again.id).status == "succeeded"


def test_a_job_that_ended_before_its_deadline_came_round_is_not_timed_out(
    compute: JobService,
) -> None:
    project = f"p-{uuid.uuid4().hex[:8]}"
    submit = s.JobSubmit(argv=py("print('done')"), timeout="1s")
    job = _between_rounds(compute, submit, project)
    assert job.status == "running"
    with compute.dispatcher._lock:  # no round until the job has exited and 1 s passed
        time.sleep(2.5)
    done = _ended(compute, project, job.id)
    assert (done.status, done.exit_code, done.reason) == ("succeeded", 0, None)
