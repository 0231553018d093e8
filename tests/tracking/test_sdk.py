"""The SDK as MLflow users expect it: resume, nested runs, the log_* calls, per-key
steps, artifact names, and a finished run that takes no more data on any path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import plinth
from plinth.client import Client
from plinth.core.platform import Platform
from plinth.tracking import tables as t
from plinth.tracking.service import TrackingService
from tests.conftest import raw_http


def _steps(client: Client, run_id: str, key: str) -> list[int]:
    return [p.step for p in client.metric_history(run_id, key)]


def test_resume_continues_a_finished_run(client: Client, project: str) -> None:
    with plinth.start_run(project, name="first", client=client) as run:
        run.log({"loss": 1.0})
        run.log({"loss": 0.5})
    assert client.get_run(run.id).status == "finished"
    with plinth.start_run(run_id=run.id[:8], tags={"phase": "2"}, client=client) as again:
        info = client.get_run(run.id)
        assert again.id == run.id and info.status == "running" and info.end_time is None
        again.log({"loss": 0.25})  # automatic steps go on after the latest
    info = client.get_run(run.id)
    assert info.status == "finished" and info.tags == {"phase": "2"}
    assert _steps(client, run.id, "loss") == [0, 1, 2]


def test_resume_takes_a_failed_or_running_run_and_checks_what_it_is_given(
    client: Client, project: str
) -> None:
    failed = client.create_run(project, name="crashed")
    client.end_run(failed.id, "failed")
    resumed = plinth.start_run(project, run_id=failed.id, client=client)
    assert client.get_run(failed.id).status == "running"
    running = plinth.start_run(run_id=failed.id, client=client)  # a second handle
    running.end()
    resumed.end()
    with pytest.raises(plinth.InvalidInput, match="has project"):
        plinth.start_run(f"{project}-other", run_id=failed.id, client=client)
    with pytest.raises(plinth.InvalidInput, match="has name 'crashed', not 'x'"):
        plinth.start_run(name="x", run_id=failed.id, client=client)
    with pytest.raises(plinth.NotFound):
        plinth.start_run(run_id="0" * 32, client=client)
    assert client.get_run(failed.id).status == "finished"


def test_nested_runs_name_their_parent(client: Client, project: str) -> None:
    with plinth.start_run(project, name="sweep", client=client) as parent:
        with plinth.start_run(parent=parent, name="trial-0", client=client) as child:
            pass
        plinth.start_run(parent=parent.id, name="trial-1", client=client).end()
    assert child.info.project == project
    assert client.get_run(child.id).parent_id == parent.id
    assert client.get_run(parent.id).parent_id is None
    page = client.search_runs(project, filter=f"parent_id = '{parent.id}'", order_by="name")
    assert [r.name for r in page] == ["trial-0", "trial-1"]
    elsewhere = client.create_run(f"{project}-b")
    for parent_id in (elsewhere.id, "0" * 32):  # elsewhere and nowhere: the same answer
        with pytest.raises(plinth.InvalidInput, match="is not a run of project"):
            client.create_run(project, parent_id=parent_id)
    with pytest.raises(plinth.InvalidInput, match="needs a project"):
        plinth.start_run(client=client)


def test_mlflow_style_logging_calls(client: Client, project: str) -> None:
    with plinth.start_run(project, client=client) as run:
        run.log_metric("loss", 0.5)
        run.log_metric("loss", 0.25)
        run.log_metric("acc", 0.9, step=10)
        run.log_param("lr", 0.1)
        run.log_params({"layers": 3})
        run.set_tag("team", "cv")
        run.set_tags({"stage": 1})
    info = client.get_run(run.id)
    assert info.params == {"lr": 0.1, "layers": 3}
    assert info.tags == {"team": "cv", "stage": "1"}
    assert info.metrics == {"loss": 0.25, "acc": 0.9}
    assert _steps(client, run.id, "loss") == [0, 1] and _steps(client, run.id, "acc") == [10]


def test_each_metric_counts_its_own_steps(client: Client, project: str) -> None:
    with plinth.start_run(project, client=client) as run:
        run.log({"a": 1.0})
        run.log({"b": 2.0})
        run.log({"a": 3.0, "b": 4.0})
        run.log({"b": 5.0}, step=7)
        run.log({"b": 6.0})
    assert _steps(client, run.id, "a") == [0, 1]
    assert _steps(client, run.id, "b") == [0, 1, 7, 8]


def test_a_metric_that_is_not_a_number_names_its_key(client: Client, project: str) -> None:
    import numpy as np

    with plinth.start_run(project, client=client) as run:
        with pytest.raises(plinth.InvalidInput, match="metric 'acc' must be a number; got str"):
            run.log({"loss": 1.0, "acc": "0.9"})
        with pytest.raises(plinth.InvalidInput, match="metric 'x' must be a number; got NoneType"):
            run.log_metric("x", None)  # type: ignore[arg-type]
        run.log({"np": np.float32(0.5)})
    assert client.get_run(run.id).metrics == {"np": 0.5}  # nothing of a refused call went
    assert _steps(client, run.id, "np") == [0]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    (folder / "tmp").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "tmp" / "b.txt").write_text("b")
    return folder


def _paths(client: Client, run_id: str, path: str | None = None) -> list[str]:
    return [a.path for a in client.list_artifacts(run_id, path)]


def test_a_directory_logged_without_a_name_keeps_its_own(
    client: Client, project: str, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(results)
    run = client.create_run(project)
    client.log_artifact(run.id, ".")
    client.log_artifact(run.id, "tmp/")
    client.log_artifact(run.id, Path("tmp") / "..", name="again/")
    assert _paths(client, run.id) == [
        "again/a.txt",
        "again/tmp/b.txt",
        "results/a.txt",
        "results/tmp/b.txt",
        "tmp/b.txt",
    ]
    with pytest.raises(plinth.InvalidInput, match="no name of its own"):
        client.log_artifact(run.id, "/")


def test_log_artifacts_and_list_under_a_path(
    client: Client, project: str, results: Path, tmp_path: Path
) -> None:
    with plinth.start_run(project, client=client) as run:
        run.log_artifacts(str(results))  # what the folder holds, at the top, as MLflow does
        run.log_artifacts(str(results), name="plots")
        for folder in ("a_b", "axb"):  # LIKE wildcards in a path are plain characters
            run.log_artifact(str(results / "a.txt"), name=f"{folder}/a.txt")
        with pytest.raises(plinth.InvalidInput, match="no such directory"):
            run.log_artifacts(str(results / "a.txt"))
    assert _paths(client, run.id, "plots") == ["plots/a.txt", "plots/tmp/b.txt"]
    assert _paths(client, run.id, "plots/tmp/") == ["plots/tmp/b.txt"]
    assert _paths(client, run.id, "tmp") == ["tmp/b.txt"]
    assert _paths(client, run.id, "a_b") == ["a_b/a.txt"]
    assert _paths(client, run.id, "a.txt") == [] and _paths(client, run.id, "plot") == []
    assert len(_paths(client, run.id)) == 6
    listed = raw_http(client).get(f"/api/v1/runs/{run.id}/artifacts", params={"path": "tmp"})
    assert [a["path"] for a in listed.json()] == ["tmp/b.txt"]  # filtered by the server
    with pytest.raises(plinth.InvalidInput):
        client.list_artifacts(run.id, "../tmp")


def test_a_finished_run_takes_no_more_data_on_any_path(
    client: Client, project: str, tmp_path: Path
) -> None:
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"kept")
    run = client.create_run(project, params={"lr": 0.1})
    point = {"key": "m", "value": 1.0, "step": 0, "timestamp": 1.0}
    client.log_batch(run.id, metrics=[point], batch_id="batch-0001")
    client.log_artifact(run.id, kept)
    client.end_run(run.id)
    before = client.get_run(run.id), client.list_artifacts(run.id)
    digest = hashlib.sha256(b"kept").hexdigest()
    refused = {
        "metrics": lambda: client.log_batch(run.id, metrics=[{**point, "step": 1}]),
        "params": lambda: client.log_batch(run.id, params={"layers": 3}),
        "tags": lambda: client.log_batch(run.id, tags={"t": "x"}),
        "register": lambda: client.register_artifact(run.id, "copy.bin", digest, 4),
        "upload": lambda: client.log_artifact(run.id, kept, name="again.bin"),
    }
    for what, call in refused.items():
        with pytest.raises(plinth.Conflict, match="is finished and takes no more data"):
            call()
        assert (client.get_run(run.id), client.list_artifacts(run.id)) == before, what
    put = raw_http(client).put(f"/api/v1/runs/{run.id}/artifacts/new.bin", content=b"new")
    assert put.status_code == 409
    assert client.log_batch(run.id, metrics=[point], batch_id="batch-0001") is False  # a retry
    client.heartbeat(run.id)  # a heartbeat does not revive a run its owner ended
    assert (client.get_run(run.id), client.list_artifacts(run.id)) == before


def test_a_run_handle_ended_elsewhere_reports_the_conflict(client: Client, project: str) -> None:
    run = plinth.start_run(project, client=client)
    client.end_run(run.id)
    run.log({"m": 1.0})
    with pytest.raises(plinth.Conflict):
        run.flush()
    with pytest.raises(plinth.Conflict):
        run.log_params({"lr": 0.1})
    with pytest.raises(plinth.Conflict):
        run.end()
    assert client.get_run(run.id).metrics == {}


def test_a_run_the_reaper_killed_takes_data_and_comes_back(
    client: Client, platform: Platform, project: str, tmp_path: Path
) -> None:
    run = client.create_run(project)
    svc = TrackingService(platform)
    with svc.db.write() as conn:
        conn.execute(t.runs.update().where(t.runs.c.id == run.id).values(heartbeat_at=1.0))
    svc.reap_stale_runs()
    assert client.get_run(run.id).status == "killed"
    (tmp_path / "late.txt").write_text("late")
    client.log_artifact(run.id, tmp_path / "late.txt")
    assert client.get_run(run.id).status == "running"
    with svc.db.write() as conn:
        conn.execute(t.runs.update().where(t.runs.c.id == run.id).values(heartbeat_at=1.0))
    svc.reap_stale_runs()
    client.log_batch(run.id, metrics=[{"key": "m", "value": 1.0}])
    assert client.get_run(run.id).status == "running"
