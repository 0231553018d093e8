"""From a tracked run to a prediction service: ``run.log_model`` registers a version,
an alias names it, and ``plinth serve models:/…`` fetches it from the registry (its
files checked against the version's digest) and names it in every answer. A pickled
model is stored like any other but served only once a project admin marks it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import plinth
from plinth import Client
from plinth.errors import PermissionDenied
from tests.conftest import make_settings
from tests.processes import REPO, child_env
from tests.serving.conftest import served
from tests.serving.fakes import Adder

pytestmark = pytest.mark.slow
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _serve(uri: str) -> list[str]:
    return [sys.executable, "-m", "plinth.serving", uri]


def test_a_logged_model_is_served_by_alias_and_names_its_version(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    frame = load_iris(as_frame=True).frame
    features = frame.drop(columns="target").set_axis(list(ROW), axis=1)
    model = LogisticRegression(max_iter=500).fit(features, frame["target"])
    home = tmp_path / "home"
    with Client(settings=make_settings(home)) as client:
        with plinth.start_run("iris", client=client) as run:
            run.log({"accuracy": model.score(features, frame["target"])})
            version = run.log_model(model, "iris", input_example=features.iloc[:5])
        assert (version.flavor, version.version, version.run_id) == ("sklearn", 1, run.id)
        assert [s["name"] for s in version.signature["inputs"]] == list(ROW)  # type: ignore[index]
        assert {a.path for a in client.list_artifacts(run.id)} >= {
            "model/MLmodel.json",
            "model/model.skops",
        }
        client.set_model_alias("iris", "iris", "champion", 1, reason="first")

    with served(_serve("models:/iris/iris@champion"), tmp_path, PLINTH_HOME=str(home)) as server:
        status, headers, body = server.post("/v1/models/iris:predict", {"instances": [ROW]})
        assert status == 200 and headers["x-plinth-model-version"] == "iris/1"
        expected = model.predict(features.iloc[:1]).tolist()
        assert body == {"predictions": expected}
        status, _, body = server.post("/v1/models/iris:predict", {"instances": [{"colour": 1}]})
        assert status == 400 and "sepal_length" in body["error"]["message"]


def test_a_pickled_version_is_served_only_once_an_admin_marks_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = make_settings(home)
    with Client(settings=settings) as client:
        run = client.create_run("adders")
        version = client.log_model(run.id, Adder(), "adder", flavor="python")
        assert version.needs_pickle and not version.unsafe_pickle
    refused = subprocess.run(
        [*_serve(version.uri), "--port", "0"],
        cwd=REPO,
        env=child_env(PLINTH_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "unsafe_pickle" in refused.stderr

    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
    as_user = lambda t: Client(settings=settings.model_copy(update={"token": t}))  # noqa: E731
    with as_user(token) as root:
        with as_user(root.create_user("ed").token.token) as editor:
            root.add_member("adders", "ed", "editor")
            with pytest.raises(PermissionDenied):
                editor.update_model_version(version.uri, unsafe_pickle=True)
        assert root.update_model_version(version.uri, unsafe_pickle=True).unsafe_pickle
    with served(_serve(version.uri), tmp_path, PLINTH_HOME=str(home), PLINTH_TOKEN=token) as server:
        assert server.get("/healthz")[2]["pid"] != server.proc.pid  # loaded in a worker
        body = {"instances": [{"a": 1, "b": 2}]}
        status, headers, answer = server.post("/v1/models/adder:predict", body)
        assert status == 200 and answer == {"predictions": [3]}
        assert headers["x-plinth-model-version"] == "adder/1"
