"""Short runs, as sweeps make thousands: the SDK holds a new run's create back, so a
short run is one request (its create carries its params, points and end) and one
commit; still all-or-nothing, applied once, audited as a create and an end. A run
that lives longer is made within ``flush_interval_seconds``, or at once by anything
that needs it; the end then carries the last points."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

import plinth
from plinth.client import HELD, Client
from plinth.settings import Settings


def _series(value: float) -> list[dict[str, object]]:
    return [{"key": "loss", "steps": [0], "values": [value], "timestamps": [time.time()]}]


def _short_run(client: Client, project: str, i: int) -> plinth.Run:
    with plinth.start_run(project, params={"lr": 0.1, "i": i}, client=client) as run:
        run.log({"loss": 1.0 / (i + 1), "acc": i / 100})
    return run


def test_a_short_run_lands_whole_with_its_end(client: Client, project: str) -> None:
    sent: list[tuple[str, str]] = []
    real = client._transport.request

    def counting(method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
        sent.append((method, path.rsplit("/", 1)[-1] if "/runs/" in path else path))
        return real(method, path, **kwargs)

    client._transport.request = counting  # type: ignore[method-assign]
    run = _short_run(client, project, 3)
    assert sent == [("POST", "/api/v1/runs")]  # its whole life: params, points, end
    info = client.get_run(run.id)
    assert info.status == "finished" and info.end_time is not None
    assert info.start_time <= info.end_time
    assert info.params == {"lr": 0.1, "i": 3}
    assert info.metrics == {"loss": pytest.approx(0.25), "acc": pytest.approx(0.03)}
    assert run.info.metrics == info.metrics  # the create answers with the run as it ended
    trail = [e for e in client.audit_events(project=project) if e.object == run.id]
    assert [e.action for e in trail] == ["runs.create", "runs.end"]
    assert trail[0].details["batch"]["points"] == 2
    assert trail[1].details == {"status": "finished"}


def test_a_run_is_made_before_any_other_request_of_its_client(client: Client, project: str) -> None:
    with plinth.start_run(project, name="held", client=client) as run:
        run.log_params({"a": 1})  # held with the create: no request
        run.set_tags({"t": 2})
        with pytest.raises(plinth.Conflict, match="immutable"):
            run.log_params({"a": 2})  # as the server would refuse it
        with pytest.raises(plinth.InvalidInput):
            run.log_params({"": 1})  # checked as the server checks it
        run.log({"m": 1.0})
        seen = client.get_run(run.id)  # the client reads its own writes
        assert seen.name == "held" and seen.status == "running"
        assert seen.params == {"a": 1} and seen.tags == {"t": "2"}
        run.log_params({"b": 3})  # made by now: sent on its own
        assert client.get_run(run.id).params == {"a": 1, "b": 3}
        with plinth.start_run(parent=run, client=client) as child:
            pass
    assert client.get_run(child.id).parent_id == run.id
    assert client.get_run(run.id).metrics == {"m": 1.0}


def test_a_run_that_lives_on_is_made_within_the_flush_interval(
    settings: Settings, project: str
) -> None:
    settings.tracking.flush_interval_seconds = 0.05
    with Client(settings=settings) as client, Client(settings=settings) as other:
        run = plinth.start_run(project, params={"p": 1}, client=client)
        deadline = time.monotonic() + 10
        while not _runs_of(other, project, direct=True):  # as another process sees it
            assert time.monotonic() < deadline, "the held create was never sent"
            time.sleep(0.02)
        assert other.get_run(run.id).params == {"p": 1}
        run.log({"m": 2.0})
        run.end()
        assert other.get_run(run.id).metrics == {"m": 2.0}


def test_bad_input_fails_in_start_run_and_nothing_is_made(client: Client, project: str) -> None:
    with pytest.raises(plinth.InvalidInput):
        plinth.start_run("not a name!", client=client)
    with pytest.raises(plinth.errors.Unprocessable, match="250 characters"):
        plinth.start_run(project, params={"k" * 300: 1}, client=client)
    with pytest.raises(plinth.InvalidInput):
        plinth.start_run(project, name="n" * 251, client=client)
    assert _runs_of(client, project) == []


def _runs_of(client: Client, project: str, *, direct: bool = False) -> list[str]:
    """The project's runs; ``direct``: read past the SDK, which would make held runs
    first, as another process would."""
    if direct:
        held = dict(HELD)
        HELD.clear()
    try:
        return [r.id for r in client.search_runs(project)]
    except plinth.NotFound:  # not even the project
        return []
    finally:
        if direct:
            HELD.update(held)


def test_a_held_create_rides_out_an_outage_and_is_applied_once(
    client: Client, project: str
) -> None:
    real = client.create_run
    tries: list[dict[str, object]] = []

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        tries.append(kwargs)
        if len(tries) <= 2:  # the first two tries reach the server, whose answer is lost
            real(*args, **kwargs)
            raise plinth.errors.ServiceUnavailable("connection lost")
        return real(*args, **kwargs)

    client.create_run = flaky  # type: ignore[method-assign]
    run = plinth.start_run(project, client=client)
    for step in range(5):
        run.log({"m": float(step)}, step=step)
    run.flush()  # the flusher retries, with back-off, the same create and batch
    run.end()
    assert len(tries) == 3 and tries[0] == tries[1] == tries[2]
    assert [p.step for p in client.metric_history(run.id, "m")] == list(range(5))
    creates = [e for e in client.audit_events(project=project) if e.action == "runs.create"]
    assert len(creates) == 1
    assert client.get_run(run.id).status == "finished"


def test_a_refused_create_is_raised_and_makes_nothing(client: Client, project: str) -> None:
    def refuse(*_a, **_k):  # type: ignore[no-untyped-def]
        raise plinth.PermissionDenied("no write access")

    client.create_run = refuse  # type: ignore[method-assign]
    with pytest.raises(plinth.PermissionDenied), plinth.start_run(project, client=client) as run:
        run.log({"m": 1.0})
    with pytest.raises(plinth.NotFound):
        client.get_run(run.id)
    run = plinth.start_run(project, client=client)  # refused by the flusher this time
    with pytest.raises(plinth.PermissionDenied):
        run.flush()
    with pytest.raises(plinth.PermissionDenied):
        run.log({"m": 1.0})
    with pytest.raises(plinth.PermissionDenied):
        run.end()
    assert run.id not in HELD  # nothing waits for it


def test_a_run_created_ended_over_the_api(client: Client, project: str) -> None:
    run_id, batch_id = uuid.uuid4().hex, uuid.uuid4().hex
    body = {
        "id": run_id,
        "project": project,
        "params": {"lr": 0.1},
        "start_time": 1_700_000_000.0,
        "status": "failed",
        "end_time": 1_700_000_060.0,
        "batch": {"batch_id": batch_id, "metrics": _series(0.5)},
    }
    first = client._transport.request("POST", "/api/v1/runs", json=body, retry=True)
    again = client._transport.request("POST", "/api/v1/runs", json=body, retry=True)
    assert first == again  # a retry whose answer was lost: the same run, nothing added
    assert first["batch"] == batch_id and first["status"] == "failed"
    assert first["end_time"] - first["start_time"] == 60.0
    assert [p.value for p in client.metric_history(run_id, "loss")] == [0.5]
    trail = [e.action for e in client.audit_events(project=project) if e.object == run_id]
    assert trail == ["runs.create", "runs.end"]
    # an end time for a running run, or a batch over the limits: refused, nothing made
    for wrong in (
        {"project": project, "end_time": 1.0},
        {"project": project, "status": "paused"},
        {"project": project, "batch": {"batch_id": "x" * 8, "metrics": "nope"}},
    ):
        with pytest.raises(plinth.InvalidInput):
            client._transport.request("POST", "/api/v1/runs", json=wrong)
    assert [r.id for r in client.search_runs(project)] == [run_id]


def test_an_end_with_its_batch_retried_applies_the_batch_once(client: Client, project: str) -> None:
    run_id = client.create_run(project).id
    batch = (uuid.uuid4().hex, _series(0.5))
    first = client.end_run(run_id, "finished", last_batch=batch)
    again = client.end_run(run_id, "finished", last_batch=batch)  # its answer was lost
    assert first.metrics == again.metrics == {"loss": 0.5}
    assert [p.value for p in client.metric_history(run_id, "loss")] == [0.5]
    # the end itself once too: its time stays the first's, one record of it
    assert first.end_time is not None and again.end_time == first.end_time
    assert client.end_run(run_id, "finished").end_time == first.end_time
    ends = [e for e in client.audit_events(project=project) if e.object == run_id]
    assert [e.action for e in ends if e.action == "runs.end"] == ["runs.end"]
    assert client.end_run(run_id, "failed").status == "failed"  # as MLflow's set_terminated


def test_an_ended_run_refuses_a_new_batch_with_its_end_and_changes_nothing(
    client: Client, project: str
) -> None:
    run_id = client.create_run(project).id
    client.end_run(run_id, "failed")
    with pytest.raises(plinth.Conflict, match="takes no more data"):
        client.end_run(run_id, "finished", last_batch=(uuid.uuid4().hex, _series(1.0)))
    info = client.get_run(run_id)
    assert info.status == "failed" and info.metrics == {}
    assert client.metric_history(run_id, "loss") == []


def test_a_refused_last_batch_still_ends_the_run(client: Client, project: str) -> None:
    with pytest.raises(plinth.Conflict), plinth.start_run(project, client=client) as run:
        client.end_run(run.id, "killed")  # someone else ended it meanwhile
        run.log({"loss": 1.0})
    assert client.get_run(run.id).status == "finished"  # the end still happened


def test_live_runs_share_one_flusher_and_each_keeps_its_points(
    client: Client, project: str
) -> None:
    runs = [plinth.start_run(project, client=client) for _ in range(5)]
    flushers = [t for t in threading.enumerate() if t.name == "plinth-flush"]
    for step in range(300):
        for i, run in enumerate(runs):
            run.log({"m": float(i)}, step=step)
    for run in runs:
        run.flush()
    for i, run in enumerate(runs):
        run.end()
        history = client.metric_history(run.id, "m")
        assert [p.step for p in history] == list(range(300))
        assert {p.value for p in history} == {float(i)}
    assert len(flushers) == 1


def test_a_sweep_holds_no_threads_or_files(client: Client, project: str) -> None:
    for i in range(10):  # warm: the flusher, the connection pool, the event loops
        _short_run(client, project, i)
    me = psutil.Process()
    threads, files = threading.active_count(), me.num_fds()
    for i in range(10, 210):
        _short_run(client, project, i)
    assert threading.active_count() <= threads
    # Background work (the reaper, the deployments' supervisor, the job dispatcher, and
    # what earlier tests in this worker left running) may meet a request and open a few
    # more pooled connections: database files and WAL, or sockets. That is a few once,
    # not per run: 200 runs that each kept a file would show 200.
    assert me.num_fds() <= files + 8
    assert len(client.search_runs(project, limit=1000)) == 210


def test_a_server_that_ignores_an_ends_batch_still_gets_the_points(
    client: Client, project: str
) -> None:
    """A server from before ends carried batches drops the field and says nothing of
    it: the SDK sees no batch id in the answer, and sends the points the old way."""
    real = client._transport.request

    def old_server(method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
        if method == "PATCH" and isinstance(kwargs.get("json"), dict):
            kwargs["json"] = {k: v for k, v in kwargs["json"].items() if k != "batch"}
        answer = real(method, path, **kwargs)
        if method == "PATCH":
            answer.pop("batch", None)
        return answer

    client._transport.request = old_server  # type: ignore[method-assign]
    with plinth.start_run(project, params={"lr": 0.1}, client=client) as run:
        run.flush()  # made: its end is a PATCH
        run.log({"loss": 0.5, "acc": 0.01})
    info = client.get_run(run.id)
    assert info.status == "finished"
    assert info.metrics == {"loss": pytest.approx(0.5), "acc": pytest.approx(0.01)}
    assert run.info.metrics == info.metrics


def test_a_server_that_ignores_a_creates_batch_and_end_still_gets_both(
    client: Client, project: str
) -> None:
    """A server from before creates carried batches and ends makes a running run and
    drops the rest: the SDK sees no batch id and a running run, and sends both."""
    real = client._transport.request
    sent: list[str] = []

    def old_server(method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(method)
        if method == "POST" and path == "/api/v1/runs":
            kwargs["json"] = {
                k: v for k, v in kwargs["json"].items() if k not in ("batch", "status", "end_time")
            }
        answer = real(method, path, **kwargs)
        if isinstance(answer, dict):
            answer.pop("batch", None)
        return answer

    client._transport.request = old_server  # type: ignore[method-assign]
    run = _short_run(client, project, 1)
    assert sent == ["POST", "POST", "PATCH"]  # the create; its batch; its end
    info = client.get_run(run.id)
    assert info.status == "finished"
    assert info.metrics == {"loss": pytest.approx(0.5), "acc": pytest.approx(0.01)}


def test_an_end_that_gives_up_on_its_backlog_leaves_nothing_behind(
    tmp_path: Path, project: str
) -> None:
    from plinth.tracking import run as run_module
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "home")
    settings.tracking.flush_batch_points = 10
    settings.tracking.flush_timeout_seconds = 0.5
    with Client(settings=settings) as client:

        def down(*_a, **_k):  # type: ignore[no-untyped-def]
            raise plinth.errors.ServiceUnavailable("cannot reach Plinth")

        client.send_batch = down  # type: ignore[method-assign]
        run = plinth.start_run(project, client=client)
        run.flush()  # made: the outage hits its batches
        run.log_metric("m", 1.0)
        for step in range(50):  # more than a batch: a backlog the flusher must send
            run.log({"m": float(step)}, step=step)
        with pytest.raises(plinth.errors.ServiceUnavailable):
            run.end()
        assert run._logger not in run_module._flusher.loggers
        assert client.get_run(run.id).status == "finished"  # ended all the same


class _Recorder:
    """A stand-in for the client, under the flusher: when each heartbeat was sent."""

    def __init__(self) -> None:
        self.heartbeats: list[tuple[str, float]] = []

    def heartbeat(self, run_id: str) -> None:
        self.heartbeats.append((run_id, time.monotonic()))


def test_a_run_started_while_the_flusher_lingers_still_beats_on_time() -> None:
    from plinth.settings import TrackingSettings
    from plinth.tracking.run import BatchLogger

    settings = TrackingSettings(flush_interval_seconds=20.0, heartbeat_seconds=0.3)
    client = _Recorder()
    first = BatchLogger(client, "first", settings)  # type: ignore[arg-type]
    time.sleep(0.5)
    first.close()
    time.sleep(0.6)  # the flusher, past first's last beat, now lingers: it looks every 20 s
    second = BatchLogger(client, "second", settings)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        deadline = started + 5
        while time.monotonic() < deadline and not any(r == "second" for r, _ in client.heartbeats):
            time.sleep(0.05)
    finally:
        second.close()
    beats = [at - started for run, at in client.heartbeats if run == "second"]
    assert beats and beats[0] < 2.0, beats


def test_a_forked_child_waits_for_none_of_the_parents_held_runs(
    client: Client, project: str
) -> None:
    """A data loader's forked worker has no flusher: were the parent's held runs its
    to make first, each of its requests would wait for one that never comes."""
    run = plinth.start_run(project, client=client)
    assert run.id in HELD
    pid = os.fork()
    if pid == 0:  # the child: exit at once, saying whether it holds the parent's run
        os._exit(0 if run.id not in HELD else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert run.id in HELD  # still the parent's to make
    run.end()
    assert client.get_run(run.id).status == "finished"
