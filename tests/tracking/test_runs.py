"""Tracking through the SDK and the in-process app, on SQLite and on Postgres."""

from __future__ import annotations

import math

import pytest

import plinth
from plinth.client import Client
from plinth.core.platform import Platform
from plinth.tracking.service import TrackingService


def test_run_lifecycle_params_tags_and_metrics(client: Client, project: str) -> None:
    with plinth.start_run(
        project,
        name="lr-0.1",
        params={"lr": 0.1, "opt": "adam"},
        tags={"team": "vision"},
        client=client,
    ) as run:
        for step in range(50):
            run.log({"loss": 1.0 / (step + 1), "acc": step / 50}, step=step)
        assert client.get_run(run.id).status == "running"
    info = client.get_run(run.id)
    assert info.status == "finished"
    assert info.end_time is not None and info.end_time >= info.start_time
    assert info.params == {"lr": 0.1, "opt": "adam"}
    assert info.tags == {"team": "vision"}
    assert info.metrics == {"loss": pytest.approx(1 / 50), "acc": pytest.approx(49 / 50)}
    history = client.metric_history(run.id, "loss")
    assert [p.step for p in history] == list(range(50))
    assert history[3].value == pytest.approx(0.25)


def test_exception_inside_run_marks_it_failed(client: Client, project: str) -> None:
    with pytest.raises(ZeroDivisionError), plinth.start_run(project, client=client) as run:
        run.log({"x": 1.0})
        _ = 1 / 0
    info = client.get_run(run.id)
    assert info.status == "failed"
    assert info.metrics == {"x": 1.0}


def test_keyboard_interrupt_marks_run_killed(client: Client, project: str) -> None:
    with pytest.raises(KeyboardInterrupt), plinth.start_run(project, client=client) as run:
        raise KeyboardInterrupt
    assert client.get_run(run.id).status == "killed"


def test_params_are_immutable(client: Client, project: str) -> None:
    with plinth.start_run(project, params={"lr": 0.1}, client=client) as run:
        run.log_params({"lr": 0.1, "layers": 3})  # same value again is fine
        with pytest.raises(plinth.Conflict, match="immutable"):
            run.log_params({"lr": 0.2})
    assert client.get_run(run.id).params == {"lr": 0.1, "layers": 3}


def test_batch_is_applied_once_when_retried(client: Client, project: str) -> None:
    run = client.create_run(project)
    points = [{"key": "m", "value": float(i), "step": i, "timestamp": 1.0 + i} for i in range(10)]
    assert client.log_batch(run.id, metrics=points, batch_id="batch-0001") is True
    assert client.log_batch(run.id, metrics=points, batch_id="batch-0001") is False
    assert len(client.metric_history(run.id, "m")) == 10


def test_batch_is_all_or_nothing(client: Client, project: str) -> None:
    run = client.create_run(project, params={"lr": 0.1})
    points = [{"key": "m", "value": 1.0, "step": 0, "timestamp": 1.0}]
    with pytest.raises(plinth.Conflict):
        client.log_batch(run.id, metrics=points, params={"lr": 0.5})
    assert client.metric_history(run.id, "m") == []
    # the refused batch id was not recorded either: a corrected retry applies
    assert client.log_batch(run.id, metrics=points, params={"lr": 0.1}) is True


def test_latest_metric_follows_highest_step(client: Client, project: str) -> None:
    run = client.create_run(project)
    client.log_batch(run.id, metrics=[{"key": "m", "value": 5.0, "step": 10, "timestamp": 2.0}])
    client.log_batch(run.id, metrics=[{"key": "m", "value": 1.0, "step": 3, "timestamp": 9.0}])
    assert client.get_run(run.id).metrics["m"] == 5.0
    assert [p.step for p in client.metric_history(run.id, "m")] == [3, 10]


def test_of_points_tied_on_step_and_time_the_last_logged_is_the_latest(
    client: Client, project: str
) -> None:
    """In one batch as across two: the run's value is its history's last point."""
    run = client.create_run(project)
    tied = [{"key": "m", "value": v, "step": 5, "timestamp": 1.0} for v in (111.0, 222.0)]
    client.log_batch(run.id, metrics=tied)
    assert client.get_run(run.id).metrics["m"] == 222.0
    assert client.metric_history(run.id, "m")[-1].value == 222.0
    client.log_batch(run.id, metrics=[{**tied[0], "value": 333.0}])
    assert client.get_run(run.id).metrics["m"] == 333.0
    assert client.metric_history(run.id, "m")[-1].value == 333.0


@pytest.mark.parametrize("stamp", [-1.0, 2.0**37, 1e308])
def test_a_point_dated_outside_a_runs_times_is_refused(
    client: Client, project: str, stamp: float
) -> None:
    """A timestamp is seconds since the epoch, within the bounds of a run's start."""
    run = client.create_run(project)
    points = [{"key": "m", "value": 1.0, "step": 0, "timestamp": t} for t in (1.0, stamp)]
    with pytest.raises(plinth.InvalidInput):  # 422, Unprocessable
        client.log_batch(run.id, metrics=points)
    assert client.get_run(run.id).metrics == {}  # nothing of it


def test_nan_and_infinite_values_round_trip(client: Client, project: str) -> None:
    with plinth.start_run(project, client=client) as run:
        run.log({"loss": float("nan")}, step=0)
        run.log({"loss": float("inf")}, step=1)
    values = [p.value for p in client.metric_history(run.id, "loss")]
    assert math.isnan(values[0]) and values[1] == math.inf


def test_unknown_run_is_404(client: Client) -> None:
    with pytest.raises(plinth.NotFound):
        client.get_run("0" * 32)
    with pytest.raises(plinth.NotFound):
        client.log_batch("0" * 32, metrics=[])


def test_bad_keys_are_refused_before_sending(client: Client, project: str) -> None:
    for bad in ("bad\nkey", "loss\n"):  # a key ending in a newline looks like "loss"
        with plinth.start_run(project, client=client) as run, pytest.raises(plinth.InvalidInput):
            run.log({bad: 1.0})
    with pytest.raises(plinth.InvalidInput):
        client.create_run(project, params={"lr\n": 0.1})
    with pytest.raises(plinth.InvalidInput):
        client.create_run("../etc")


def test_stale_running_run_is_reaped_and_revived_by_heartbeat(
    client: Client, platform: Platform, project: str
) -> None:
    from plinth.tracking import tables as t

    run = client.create_run(project)
    svc = TrackingService(platform)
    with svc.db.write() as conn:
        conn.execute(t.runs.update().where(t.runs.c.id == run.id).values(heartbeat_at=1.0))
    assert svc.reap_stale_runs() >= 1
    reaped = client.get_run(run.id)
    assert reaped.status == "killed" and reaped.end_time == 1.0
    client.heartbeat(run.id)
    assert client.get_run(run.id).status == "running"


def test_step_defaults_to_a_counter(client: Client, project: str) -> None:
    with plinth.start_run(project, client=client) as run:
        for _ in range(3):
            run.log({"m": 1.0})
    assert [p.step for p in client.metric_history(run.id, "m")] == [0, 1, 2]


def test_system_metrics_are_sampled_when_enabled(settings, project: str) -> None:  # type: ignore[no-untyped-def]
    import time

    settings.tracking.system_metrics_seconds = 0.05
    with Client(settings=settings) as client:
        with plinth.start_run(project, client=client) as run:
            time.sleep(0.3)
        assert client.get_run(run.id).metrics["system/memory_percent"] > 0


def test_gpu_readings_are_parsed_from_nvidia_smi() -> None:
    from plinth.tracking.system_metrics import parse_nvidia_smi

    out = "0, 37, 1024, 81920\n1, [N/A], 0, 81920\nNo devices were found\n"
    values = parse_nvidia_smi(out)
    assert values["system/gpu0/utilization_percent"] == 37.0
    assert values["system/gpu0/memory_used_gb"] == pytest.approx(1.073741824)
    assert values["system/gpu0/memory_percent"] == pytest.approx(1.25)
    assert "system/gpu1/utilization_percent" not in values
    assert values["system/gpu1/memory_used_gb"] == 0.0


@pytest.mark.parametrize(
    "series",
    [
        {"key": "m", "steps": [2**63], "values": [1.0], "timestamps": [1.0]},
        {"key": "m", "steps": [0], "values": [1.0], "timestamps": [float("nan")]},
        {"key": "m", "steps": [0, 1], "values": [1.0], "timestamps": [1.0, 2.0]},
        {"key": "bad key!", "steps": [0], "values": [1.0], "timestamps": [1.0]},
        {"key": "m", "steps": [0], "values": [True], "timestamps": [1.0]},  # not 1.0
        {"key": "m", "steps": [0], "values": ["1.5"], "timestamps": [1.0]},  # text
    ],
)
def test_malformed_series_are_refused(client: Client, project: str, series: dict) -> None:  # type: ignore[type-arg]
    run = client.create_run(project)
    with pytest.raises(plinth.InvalidInput):
        client.send_batch(run.id, "batch-bad-0001", [series])
    assert client.get_run(run.id).metrics == {}


def test_non_finite_values_and_integers_are_metric_values(client: Client, project: str) -> None:
    run = client.create_run(project)
    values = [float("nan"), float("inf"), -float("inf"), 3]
    series = {"key": "m", "steps": [0, 1, 2, 3], "values": values, "timestamps": [1.0] * 4}
    client.send_batch(run.id, "batch-ok-0001", [series])
    got = [p.value for p in client.metric_history(run.id, "m")]
    assert math.isnan(got[0]) and got[1:] == [float("inf"), -float("inf"), 3.0]


def test_runs_are_found_by_a_unique_id_prefix(client: Client, project: str) -> None:
    run = client.create_run(project)
    assert client.get_run(run.id[:8]).id == run.id
    with pytest.raises(plinth.NotFound):
        client.get_run(run.id[:7])  # too short to be taken as a prefix


def test_numpy_values_are_sent_as_plain_numbers(client: Client, project: str) -> None:
    import numpy as np

    run = client.create_run(project, params={"lr": np.float32(0.5), "layers": np.int64(3)})
    assert client.get_run(run.id).params == {"lr": 0.5, "layers": 3}
    with pytest.raises(plinth.InvalidInput):
        client.search_runs(project, limit=0)


def test_a_deleted_run_is_kept_out_of_searches_and_restorable(client: Client, project: str) -> None:
    kept = client.create_run(project, "kept")
    gone = client.create_run(project, "gone")
    client.log_batch(gone.id, metrics=[{"key": "acc", "value": 0.9, "step": 0}])
    deleted = client.delete_run(gone.id)
    assert deleted.deleted_at is not None and deleted.metrics == {"acc": 0.9}
    assert client.delete_run(gone.id).deleted_at == deleted.deleted_at  # again: no change
    names = lambda **kw: [r.name for r in client.search_runs(project, order_by="name", **kw)]  # noqa: E731
    assert names() == ["kept"]
    assert names(lifecycle="deleted") == ["gone"]
    assert names(lifecycle="all") == ["gone", "kept"]
    assert names(filter="metrics.acc > 0.5") == []  # a filter never reaches a deleted run
    assert client.get_run(gone.id).deleted_at == deleted.deleted_at  # still readable by id
    assert client.restore_run(gone.id).deleted_at is None
    assert names() == ["gone", "kept"]
    actions = [e.action for e in client.audit_events(project=project) if e.object == gone.id]
    assert actions.count("runs.delete") == 1 and actions.count("runs.restore") == 1
    assert client.get_run(kept.id).deleted_at is None
