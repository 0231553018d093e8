"""MLflow's logged models and model registry as Plinth serves them, request by request
(the real client's end-to-end test is test_mlflow_client.py): a model MLflow logs is a
run's artifacts, and registering it makes a Plinth model version, safe format or
flagged pickle; names, stages and deletes map onto Plinth's registry or are refused
with a clear error that changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from plinth.client import Client
from plinth.registry.flavors import load_model
from plinth.settings import Settings
from tests.conftest import raw_http
from tests.mlflow_api.test_api import call, refused, start

ARTIFACTS = "/mlflow/api/2.0/mlflow-artifacts/artifacts"
X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.4], [0.9, 0.1]])
SKOPS_MLMODEL = """\
artifact_path: {where}
flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.skops
  sklearn:
    pickled_model: model.skops
    serialization_format: skops
    sklearn_version: 1.9.1
model_id: {model_id}
"""
PICKLE_MLMODEL = """\
flavors:
  python_function: {loader_module: mlflow.sklearn, model_path: model.pkl}
  sklearn: {pickled_model: model.pkl, serialization_format: cloudpickle}
"""


@pytest.fixture
def http(client: Client) -> httpx.Client:
    return raw_http(client)


def skops_bytes() -> bytes:
    from sklearn.linear_model import LogisticRegression

    from plinth.registry.flavors.sklearn import _skops_io

    fitted = LogisticRegression().fit(X, [0, 1, 0, 1])
    return bytes(_skops_io().dumps(fitted))


def upload(http: httpx.Client, artifact_uri: str, files: dict[str, bytes]) -> None:
    root = artifact_uri.removeprefix("mlflow-artifacts:/")
    for name, content in files.items():
        answer = http.put(f"{ARTIFACTS}/{root}/{name}", content=content)
        assert answer.status_code == 200, answer.text


def log_model(http: httpx.Client, experiment_id: str, run_id: str, **extra: Any) -> Any:
    body = {"experiment_id": experiment_id, "source_run_id": run_id, "name": "model", **extra}
    return call(http, "POST", "logged-models", json=body)["model"]


def test_a_logged_model_registers_as_a_plinth_version(
    client: Client, http: httpx.Client, project: str, tmp_path: Path
) -> None:
    # MLflow names models in one namespace: a name of its own in the shared database
    name = f"churn-{project}"
    experiment_id, run_id = start(http, project)
    model = log_model(http, experiment_id, run_id, params=[{"key": "C", "value": "1.0"}])
    info = model["info"]
    model_id = info["model_id"]
    assert info["status"] == "LOGGED_MODEL_PENDING" and info["source_run_id"] == run_id
    assert info["artifact_uri"] == (
        f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/models/{model_id}"
    )
    assert model["data"]["params"] == [{"key": "C", "value": "1.0"}]
    mlmodel = SKOPS_MLMODEL.format(where=info["artifact_uri"], model_id=model_id).encode()
    upload(http, info["artifact_uri"], {"MLmodel": mlmodel, "model.skops": skops_bytes()})
    call(http, "PATCH", f"logged-models/{model_id}", json={"status": "LOGGED_MODEL_READY"})
    tags = [{"key": "k", "value": "v"}]
    call(http, "PATCH", f"logged-models/{model_id}/tags", json={"tags": tags})
    call(http, "POST", "runs/outputs", json={"run_id": run_id, "models": [{"model_id": model_id}]})
    got = call(http, "GET", f"logged-models/{model_id}")["model"]["info"]
    assert got["status"] == "LOGGED_MODEL_READY" and got["tags"] == tags
    found = call(
        http,
        "POST",
        "logged-models/search",
        json={"experiment_ids": [experiment_id], "filter": "name = 'model'"},
    )
    assert [m["info"]["model_id"] for m in found["models"]] == [model_id]

    # Its files are the run's artifacts; registering them is a Plinth model version.
    assert {a.path for a in client.list_artifacts(run_id)} == {
        f"models/{model_id}/MLmodel",
        f"models/{model_id}/model.skops",
    }
    created = call(
        http,
        "POST",
        "model-versions/create",
        json={"name": name, "source": f"models:/{model_id}", "model_id": model_id},
    )["model_version"]
    assert (created["version"], created["status"], created["run_id"]) == ("1", "READY", run_id)
    assert created["source"] == info["artifact_uri"] and created["model_id"] == model_id
    version = client.get_model_version(project, name, 1)
    assert (version.flavor, version.needs_pickle) == ("sklearn", False)
    assert version.artifact_path == f"models/{model_id}"
    # Plinth's own loader loads what MLflow saved with skops: no pickle.
    client.download_model(f"models:/{project}/{name}/1", tmp_path / "model")
    assert load_model(tmp_path / "model").predict(X).tolist() == [0, 1, 0, 1]

    download = call(
        http, "GET", "model-versions/get-download-uri", params={"name": name, "version": "1"}
    )
    assert download["artifact_uri"] == info["artifact_uri"]
    call(
        http,
        "POST",
        "registered-models/alias",
        json={"name": name, "alias": "champion", "version": "1"},
    )
    by_alias = call(
        http, "GET", "registered-models/alias", params={"name": name, "alias": "champion"}
    )["model_version"]
    assert by_alias["version"] == "1" and by_alias["aliases"] == ["champion"]
    assert client.get_model_version(project, name, 1).aliases == ["champion"]
    registered = call(http, "GET", "registered-models/get", params={"name": name})
    model_row = registered["registered_model"]
    assert model_row["aliases"] == [{"alias": "champion", "version": "1"}]
    assert [v["version"] for v in model_row["latest_versions"]] == ["1"]
    call(
        http,
        "POST",
        "model-versions/set-tag",
        json={"name": name, "version": "1", "key": "q", "value": "ok"},
    )
    assert client.get_model_version(project, name, 1).tags == {"q": "ok"}
    call(
        http,
        "PATCH",
        "model-versions/update",
        json={"name": name, "version": "1", "description": "d"},
    )
    assert client.get_model_version(project, name, 1).description == "d"
    searched = call(http, "GET", "model-versions/search", params={"filter": f"name='{name}'"})
    assert [v["version"] for v in searched["model_versions"]] == ["1"]

    # Stages: Archived is Plinth's archived status, None its ready one.
    call(http, "DELETE", "registered-models/alias", json={"name": name, "alias": "champion"})
    archived = call(
        http,
        "POST",
        "model-versions/transition-stage",
        json={"name": name, "version": "1", "stage": "Archived"},
    )["model_version"]
    assert archived["current_stage"] == "Archived"
    assert client.get_model_version(project, name, 1).status == "archived"
    latest = call(
        http,
        "POST",
        "registered-models/get-latest-versions",
        json={"name": name, "stages": ["None"]},
    )
    assert latest["model_versions"] == []
    actions = {e.action for e in client.audit_events(project=project)}
    assert {"mlflow.models.log", "models.register", "models.alias", "models.update"} <= actions


def test_a_pickled_mlflow_model_is_kept_and_flagged(
    client: Client, http: httpx.Client, project: str
) -> None:
    experiment_id, run_id = start(http, project)
    upload(
        http,
        f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
        {"model/MLmodel": PICKLE_MLMODEL.encode(), "model/model.pkl": b"\x80\x04never loaded"},
    )
    created = call(
        http,
        "POST",
        "model-versions/create",
        json={"name": "pickled", "source": f"runs:/{run_id}/model", "run_id": run_id},
    )["model_version"]
    assert created["source"].endswith(f"/{run_id}/artifacts/model")
    version = client.get_model_version(project, "pickled", 1)
    assert (version.flavor, version.needs_pickle, version.unsafe_pickle) == ("mlflow", True, False)


def test_a_model_made_by_name_waits_for_its_first_version(
    client: Client, http: httpx.Client, project: str
) -> None:
    made = {"name": "later", "description": "soon", "tags": [{"key": "team", "value": "ml"}]}
    created = call(http, "POST", "registered-models/create", json=made)["registered_model"]
    assert created["name"] == "later" and created["description"] == "soon"
    tag = {"name": "later", "key": "stage", "value": "draft"}
    call(http, "POST", "registered-models/set-tag", json=tag)
    got = call(http, "GET", "registered-models/get", params={"name": "later"})
    assert got["registered_model"]["description"] == "soon"
    refused(
        http, "POST", "registered-models/create", "RESOURCE_ALREADY_EXISTS", json={"name": "later"}
    )
    listed = call(http, "GET", "registered-models/search", params={"filter": "name LIKE 'lat%'"})
    assert [m["name"] for m in listed["registered_models"]] == ["later"]

    experiment_id, run_id = start(http, project)
    where = f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
    upload(
        http,
        where,
        {
            "m/MLmodel": SKOPS_MLMODEL.format(where=where, model_id="x").encode(),
            "m/model.skops": skops_bytes(),
        },
    )
    call(http, "POST", "model-versions/create", json={"name": "later", "source": f"{where}/m"})
    [model] = client.list_models(project)
    assert (model.name, model.description, model.latest_version) == ("later", "soon", 1)

    def tags() -> dict[str, str]:
        got = call(http, "GET", "registered-models/get", params={"name": "later"})
        return {t["key"]: t["value"] for t in got["registered_model"]["tags"]}

    assert tags() == {"team": "ml", "stage": "draft"}  # kept when the model was placed
    call(http, "POST", "registered-models/set-tag", json={**tag, "value": "prod"})
    call(http, "DELETE", "registered-models/delete-tag", json={"name": "later", "key": "team"})
    assert tags() == {"stage": "prod"}
    refused(
        http,
        "DELETE",
        "registered-models/delete-tag",
        "RESOURCE_DOES_NOT_EXIST",
        json={"name": "later", "key": "team"},
    )
    audited = [e.details for e in client.audit_events(project=project)]
    assert {"team": None} in audited
    message = refused(
        http,
        "DELETE",
        "registered-models/delete",
        "INVALID_PARAMETER_VALUE",
        json={"name": "later"},
    )
    assert "archive" in message
    # MLflow's delete of a version archives it: kept, audited, takes no alias.
    call(http, "DELETE", "model-versions/delete", json={"name": "later", "version": "1"})
    assert client.get_model_version(project, "later", 1).status == "archived"
    got = call(http, "GET", "model-versions/get", params={"name": "later", "version": "1"})
    assert got["model_version"]["current_stage"] == "Archived"

    # A pending model of its own goes when deleted.
    call(http, "POST", "registered-models/create", json={"name": "never"})
    call(http, "DELETE", "registered-models/delete", json={"name": "never"})
    refused(
        http, "GET", "registered-models/get", "RESOURCE_DOES_NOT_EXIST", params={"name": "never"}
    )


def test_bad_model_requests_are_refused_and_change_nothing(
    client: Client, http: httpx.Client, project: str
) -> None:
    experiment_id, run_id = start(http, project)
    bad, gone, create = (
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "model-versions/create",
    )
    no_run = "runs:/" + "0" * 32 + "/m"
    twice = [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]
    bad_calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("POST", "logged-models", bad, {"json": {"experiment_id": experiment_id}}),
        ("POST", "logged-models", bad, {"json": {"experiment_id": "0", "source_run_id": run_id}}),
        ("GET", "logged-models/m-0123", gone, {}),
        ("GET", "logged-models/m-..%5C..%5Cetc", gone, {}),
        ("POST", create, bad, {"json": {"name": "m", "source": "/etc/passwd"}}),
        ("POST", create, bad, {"json": {"name": "m", "source": f"runs:/{run_id}/nothing"}}),
        ("POST", create, bad, {"json": {"name": "a b", "source": f"runs:/{run_id}/m"}}),
        ("POST", create, gone, {"json": {"name": "m", "source": no_run}}),
        ("POST", "registered-models/create", bad, {"json": {"name": "t", "tags": twice}}),
        ("POST", "registered-models/set-tag", gone, {"json": {"name": "t", "key": "k"}}),
        ("GET", "model-versions/get", bad, {"params": {"name": "m", "version": "one"}}),
        ("GET", "registered-models/get", gone, {"params": {"name": "m"}}),
        ("GET", "model-versions/search", bad, {"params": {"filter": "tags.x = 'y'"}}),
        ("GET", "registered-models/search", bad, {"params": {"order_by": "true"}}),
        ("GET", "model-versions/search", bad, {"params": {"order_by": "size DESC"}}),
        ("POST", "experiments/search", bad, {"json": {"view_type": True}}),
    ]
    for method, path, code, kwargs in bad_calls:
        refused(http, method, path, code, **kwargs)
    assert client.list_models(project) == []
    for name in ("m", "t"):
        listed = call(
            http, "GET", "registered-models/search", params={"filter": f"name = '{name}'"}
        )
        assert listed["registered_models"] == []


def test_mlflow_names_are_plinths_per_project_names_seen_by_the_caller(
    own_settings: Settings, project: str
) -> None:
    """An MLflow name is the model of that name in the projects the caller may read:
    an outsider does not see it, a viewer cannot change it, and a name two readable
    projects hold is ambiguous, said so."""
    with Client(settings=own_settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=own_settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        root_http = raw_http(root)
        experiment_id, run_id = start(root_http, project)
        where = f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
        files = {"m/MLmodel": PICKLE_MLMODEL.encode(), "m/model.pkl": b"x"}
        upload(root_http, where, files)
        call(
            root_http,
            "POST",
            "model-versions/create",
            json={"name": "shared", "source": f"{where}/m"},
        )
        users = {name: root.create_user(name).token.token for name in ("vic", "out")}
        root.add_member(project, "vic", "viewer")
        with as_user(users["vic"]) as vic:
            vic_http = raw_http(vic)
            got = call(vic_http, "GET", "registered-models/get", params={"name": "shared"})
            assert got["registered_model"]["latest_versions"][0]["version"] == "1"
            refused(
                vic_http,
                "POST",
                "registered-models/alias",
                "PERMISSION_DENIED",
                json={"name": "shared", "alias": "champion", "version": "1"},
            )
        with as_user(users["out"]) as out:
            out_http = raw_http(out)
            refused(
                out_http,
                "GET",
                "registered-models/get",
                "RESOURCE_DOES_NOT_EXIST",
                params={"name": "shared"},
            )
            assert call(out_http, "GET", "model-versions/search")["model_versions"] == []
        assert root.get_model_version(project, "shared", 1).aliases == []

        other = f"{project}-b"
        experiment_b, run_b = start(root_http, other)
        where_b = f"mlflow-artifacts:/{experiment_b}/{run_b}/artifacts"
        upload(root_http, where_b, files)
        message = refused(
            root_http,
            "POST",
            "model-versions/create",
            "INVALID_PARAMETER_VALUE",
            json={"name": "shared", "source": f"{where_b}/m"},
        )
        assert project in message
        root.register_model(run_b, "m", "shared", project=other)  # Plinth's API: per project
        message = refused(
            root_http,
            "GET",
            "registered-models/get",
            "INVALID_PARAMETER_VALUE",
            params={"name": "shared"},
        )
        assert project in message and other in message


def test_a_run_names_the_models_it_used_and_made(http: httpx.Client, project: str) -> None:
    experiment_id, maker = start(http, project)
    model_id = log_model(http, experiment_id, maker)["info"]["model_id"]
    user = call(http, "POST", "runs/create", json={"experiment_id": experiment_id})
    user_id = user["run"]["info"]["run_id"]
    used = {"run_id": user_id, "models": [{"model_id": model_id}]}
    call(http, "POST", "runs/log-inputs", json=used)
    call(http, "POST", "runs/log-inputs", json=used)  # again: kept once

    def run(run_id: str) -> Any:
        return call(http, "GET", "runs/get", params={"run_id": run_id})["run"]

    assert run(user_id)["inputs"]["model_inputs"] == [{"model_id": model_id}]
    assert run(maker)["outputs"]["model_outputs"] == [{"model_id": model_id, "step": 0}]
    searched = call(http, "POST", "runs/search", json={"experiment_ids": [experiment_id]})
    inputs = {r["info"]["run_id"]: r["inputs"]["model_inputs"] for r in searched["runs"]}
    assert inputs == {user_id: [{"model_id": model_id}], maker: []}
    unknown = {"run_id": user_id, "models": [{"model_id": "m-" + "0" * 32}]}
    refused(http, "POST", "runs/log-inputs", "RESOURCE_DOES_NOT_EXIST", json=unknown)
    assert run(user_id)["inputs"]["model_inputs"] == [{"model_id": model_id}]


def test_a_quoted_value_may_hold_and(http: httpx.Client, project: str) -> None:
    experiment_id, run_id = start(http, project)
    model = log_model(http, experiment_id, run_id, name="a AND b")
    for text in ("name = 'a AND b'", "name = 'a AND b' AND status != 'x AND y'"):
        body = {"experiment_ids": [experiment_id], "filter": text}
        found = call(http, "POST", "logged-models/search", json=body)
        assert [m["info"]["model_id"] for m in found["models"]] == [model["info"]["model_id"]]
    refused(
        http,
        "POST",
        "logged-models/search",
        "INVALID_PARAMETER_VALUE",
        json={"experiment_ids": [experiment_id], "filter": "name = 'a' AND"},
    )
