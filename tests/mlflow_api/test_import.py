"""``plinth import mlflow`` on a store MLflow itself made (SQLite and its artifact
folder): every run, point, param, tag and artifact byte arrives, a second import adds
nothing, and an import cut short completes when run again."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from plinth.client import Client
from plinth.governance.identity import init_admin
from plinth.mlflow.importer import Importer, SqlStore, batch_id, project_name
from plinth.tracking.client import to_series
from tests.conftest import make_settings, raw_http
from tests.processes import Processes

pytestmark = pytest.mark.slow
PLINTH = Path(sys.executable).parent / "plinth"

MAKE_STORE = textwrap.dedent(
    """
    import hashlib, json, os, sys, tempfile
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    store = sys.argv[1]
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    client = MlflowClient()
    files = tempfile.mkdtemp()
    os.makedirs(os.path.join(files, "plots"))
    for name, data in (("notes.txt", b"hello"), ("plots/a.bin", os.urandom(300_000)),
                       ("plots/b.txt", b"b")):
        with open(os.path.join(files, name), "wb") as f:
            f.write(data)

    mlflow.set_experiment("churn")
    with mlflow.start_run(run_name="good"):
        mlflow.log_params({"lr": "0.1", "depth": "3"})
        for step in range(300):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metric("odd", float("nan"), step=0)
        mlflow.set_tag("team", "vision")
        mlflow.log_artifact(os.path.join(files, "notes.txt"))
        mlflow.log_artifacts(os.path.join(files, "plots"), artifact_path="plots")
    with mlflow.start_run(run_name="broken"):
        mlflow.log_param("lr", "0.5")
        mlflow.log_metric("loss", 9.0)
    client.set_terminated(mlflow.last_active_run().info.run_id, "FAILED")
    with mlflow.start_run(run_name="gone") as gone:
        mlflow.log_metric("loss", 1.0)
    client.delete_run(gone.info.run_id)
    mlflow.set_experiment("/Users/ann/odd name")
    with mlflow.start_run(run_name="elsewhere") as other:
        mlflow.log_metric("acc", 0.5, step=1)
    still = client.create_run(other.info.experiment_id, run_name="crashed")  # never ended
    client.log_metric(still.info.run_id, "acc", 0.25)
    client.create_experiment("empty")

    # models: two versions of an sklearn model saved with skops (an alias on the second),
    # and a pickled one registered as it is logged
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.4], [0.9, 0.1]])
    mlflow.set_experiment("models")
    logged = {}
    with mlflow.start_run(run_name="fit") as fit:
        for c in (1.0, 0.5):
            fitted = LogisticRegression(C=c).fit(X, [0, 1, 0, 1])
            info = mlflow.sklearn.log_model(fitted, name="model", serialization_format="skops")
            logged[info.model_id] = mlflow.register_model(info.model_uri, "churn-model").version
        info = mlflow.sklearn.log_model(
            fitted, name="pickled", serialization_format="cloudpickle",
            registered_model_name="churn-pickled",
        )
        logged[info.model_id] = "1"
    client.set_registered_model_alias("churn-model", "champion", "2")
    client.set_registered_model_tag("churn-model", "owner", "ann")
    client.set_experiment_tag(fit.info.experiment_id, "team", "ranking")

    def files_of(root):
        root = root.removeprefix("file://")
        found = {}
        for folder, _, names in os.walk(root):
            for name in names:
                with open(os.path.join(folder, name), "rb") as f:
                    found[os.path.relpath(os.path.join(folder, name), root)] = (
                        hashlib.sha256(f.read()).hexdigest()
                    )
        return found

    models = {
        model_id: files_of(mlflow.get_logged_model(model_id).artifact_location)
        for model_id in logged
    }
    versions = [
        [v.name, v.version, v.run_id, v.source]
        for name in ("churn-model", "churn-pickled")
        for v in client.search_model_versions(f"name='{name}'")
    ]

    truth = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            history = lambda key: client.get_metric_history(run.info.run_id, key)
            histories = {
                key: [(m.step, m.timestamp, m.value) for m in history(key)]
                for key in run.data.metrics
            }
            artifacts = files_of(run.info.artifact_uri)
            truth[run.info.run_id] = {
                "experiment": experiment.name,
                "name": run.info.run_name,
                "status": run.info.status,
                "start_time": run.info.start_time,
                "end_time": run.info.end_time,
                "params": run.data.params,
                "tags": {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"},
                "histories": histories,
                "artifacts": artifacts,
            }
    print(json.dumps({
        "runs": truth, "deleted": gone.info.run_id, "fit": fit.info.run_id,
        "models": models, "versions": versions,
    }))
    """
)


def make_store(python: Path, where: Path) -> dict[str, Any]:
    where.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "MLFLOW_"))}
    done = subprocess.run(
        [str(python), "-c", MAKE_STORE, str(where)],
        cwd=where,  # MLflow puts ./mlruns here
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def import_cli(home: Path, store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")}
    env["PLINTH_HOME"] = str(home)
    source = f"sqlite:///{store / 'mlflow.db'}"
    command = [str(PLINTH), "import", "mlflow", "--from", source, *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_an_mlflow_store_moves_over_whole_and_once(tmp_path: Path, mlflow_python: Path) -> None:
    truth = make_store(mlflow_python, tmp_path / "store")
    runs = truth["runs"]
    assert len(runs) == 5 and truth["deleted"] not in runs
    home = tmp_path / "home"

    done = import_cli(home, tmp_path / "store", "--report", str(tmp_path / "report.json"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["experiments"], report["runs"], report["already"]) == (5, 5, 0)
    assert (report["models"], report["versions"], report["aliases"]) == (3, 3, 1)
    assert report["projects"]["/Users/ann/odd name"] == "Users-ann-odd-name"
    skipped = dict(map(tuple, report["skipped"]))
    assert skipped[f"run {truth['deleted']}"] == "deleted in MLflow"
    assert "RUNNING in MLflow: ended killed" in json.dumps(report["skipped"])
    assert "Users-ann-odd-name" in done.stdout  # the renamed experiment is told

    with Client(settings=make_settings(home)) as plinth:
        projects = {p.name for p in plinth.list_projects()}
        assert {"churn", "Users-ann-odd-name", "empty", "Default"} <= projects
        for run_id, want in runs.items():
            run = plinth.get_run(run_id)
            assert run.project == project_name(want["experiment"], "", set())
            assert run.name == want["name"]
            expected = {"FINISHED": "finished", "FAILED": "failed"}.get(want["status"], "killed")
            assert run.status == expected
            assert run.start_time == want["start_time"] / 1000
            if want["end_time"]:
                assert run.end_time == want["end_time"] / 1000
            assert run.params == want["params"]
            assert run.tags == want["tags"]
            for key, points in want["histories"].items():
                got = [(p.step, p.timestamp, p.value) for p in plinth.metric_history(run_id, key)]
                assert len(got) == len(points)
                for (step, stamp, value), (s, t, v) in zip(got, points, strict=True):
                    assert (step, stamp) == (s, t / 1000)
                    assert (math.isnan(value) and math.isnan(v)) or value == v
            stored = {a.path: a.digest for a in plinth.list_artifacts(run_id)}
            if run_id == truth["fit"]:  # its logged models' files are its artifacts too
                for model_id, files in truth["models"].items():
                    want["artifacts"] |= {f"models/{model_id}/{p}": d for p, d in files.items()}
            assert stored == want["artifacts"]
        # Every model version, from the same files, with its alias; the pickled one flagged.
        for name, number, run_id, source in truth["versions"]:
            version = plinth.get_model_version("models", name, number)
            model_id = source.removeprefix("models:/")
            assert (version.run_id, version.artifact_path) == (run_id, f"models/{model_id}")
            where = tmp_path / "versions" / f"{name}-{number}"
            plinth.download_model(f"models:/models/{name}/{number}", where)
            files = {
                str(f.relative_to(where)): hashlib.sha256(f.read_bytes()).hexdigest()
                for f in where.rglob("*")
                if f.is_file()
            }
            assert files == truth["models"][model_id]
            pickled = name == "churn-pickled"
            assert (version.flavor, version.needs_pickle) == (
                ("mlflow", True) if pickled else ("sklearn", False)
            )
        assert plinth.get_model("models", "churn-model").aliases == {"champion": 2}
        # MLflow's own tags of experiments and registered models, through its API
        http, api = raw_http(plinth), "/mlflow/api/2.0/mlflow"
        got = http.get(f"{api}/experiments/get-by-name", params={"experiment_name": "models"})
        assert {"key": "team", "value": "ranking"} in got.json()["experiment"]["tags"]
        got = http.get(f"{api}/registered-models/get", params={"name": "churn-model"})
        assert got.json()["registered_model"]["tags"] == [{"key": "owner", "value": "ann"}]
        before = [plinth.get_run(run_id) for run_id in runs]

    # Again: nothing new.
    again = import_cli(home, tmp_path / "store", "--report", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr
    report = json.loads((tmp_path / "again.json").read_text())
    assert (report["runs"], report["already"], report["points"]) == (0, 5, 0)
    assert (report["versions"], report["versions_already"], report["aliases"]) == (0, 3, 0)
    assert report["tags"] == 0  # the experiments' and models' tags are there already
    with Client(settings=make_settings(home)) as plinth:
        assert [plinth.get_run(run_id) for run_id in runs] == before
        good = next(i for i, r in runs.items() if r["name"] == "good")
        assert len(plinth.metric_history(good, "loss")) == 300


def test_an_import_cut_short_completes_when_run_again(tmp_path: Path, mlflow_python: Path) -> None:
    truth = make_store(mlflow_python, tmp_path / "store")
    home = tmp_path / "home"
    store = SqlStore(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")

    def cut(run: Any) -> None:
        raise KeyboardInterrupt  # Ctrl-C after the first run

    with Client(settings=make_settings(home)) as plinth:
        importer = Importer(plinth, store, None, on_run=cut)
        planned = importer.plan()
        with pytest.raises(KeyboardInterrupt):
            importer.run(planned)
        # The second run half-way: made, its batch sent, not ended.
        [(experiment, second), *_] = [
            (e, r) for e, runs in planned for r in runs if r.id != _first(planned).id
        ]
        plinth.create_run(project_name(experiment.name, experiment.id, set()), id=second.id)
        points = to_series(store.metrics(second.id))
        plinth.send_batch(second.id, batch_id(second.id), points, store.params(second.id))
        importer = Importer(plinth, store, None)
        report = importer.run(importer.plan())
    store.close()
    assert (report.runs, report.already) == (4, 1)
    with Client(settings=make_settings(home)) as plinth:
        for run_id, want in truth["runs"].items():
            run = plinth.get_run(run_id)
            assert run.params == want["params"] and run.status != "running"
            for key, points in want["histories"].items():
                assert len(plinth.metric_history(run_id, key)) == len(points)  # once each


def _first(planned: list[Any]) -> Any:
    return next(run for _, runs in planned for run in runs)


def test_a_store_that_is_not_mlflows_is_refused(tmp_path: Path) -> None:
    (tmp_path / "other.db").write_bytes(b"")
    for source in (f"sqlite:///{tmp_path / 'missing.db'}", f"sqlite:///{tmp_path / 'other.db'}"):
        done = subprocess.run(
            [str(PLINTH), "import", "mlflow", "--from", source],
            env={**os.environ, "PLINTH_HOME": str(tmp_path / "home")},
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0
        assert "MLflow" in done.stderr + done.stdout
        assert "Traceback" not in done.stderr


SERVER_STORE = textwrap.dedent(
    """
    import os, tempfile
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    files = tempfile.mkdtemp()
    os.makedirs(os.path.join(files, "sub"))
    with open(os.path.join(files, "sub", "x.txt"), "w") as f:
        f.write("x")
    with open(os.path.join(files, "y.bin"), "wb") as f:
        f.write(os.urandom(50_000))
    mlflow.set_experiment("hist")
    with mlflow.start_run(run_name="a"):
        mlflow.log_params({"lr": 0.1})
        for step in range(40):
            mlflow.log_metric("loss", 1 / (step + 1), step=step)
        mlflow.log_metric("odd", float("nan"))
        mlflow.set_tag("team", "vision")
        mlflow.log_artifacts(files)
    with mlflow.start_run(run_name="gone") as gone:
        mlflow.log_metric("loss", 1.0)
    MlflowClient().delete_run(gone.info.run_id)
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.4], [0.9, 0.1]])
    mlflow.set_experiment("reg")
    with mlflow.start_run(run_name="fit"):
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(X, [0, 1, 0, 1]), name="model", serialization_format="skops"
        )
    version = mlflow.register_model(info.model_uri, "churn-model")
    MlflowClient().set_registered_model_alias("churn-model", "champion", version.version)
    """
)


def test_a_running_server_is_imported_through_its_api(
    processes: Processes, tmp_path: Path, mlflow_python: Path
) -> None:
    """``--from http://…``: the same import over MLflow's REST API, artifacts downloaded
    through its proxied artifact API (the source here is a Plinth server speaking
    MLflow's API, with auth on: the token is MLflow's ``MLFLOW_TRACKING_TOKEN``)."""
    from tests.mlflow_api.test_mlflow_client import mlflow_run

    token = init_admin(make_settings(tmp_path / "source"), "root").token.token
    source = processes.server(tmp_path / "source")
    mlflow_run(mlflow_python, SERVER_STORE + "\nprint('{}')", source.url, token)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "MLFLOW_"))}
    command = [str(PLINTH), "import", "mlflow", "--from", f"{source.url}/mlflow"]
    for attempt in ("first", "again"):
        report = tmp_path / f"{attempt}.json"
        done = subprocess.run(
            [*command, "--report", str(report)],
            env={**env, "PLINTH_HOME": str(home), "MLFLOW_TRACKING_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads((tmp_path / "first.json").read_text())
    again = json.loads((tmp_path / "again.json").read_text())
    assert (first["runs"], first["versions"], first["aliases"]) == (2, 1, 1)
    assert (again["runs"], again["already"], again["versions"], again["points"]) == (0, 2, 0, 0)
    assert any(why == "deleted in MLflow" for _, why in first["skipped"])

    settings = make_settings(tmp_path / "reader")
    with (
        Client(settings=settings.model_copy(update={"url": source.url, "token": token})) as was,
        Client(settings=make_settings(home)) as now,
    ):
        for project in ("hist", "reg"):
            for run in was.search_runs(project):
                got = now.get_run(run.id)
                assert (got.project, got.name, got.status) == (project, run.name, run.status)
                assert (got.params, got.tags) == (run.params, run.tags)
                for key in run.metrics:
                    before = [(p.step, p.value) for p in was.metric_history(run.id, key)]
                    after = [(p.step, p.value) for p in now.metric_history(run.id, key)]
                    assert len(after) == len(before)
                    assert all(
                        a == b or (math.isnan(a[1]) and math.isnan(b[1]))
                        for a, b in zip(after, before, strict=True)
                    )
                digests = lambda c, r=run.id: {a.path: a.digest for a in c.list_artifacts(r)}  # noqa: E731
                assert digests(now) == digests(was)
        version = now.get_model_version("reg", "churn-model", 1)
        assert version.digest == was.get_model_version("reg", "churn-model", 1).digest
        assert (version.flavor, version.aliases) == ("sklearn", ["champion"])
