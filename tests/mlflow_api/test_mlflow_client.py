"""The real MLflow client (its own virtualenv) against a real ``plinth server``: what
MLflow code logs is what Plinth's own SDK reads back, under Plinth's roles and audit."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plinth.client import Client
from plinth.governance.identity import init_admin
from plinth.registry.flavors import load_model
from tests.conftest import make_settings
from tests.processes import Processes

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys, tempfile
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    files = tempfile.mkdtemp()
    os.makedirs(os.path.join(files, "plots", "deep"))
    with open(os.path.join(files, "notes.txt"), "w") as f:
        f.write("hello")
    with open(os.path.join(files, "plots", "a.bin"), "wb") as f:
        f.write(bytes(range(256)) * 4000)
    with open(os.path.join(files, "plots", "deep", "b.txt"), "w") as f:
        f.write("b")
    big = os.path.join(files, "big.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(3_500_000))
    # Over this size MLflow's client uploads in parts, when the server's info says it
    # may: counted here, so the test knows the parts path was taken.
    os.environ["MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE"] = "1000000"
    os.environ["MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE"] = "1000000"
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
    completed = []
    _complete = HttpArtifactRepository.complete_multipart_upload
    def _counted(self, *args, **kwargs):
        completed.append(len(kwargs.get("parts") or args[2]))
        return _complete(self, *args, **kwargs)
    HttpArtifactRepository.complete_multipart_upload = _counted

    def models(client):
        # log an sklearn model with skops and one with cloudpickle, register both, set
        # an alias, and load the model back by it
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.4], [0.9, 0.1]])
        clf = LogisticRegression().fit(X, [0, 1, 0, 1])
        mlflow.set_experiment("churn-models")
        with mlflow.start_run(run_name="fit") as fit:
            mlflow.log_input(mlflow.data.from_numpy(X, name="train"), context="training")
            logged = mlflow.sklearn.log_model(
                clf, name="model", serialization_format="skops", input_example=X[:2]
            )
            mlflow.sklearn.log_model(
                clf,
                name="pickled",
                serialization_format="cloudpickle",
                registered_model_name="churn-pickled",
            )
        version = mlflow.register_model(logged.model_uri, "churn-model")
        client.set_registered_model_alias("churn-model", "champion", version.version)
        client.set_registered_model_tag("churn-model", "owner", "ann")
        loaded = mlflow.sklearn.load_model("models:/churn-model@champion")
        by_run = mlflow.pyfunc.load_model(f"runs:/{fit.info.run_id}/model")
        where = mlflow.artifacts.download_artifacts(
            "models:/churn-model@champion", dst_path=tempfile.mkdtemp()
        )
        [read] = client.get_run(fit.info.run_id).inputs.dataset_inputs
        return {
            "input": [read.dataset.name, read.dataset.source_type, read.tags[0].value],
            "model_id": logged.model_id,
            "fit_run": fit.info.run_id,
            "version": version.version,
            "predicted": loaded.predict(X).tolist(),
            "by_run": by_run.predict(X).tolist(),
            "model_files": sorted(os.listdir(where)),
            "champion": client.get_model_version_by_alias("churn-model", "champion").version,
            "model_tags": client.get_registered_model("churn-model").tags,
            "versions": [
                (v.name, v.version, v.run_id)
                for v in client.search_model_versions("name='churn-model'")
            ],
        }

    mlflow.set_experiment("churn")
    with mlflow.start_run(run_name="first") as run:
        mlflow.log_artifact(os.path.join(files, "notes.txt"))
        mlflow.log_artifacts(os.path.join(files, "plots"), artifact_path="plots")
        mlflow.log_artifact(big, artifact_path="big")
        mlflow.log_param("lr", 0.1)
        mlflow.log_params({"depth": 3, "kind": "gbm"})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=4)
        mlflow.set_tag("team", "vision")
        MlflowClient().log_batch(
            run.info.run_id,
            metrics=[Metric("batch", float(i), 1_700_000_000_000 + i, i) for i in range(50)],
            params=[Param("batched", "yes")],
            tags=[RunTag("stage", "dev")],
        )
    with mlflow.start_run(run_name="second"):
        mlflow.log_param("lr", 0.2)
        mlflow.log_metric("acc", 0.5)
    client = MlflowClient()
    client.set_tag(run.info.run_id, "scratch", "x")
    client.delete_tag(run.info.run_id, "scratch")
    client.set_experiment_tag(run.info.experiment_id, "owner", "vision-team")
    scratch = client.create_experiment("churn-scratch", tags={"kind": "trial"})
    client.delete_experiment(scratch)
    stages = [client.get_experiment(scratch).lifecycle_stage]
    client.restore_experiment(scratch)
    stages.append(client.get_experiment(scratch).lifecycle_stage)
    with mlflow.start_run(run_name="third") as third:
        mlflow.log_metric("acc", 0.99)
    client.delete_run(third.info.run_id)
    deleted = mlflow.search_runs(
        experiment_names=["churn"], run_view_type=2, output_format="list"
    )
    got = client.get_run(run.info.run_id)
    found = mlflow.search_runs(
        experiment_names=["churn"],
        filter_string="params.lr = '0.1' and metrics.acc > 0.5",
        order_by=["metrics.acc DESC"],
        output_format="list",
    )
    ordered = mlflow.search_runs(
        experiment_names=["churn"], order_by=["metrics.acc ASC"], output_format="list"
    )
    by_name = mlflow.search_runs(
        experiment_names=["churn"],
        filter_string="tags.\\"mlflow.runName\\" = 'second'",
        output_format="list",
    )
    listing = lambda path=None: sorted(
        (f.path, f.is_dir, f.file_size) for f in client.list_artifacts(run.info.run_id, path)
    )
    fetched = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="plots", dst_path=tempfile.mkdtemp()
    )
    downloaded = {}
    for folder, _, names in os.walk(fetched):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                relative = os.path.relpath(os.path.join(folder, name), fetched)
                downloaded[relative] = hashlib.sha256(f.read()).hexdigest()
    print(json.dumps({
        "root": listing(),
        "plots": listing("plots"),
        "downloaded": downloaded,
        "big": hashlib.sha256(open(big, "rb").read()).hexdigest(),
        "multipart": completed,
        "experiment_tags": client.get_experiment(run.info.experiment_id).tags,
        "scratch": stages + [client.get_experiment(scratch).tags],
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "status": got.info.status,
        "name": got.info.run_name,
        "params": got.data.params,
        "metrics": got.data.metrics,
        "tags": {k: v for k, v in got.data.tags.items() if not k.startswith("mlflow.")},
        "loss": [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")],
        "batch": len(client.get_metric_history(run.info.run_id, "batch")),
        "found": [r.info.run_id for r in found],
        "ordered": [r.info.run_name for r in ordered],
        "by_name": [r.info.run_name for r in by_name],
        "experiment": mlflow.get_experiment_by_name("churn").experiment_id,
        "deleted": [r.info.run_name for r in deleted],
        "third": client.get_run(third.info.run_id).info.lifecycle_stage,
        **models(client),
    }))
    """
)

REFUSED = textwrap.dedent(
    """
    import json, sys
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    answers = {}
    try:
        MlflowClient().log_metric(sys.argv[1], "m", 1.0)
    except MlflowException as exc:
        answers["log"] = exc.error_code
    answers["read"] = MlflowClient().get_run(sys.argv[1]).info.status
    print(json.dumps(answers))
    """
)

OUTSIDER = textwrap.dedent(
    """
    import json, sys
    import mlflow
    from mlflow.exceptions import MlflowException

    answers = {"by_name": mlflow.get_experiment_by_name("churn")}
    try:
        mlflow.MlflowClient().get_run(sys.argv[1])
    except MlflowException as exc:
        answers["run"] = exc.error_code
    print(json.dumps(answers))
    """
)


def mlflow_run(python: Path, script: str, url: str, token: str, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "MLFLOW_"))}
    env |= {
        "MLFLOW_TRACKING_URI": f"{url}/mlflow",
        "MLFLOW_TRACKING_TOKEN": token,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    done = subprocess.run(
        [str(python), "-c", script, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_mlflow_code_logs_to_plinth_unchanged(
    processes: Processes, tmp_path: Path, mlflow_python: Path
) -> None:
    root_token = init_admin(make_settings(tmp_path / "home"), "root").token.token
    server = processes.server(tmp_path / "home")
    settings = make_settings(tmp_path / "sdk").model_copy(update={"url": server.url})
    with Client(settings=settings.model_copy(update={"token": root_token})) as root:
        viewer = root.create_user("viewer").token.token
        outsider = root.create_user("outsider").token.token

        seen = mlflow_run(mlflow_python, SCRIPT, server.url, root_token)

        # What MLflow read back through the MLflow API.
        assert seen["status"] == "FINISHED" and seen["name"] == "first"
        assert seen["params"] == {"lr": "0.1", "depth": "3", "kind": "gbm", "batched": "yes"}
        assert seen["metrics"] == {"loss": 0.2, "acc": 0.9, "f1": 0.8, "batch": 49.0}
        assert seen["tags"] == {"team": "vision", "stage": "dev"}
        assert seen["loss"] == [[s, 1.0 / (s + 1)] for s in range(5)]
        assert seen["batch"] == 50
        assert seen["found"] == [seen["run_id"]]
        assert seen["ordered"] == ["second", "first"]
        assert seen["by_name"] == ["second"]
        assert seen["experiment"] == seen["experiment_id"]
        assert seen["deleted"] == ["third"] and seen["third"] == "deleted"

        assert seen["root"] == [["big", True, None], ["notes.txt", False, 5], ["plots", True, None]]
        # in 1 MB parts, as server-info allows: plots/a.bin (1,024,000 bytes), big.bin
        assert seen["multipart"] == [2, 4]
        assert seen["experiment_tags"] == {"owner": "vision-team"}
        assert seen["scratch"] == ["deleted", "active", {"kind": "trial"}]
        assert seen["plots"] == [["plots/a.bin", False, 1_024_000], ["plots/deep", True, None]]

        # The same through Plinth's own SDK: one store, not a copy.
        run = root.get_run(seen["run_id"])
        assert (run.project, run.name, run.status) == ("churn", "first", "finished")
        assert run.params == {"lr": "0.1", "depth": "3", "kind": "gbm", "batched": "yes"}
        assert run.metrics == {"loss": 0.2, "acc": 0.9, "f1": 0.8, "batch": 49.0}
        assert run.tags["team"] == "vision" and run.tags["mlflow.user"]
        history = root.metric_history(run.id, "loss")
        assert [(p.step, p.value) for p in history] == [(s, 1.0 / (s + 1)) for s in range(5)]
        assert sorted(r.name for r in root.search_runs("churn")) == ["first", "second"]
        assert [r.name for r in root.search_runs("churn", lifecycle="deleted")] == ["third"]
        stored = {a.path: a.digest for a in root.list_artifacts(run.id)}
        assert sorted(stored) == ["big/big.bin", "notes.txt", "plots/a.bin", "plots/deep/b.txt"]
        assert stored["big/big.bin"] == seen["big"]
        assert seen["downloaded"] == {
            "a.bin": stored["plots/a.bin"],
            "deep/b.txt": stored["plots/deep/b.txt"],
        }
        [project] = [p for p in root.list_projects() if p.name == "churn"]
        assert project.id == seen["experiment_id"]
        actions = {e.action for e in root.audit_events(actor="root")}
        assert {"projects.create", "runs.create", "runs.end"} <= actions

        # The models MLflow logged and registered are Plinth model versions: the skops
        # one in Plinth's safe sklearn flavor (its own loader answers as MLflow's did),
        # the pickled one kept and flagged, never loaded by the server.
        assert seen["input"] == ["train", "code", "training"]  # mlflow.log_input, read back
        assert seen["predicted"] == seen["by_run"] == [0, 1, 0, 1]
        assert seen["version"] == "1" and seen["champion"] == "1"
        assert seen["model_tags"] == {"owner": "ann"}
        assert seen["versions"] == [["churn-model", "1", seen["fit_run"]]]
        assert {"MLmodel", "model.skops"} <= set(seen["model_files"])
        version = root.get_model_version("churn-models", "churn-model", 1)
        assert (version.flavor, version.needs_pickle, version.aliases) == (
            "sklearn",
            False,
            ["champion"],
        )
        assert (version.run_id, version.artifact_path) == (
            seen["fit_run"],
            f"models/{seen['model_id']}",
        )
        root.download_model("models:/churn-models/churn-model@champion", tmp_path / "model")
        features = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.4], [0.9, 0.1]])
        assert load_model(tmp_path / "model").predict(features).tolist() == seen["predicted"]
        pickled = root.get_model_version("churn-models", "churn-pickled", 1)
        assert (pickled.flavor, pickled.needs_pickle) == ("mlflow", True)
        stored = {a.path for a in root.list_artifacts(seen["fit_run"])}
        assert f"models/{seen['model_id']}/model.skops" in stored

        # Plinth's roles hold for MLflow's client: a viewer reads and cannot log; an
        # outsider sees neither the experiment nor the run.
        root.add_member("churn", "viewer", "viewer")
        refused = mlflow_run(mlflow_python, REFUSED, server.url, viewer, run.id)
        assert refused == {"log": "PERMISSION_DENIED", "read": "FINISHED"}
        hidden = mlflow_run(mlflow_python, OUTSIDER, server.url, outsider, run.id)
        assert hidden == {"by_name": None, "run": "RESOURCE_DOES_NOT_EXIST"}
        assert root.get_run(run.id).metrics == run.metrics  # the refused log changed nothing
