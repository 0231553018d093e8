"""MLflow's REST API as Plinth serves it, request by request (the real MLflow client's
end-to-end test is test_mlflow_client.py): MLflow's shapes and error codes, its time in
milliseconds, and everything landing where Plinth's own SDK reads it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from plinth.client import Client
from plinth.errors import Conflict
from tests.conftest import make_settings, raw_http

API = "/mlflow/api/2.0/mlflow"


@pytest.fixture
def http(client: Client) -> httpx.Client:
    return raw_http(client)


def call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    answer = http.request(method, f"{API}/{path}", **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()


def refused(http: httpx.Client, method: str, path: str, code: str, **kwargs: Any) -> str:
    answer = http.request(method, f"{API}/{path}", **kwargs)
    assert answer.status_code >= 400, answer.text
    body = answer.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == code, body
    return str(body["message"])


def got_experiment(http: httpx.Client, run_id: str) -> str:
    return str(
        call(http, "GET", "runs/get", params={"run_id": run_id})["run"]["info"]["experiment_id"]
    )


def start(http: httpx.Client, project: str) -> tuple[str, str]:
    """A new experiment (the project) and a run in it: their ids."""
    experiment = call(http, "POST", "experiments/create", json={"name": project})
    run = call(http, "POST", "runs/create", json={"experiment_id": experiment["experiment_id"]})
    return experiment["experiment_id"], run["run"]["info"]["run_id"]


def test_an_experiment_is_a_project(client: Client, http: httpx.Client, project: str) -> None:
    refused(
        http,
        "GET",
        "experiments/get-by-name",
        "RESOURCE_DOES_NOT_EXIST",
        params={"experiment_name": project},
    )
    experiment_id = call(http, "POST", "experiments/create", json={"name": project})[
        "experiment_id"
    ]
    [made] = [p for p in client.list_projects() if p.name == project]
    assert made.id == experiment_id
    got = call(http, "GET", "experiments/get", params={"experiment_id": experiment_id})
    by_name = call(http, "GET", "experiments/get-by-name", params={"experiment_name": project})
    assert got == by_name
    experiment = got["experiment"]
    assert experiment["name"] == project and experiment["lifecycle_stage"] == "active"
    assert experiment["creation_time"] == round(made.created_at * 1000)  # milliseconds
    refused(http, "POST", "experiments/create", "RESOURCE_ALREADY_EXISTS", json={"name": project})


def test_a_bad_experiment_is_refused_and_nothing_is_made(
    client: Client, http: httpx.Client, project: str
) -> None:
    before = client.list_projects()
    message = refused(
        http, "POST", "experiments/create", "INVALID_PARAMETER_VALUE", json={"name": "a b/c"}
    )
    assert "project name" in message
    twice = [{"key": "k", "value": "a"}, {"key": "k", "value": "b"}]
    for extra in ({"artifact_location": "/etc"}, {"tags": twice}):
        refused(
            http,
            "POST",
            "experiments/create",
            "INVALID_PARAMETER_VALUE",
            json={"name": project, **extra},
        )
    refused(http, "POST", "experiments/create", "INVALID_PARAMETER_VALUE", json={})
    refused(
        http, "GET", "experiments/get", "RESOURCE_DOES_NOT_EXIST", params={"experiment_id": "1"}
    )
    assert client.list_projects() == before


def test_a_name_pattern_of_many_wildcards_is_matched_without_backtracking(
    http: httpx.Client, project: str
) -> None:
    """Many ``%`` made a regular expression backtrack exponentially: one search held
    the whole server (seconds at five, hours at ten)."""
    name = f"{project}-" + "a" * 150
    call(http, "POST", "experiments/create", json={"name": name})
    for pattern, found in ((f"{project}%" + "%a" * 40 + "%", True), ("%" * 30 + "b", False)):
        answer = call(http, "POST", "experiments/search", json={"filter": f"name LIKE '{pattern}'"})
        assert (name in [e["name"] for e in answer["experiments"]]) is found, pattern


def test_with_sign_in_only_an_admin_makes_the_shared_default_experiment(tmp_path: Path) -> None:
    """The first user to log to experiment "0" used to make ``Default`` and own it: every
    other user's default runs were then refused, or went into a project they ran."""
    from plinth.governance.identity import init_admin

    settings = make_settings(tmp_path / "signed-in")  # a home of its own, with users
    root_token = init_admin(settings, "root").token.token
    with Client(settings=settings.model_copy(update={"token": root_token})) as root:
        alice_token = root.create_user("alice").token.token
        with Client(settings=settings.model_copy(update={"token": alice_token})) as alice:
            message = refused(
                raw_http(alice),
                "POST",
                "runs/create",
                "RESOURCE_DOES_NOT_EXIST",
                json={"experiment_id": "0"},
            )
            assert "platform admin" in message and "set_experiment" in message
            assert "Default" not in [p.name for p in root.list_projects()]
            made = call(raw_http(root), "POST", "runs/create", json={"experiment_id": "0"})
            assert made["run"]["info"]["experiment_id"] == "0"
            refused(  # not a member yet: the same answer as for a project that is not there
                raw_http(alice),
                "POST",
                "runs/create",
                "RESOURCE_DOES_NOT_EXIST",
                json={"experiment_id": "0"},
            )
            root.add_member("Default", "alice", "editor")
            mine = call(raw_http(alice), "POST", "runs/create", json={"experiment_id": "0"})
            assert mine["run"]["info"]["experiment_id"] == "0"
            roles = {(m.user, m.role) for m in root.list_members("Default")}
            assert ("root", "admin") in roles and ("alice", "editor") in roles


@pytest.mark.parametrize("token", ["9" * 32, "\u0669" * 20, "1" * 11, "-1", " 1"])
def test_a_page_token_this_server_never_gave_is_a_400(
    http: httpx.Client, project: str, token: str
) -> None:
    created = call(http, "POST", "experiments/create", json={"name": f"{project}-pages"})
    experiments = [created["experiment_id"]]
    for path, body in (
        ("logged-models/search", {"experiment_ids": experiments, "page_token": token}),
        ("experiments/search", {"page_token": token}),
    ):
        message = refused(http, "POST", path, "INVALID_PARAMETER_VALUE", json=body)
        assert "page_token" in message


@pytest.mark.parametrize("seed", range(3))
def test_like_agrees_with_sql_like(seed: int) -> None:
    import random
    import re

    from plinth.mlflow.service import like

    def by_regex(pattern: str, text: str) -> bool:  # fine for these short patterns
        parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
        return re.fullmatch("".join(parts), text, re.DOTALL) is not None

    rng = random.Random(seed)
    for _ in range(5000):
        pattern = "".join(rng.choice("ab%_") for _ in range(rng.randint(0, 7)))
        text = "".join(rng.choice("ab\n") for _ in range(rng.randint(0, 8)))
        assert like(pattern, text) == by_regex(pattern, text), (pattern, text)


def test_experiments_are_searched_by_name_and_paged(http: httpx.Client, project: str) -> None:
    for suffix in ("a", "b", "c"):
        call(http, "POST", "experiments/create", json={"name": f"{project}-{suffix}"})
    like = {"filter": f"name LIKE '{project}-%'", "order_by": ["name DESC"], "max_results": 2}
    first = call(http, "POST", "experiments/search", json=like)
    assert [e["name"] for e in first["experiments"]] == [f"{project}-c", f"{project}-b"]
    rest = call(
        http, "POST", "experiments/search", json={**like, "page_token": first["next_page_token"]}
    )
    assert [e["name"] for e in rest["experiments"]] == [f"{project}-a"]
    assert "next_page_token" not in rest
    exact = call(http, "POST", "experiments/search", json={"filter": f"name = '{project}-b'"})
    assert [e["name"] for e in exact["experiments"]] == [f"{project}-b"]
    refused(
        http,
        "POST",
        "experiments/search",
        "INVALID_PARAMETER_VALUE",
        json={"filter": "tags.x = 'y'"},
    )


def test_a_run_logged_through_mlflow_reads_back_through_plinth(
    client: Client, http: httpx.Client, project: str
) -> None:
    experiment_id = call(http, "POST", "experiments/create", json={"name": project})[
        "experiment_id"
    ]
    tags = [{"key": "team", "value": "vision"}]
    created = call(
        http,
        "POST",
        "runs/create",
        json={"experiment_id": experiment_id, "run_name": "r1", "user_id": "ann", "tags": tags},
    )["run"]
    run_id = created["info"]["run_id"]
    assert created["info"]["status"] == "RUNNING" and created["info"]["user_id"] == "ann"
    assert created["info"]["experiment_id"] == experiment_id
    points = [
        {"key": "loss", "value": 1.0 / (s + 1), "timestamp": 1_700_000_000_000 + s, "step": s}
        for s in range(3)
    ]
    call(
        http,
        "POST",
        "runs/log-batch",
        json={"run_id": run_id, "metrics": points, "params": [{"key": "lr", "value": "0.1"}]},
    )
    call(
        http,
        "POST",
        "runs/log-metric",
        json={"run_id": run_id, "key": "nan", "value": "NaN", "timestamp": 5},
    )
    call(http, "POST", "runs/log-parameter", json={"run_id": run_id, "key": "depth", "value": "3"})
    call(http, "POST", "runs/set-tag", json={"run_id": run_id, "key": "stage", "value": "dev"})
    ended = call(http, "POST", "runs/update", json={"run_id": run_id, "status": "FINISHED"})
    assert ended["run_info"]["status"] == "FINISHED" and ended["run_info"]["end_time"] > 0

    run = client.get_run(run_id)
    assert (run.project, run.name, run.status) == (project, "r1", "finished")
    assert run.params == {"lr": "0.1", "depth": "3"}
    assert run.tags == {"team": "vision", "stage": "dev", "mlflow.user": "ann"}
    assert run.metrics["loss"] == 1 / 3 and math.isnan(run.metrics["nan"])
    history = client.metric_history(run_id, "loss")
    assert [(p.step, p.timestamp) for p in history] == [
        (s, 1_700_000_000 + s / 1000) for s in range(3)
    ]

    got = call(http, "GET", "runs/get", params={"run_id": run_id})["run"]
    assert {p["key"]: p["value"] for p in got["data"]["params"]} == {"lr": "0.1", "depth": "3"}
    assert {t["key"]: t["value"] for t in got["data"]["tags"]}["mlflow.runName"] == "r1"
    metrics = {m["key"]: m["value"] for m in got["data"]["metrics"]}
    assert metrics == {"loss": 1 / 3, "nan": "NaN"}
    page = call(
        http,
        "GET",
        "metrics/get-history",
        params={"run_id": run_id, "metric_key": "loss", "max_results": 2},
    )
    assert [(p["step"], p["timestamp"]) for p in page["metrics"]] == [
        (0, 1_700_000_000_000),
        (1, 1_700_000_000_001),
    ]
    rest = call(
        http,
        "GET",
        "metrics/get-history",
        params={"run_uuid": run_id, "metric_key": "loss", "page_token": page["next_page_token"]},
    )
    assert [p["step"] for p in rest["metrics"]] == [2] and "next_page_token" not in rest

    # MLflow's start_run(run_id=…) on an ended run sets it running again.
    again = call(http, "POST", "runs/update", json={"run_uuid": run_id, "status": "RUNNING"})
    assert again["run_info"]["status"] == "RUNNING" and "end_time" not in again["run_info"]


def test_the_default_experiment_is_the_project_default(client: Client, http: httpx.Client) -> None:
    run = call(http, "POST", "runs/create", json={"experiment_id": "0"})["run"]
    assert run["info"]["experiment_id"] == "0"
    assert client.get_run(run["info"]["run_id"]).project == "Default"
    got = call(http, "GET", "experiments/get", params={"experiment_id": "0"})["experiment"]
    assert (got["experiment_id"], got["name"]) == ("0", "Default")


def test_runs_are_searched_in_mlflows_syntax(
    client: Client, http: httpx.Client, project: str
) -> None:
    experiment_id = call(http, "POST", "experiments/create", json={"name": project})[
        "experiment_id"
    ]
    ids = {}
    for name, lr, acc in (("a", "0.1", 0.9), ("b", "0.2", 0.5), ("c", "0.1", 0.7)):
        run = call(
            http, "POST", "runs/create", json={"experiment_id": experiment_id, "run_name": name}
        )["run"]["info"]["run_id"]
        ids[name] = run
        call(
            http,
            "POST",
            "runs/log-batch",
            json={
                "run_id": run,
                "metrics": [{"key": "acc", "value": acc, "timestamp": 1}],
                "params": [{"key": "lr", "value": lr}],
                "tags": [{"key": "model class", "value": name.upper()}],
            },
        )

    def names(**query: Any) -> list[str]:
        found = call(http, "POST", "runs/search", json={"experiment_ids": [experiment_id], **query})
        return [r["info"]["run_name"] for r in found["runs"]]

    assert names(filter="params.lr = '0.1'", order_by=["metrics.acc DESC"]) == ["a", "c"]
    assert names(filter="metrics.acc < 0.8 AND params.lr = '0.1'") == ["c"]
    assert names(filter="tags.\"mlflow.runName\" = 'b'") == ["b"]
    assert names(filter="tags.`model class` = 'C'") == ["c"]
    assert names(filter="tags.\"model class\" = 'A'") == ["a"]
    assert names(filter=f"attributes.run_id = '{ids['b']}'") == ["b"]
    assert names(filter="attributes.run_name = 'c'") == ["c"]
    assert names(filter="attributes.status = 'RUNNING'", order_by=["metrics.acc ASC"]) == [
        "b",
        "c",
        "a",
    ]
    first = call(
        http,
        "POST",
        "runs/search",
        json={"experiment_ids": [experiment_id], "max_results": 2, "order_by": ["metrics.acc"]},
    )
    rest = call(
        http,
        "POST",
        "runs/search",
        json={
            "experiment_ids": [experiment_id],
            "order_by": ["metrics.acc"],
            "page_token": first["next_page_token"],
        },
    )
    assert [r["info"]["run_name"] for r in first["runs"] + rest["runs"]] == ["b", "c", "a"]
    refused(
        http,
        "POST",
        "runs/search",
        "INVALID_PARAMETER_VALUE",
        json={"experiment_ids": [experiment_id], "filter": "params.nope = '1'"},
    )


def test_bad_run_requests_are_refused_and_change_nothing(
    client: Client, http: httpx.Client, project: str
) -> None:
    run = client.create_run(project, params={"lr": "0.1"})
    before = client.get_run(run.id)
    other = client.create_run(project).id
    for path, body, code in (
        (
            "runs/log-parameter",
            {"run_id": run.id, "key": "lr", "value": "0.2"},
            "INVALID_PARAMETER_VALUE",
        ),
        ("runs/log-metric", {"run_id": run.id, "key": "m"}, "INVALID_PARAMETER_VALUE"),
        (
            "runs/log-metric",
            {"run_id": run.id, "key": "m", "value": True, "timestamp": 1},
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "runs/log-metric",
            {"run_id": run.id, "key": "m", "value": 1.0, "timestamp": 1, "step": False},
            "INVALID_PARAMETER_VALUE",
        ),
        ("runs/search", {"experiment_ids": ["0"], "max_results": True}, "INVALID_PARAMETER_VALUE"),
        (
            "runs/log-metric",
            {"run_id": run.id, "key": "m\x00", "value": 1, "timestamp": 1},
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "runs/set-tag",
            {"run_id": run.id, "run_uuid": other, "key": "t", "value": "v"},
            "INVALID_PARAMETER_VALUE",
        ),
        ("runs/set-tag", {"key": "t", "value": "v"}, "INVALID_PARAMETER_VALUE"),
        (
            "runs/set-tag",
            {"run_id": run.id[:8], "key": "t", "value": "v"},
            "RESOURCE_DOES_NOT_EXIST",
        ),
        ("runs/update", {"run_id": run.id, "status": "DONE"}, "INVALID_PARAMETER_VALUE"),
        ("runs/update", {"run_id": run.id, "run_name": "renamed"}, "INVALID_PARAMETER_VALUE"),
        (
            "runs/log-batch",
            {"run_id": run.id, "params": [{"key": "k", "value": "1"}, {"key": "k", "value": "2"}]},
            "INVALID_PARAMETER_VALUE",
        ),
        ("runs/create", {"experiment_id": "f" * 32}, "RESOURCE_DOES_NOT_EXIST"),
        ("runs/search", {"experiment_ids": []}, "INVALID_PARAMETER_VALUE"),
    ):
        refused(http, "POST", path, code, json=body)
    refused(http, "POST", "runs/log-batch", "INVALID_PARAMETER_VALUE", content=b"{not json")
    assert client.get_run(run.id) == before
    assert http.get(f"{API}/runs/nope").json()["error_code"] == "ENDPOINT_NOT_FOUND"
    assert http.put(f"{API}/runs/create").json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_a_finished_runs_tag_is_set_and_deleted_and_audited(
    client: Client, http: httpx.Client, project: str, tmp_path: Path
) -> None:
    _, run_id = start(http, project)
    ended = call(http, "POST", "runs/update", json={"run_id": run_id, "status": "FINISHED"})
    # As in MLflow, a finished run still takes tags (and stays as it ended).
    call(http, "POST", "runs/set-tag", json={"run_id": run_id, "key": "stage", "value": "dev"})
    assert client.get_run(run_id).tags["stage"] == "dev"
    call(http, "POST", "runs/delete-tag", json={"run_id": run_id, "key": "stage"})
    # and artifacts (MlflowClient().log_artifact(run_id, …) after the end), through
    # MLflow's API; Plinth's own SDK keeps an ended run's artifacts final
    experiment_id = got_experiment(http, run_id)
    where = f"/mlflow/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts"
    assert http.put(f"{where}/eval.txt", content=b"late").status_code == 200
    assert [a.path for a in client.list_artifacts(run_id)] == ["eval.txt"]
    late = tmp_path / "sdk.txt"
    late.write_text("refused")
    with pytest.raises(Conflict):
        client.log_artifact(run_id, late)
    run = client.get_run(run_id)
    assert "stage" not in run.tags and run.status == "finished"
    assert round(run.end_time * 1000) == ended["run_info"]["end_time"]  # as it ended
    refused(
        http,
        "POST",
        "runs/delete-tag",
        "RESOURCE_DOES_NOT_EXIST",
        json={"run_id": run_id, "key": "stage"},
    )
    untagged = [e for e in client.audit_events(project=project) if e.action == "runs.untag"]
    assert sorted(e.outcome for e in untagged) == ["ok", "refused"]
    assert [e.details for e in untagged if e.outcome == "ok"] == [{"key": "stage", "value": "dev"}]


def test_a_deleted_run_is_searched_by_mlflows_view_type(
    client: Client, http: httpx.Client, project: str
) -> None:
    experiment_id = call(http, "POST", "experiments/create", json={"name": project})[
        "experiment_id"
    ]
    runs = [
        call(http, "POST", "runs/create", json={"experiment_id": experiment_id, "run_name": n})[
            "run"
        ]["info"]["run_id"]
        for n in ("kept", "gone")
    ]
    call(http, "POST", "runs/delete", json={"run_id": runs[1]})
    got = call(http, "GET", "runs/get", params={"run_id": runs[1]})["run"]["info"]
    assert got["lifecycle_stage"] == "deleted"
    assert client.get_run(runs[1]).deleted_at is not None

    def names(view: str | int | None) -> list[str]:
        body: dict[str, Any] = {"experiment_ids": [experiment_id], "order_by": ["run_name"]}
        if view is not None:
            body["run_view_type"] = view
        return [r["info"]["run_name"] for r in call(http, "POST", "runs/search", json=body)["runs"]]

    assert names(None) == names("ACTIVE_ONLY") == ["kept"]
    assert names("DELETED_ONLY") == names(2) == ["gone"]
    assert names("ALL") == ["gone", "kept"]
    refused(
        http,
        "POST",
        "runs/search",
        "INVALID_PARAMETER_VALUE",
        json={"experiment_ids": [experiment_id], "run_view_type": "SOME"},
    )
    call(http, "POST", "runs/restore", json={"run_id": runs[1]})
    assert names(None) == ["gone", "kept"]


def test_an_experiment_is_deleted_with_its_runs_and_restored_with_them(
    client: Client, http: httpx.Client, project: str
) -> None:
    experiment_id, kept = start(http, project)
    alone = call(http, "POST", "runs/create", json={"experiment_id": experiment_id})
    alone_id = alone["run"]["info"]["run_id"]
    call(http, "POST", "runs/delete", json={"run_id": alone_id})  # deleted on its own, before
    ref = {"experiment_id": experiment_id}

    def stage() -> str:
        got = call(http, "GET", "experiments/get", params=ref)["experiment"]
        return str(got["lifecycle_stage"])

    def listed(view: str | None) -> bool:
        body = {"filter": f"name = '{project}'", **({"view_type": view} if view else {})}
        return bool(call(http, "POST", "experiments/search", json=body)["experiments"])

    call(http, "POST", "experiments/delete", json=ref)
    call(http, "POST", "experiments/delete", json=ref)  # again: nothing changes
    assert stage() == "deleted"
    assert not listed(None) and listed("DELETED_ONLY") and listed("ALL")
    by_name = call(http, "GET", "experiments/get-by-name", params={"experiment_name": project})
    assert by_name["experiment"]["lifecycle_stage"] == "deleted"
    assert client.get_run(kept).deleted_at is not None
    assert client.search_runs(project).runs == []
    message = refused(http, "POST", "runs/create", "INVALID_PARAMETER_VALUE", json=ref)
    assert "deleted" in message and "restore" in message
    refused(http, "POST", "experiments/create", "RESOURCE_ALREADY_EXISTS", json={"name": project})
    deletions = [
        e for e in client.audit_events(project=project) if e.action.startswith("mlflow.exp")
    ]
    assert [(e.action, e.details) for e in deletions] == [
        ("mlflow.experiments.delete", {"runs": 1})
    ]

    call(http, "POST", "experiments/restore", json=ref)
    assert stage() == "active" and listed(None)
    assert client.get_run(kept).deleted_at is None
    assert client.get_run(alone_id).deleted_at is not None  # its own delete stands
    call(http, "POST", "runs/create", json=ref)


def test_an_experiment_keeps_tags_and_its_name(http: httpx.Client, project: str) -> None:
    tags = [{"key": "team", "value": "ranking"}, {"key": "mlflow.note.content", "value": "é 🙂"}]
    experiment_id = call(http, "POST", "experiments/create", json={"name": project, "tags": tags})[
        "experiment_id"
    ]
    ref = {"experiment_id": experiment_id}

    def got() -> dict[str, str]:
        experiment = call(http, "GET", "experiments/get", params=ref)["experiment"]
        return {t["key"]: t["value"] for t in experiment["tags"]}

    assert got() == {"team": "ranking", "mlflow.note.content": "é 🙂"}
    call(http, "POST", "experiments/set-experiment-tag", json={**ref, "key": "team", "value": "x"})
    call(
        http,
        "POST",
        "experiments/delete-experiment-tag",
        json={**ref, "key": "mlflow.note.content"},
    )
    assert got() == {"team": "x"}
    refused(
        http,
        "POST",
        "experiments/delete-experiment-tag",
        "RESOURCE_DOES_NOT_EXIST",
        json={**ref, "key": "absent"},
    )
    call(http, "POST", "experiments/update", json={**ref, "new_name": project})
    message = refused(
        http,
        "POST",
        "experiments/update",
        "INVALID_PARAMETER_VALUE",
        json={**ref, "new_name": f"{project}-2"},
    )
    assert "renamed" in message
    assert call(http, "GET", "experiments/get", params=ref)["experiment"]["name"] == project


def test_a_runs_dataset_inputs_are_kept_once_as_mlflow_described_them(
    client: Client, http: httpx.Client, project: str
) -> None:
    _, run_id = start(http, project)
    dataset = {
        "name": "train",
        "digest": "abc123",
        "source_type": "local",
        "source": '{"uri": "/data/train.csv"}',
        "schema": '{"mlflow_colspec": []}',
    }
    given = {"tags": [{"key": "mlflow.data.context", "value": "training"}], "dataset": dataset}
    for _ in range(2):  # the same dataset again: no change
        call(http, "POST", "runs/log-inputs", json={"run_id": run_id, "datasets": [given]})
    got = call(http, "GET", "runs/get", params={"run_id": run_id})["run"]["inputs"]
    assert got == {"dataset_inputs": [given], "model_inputs": []}
    logged = [e for e in client.audit_events(project=project) if e.action == "runs.inputs"]
    assert [e.details for e in logged] == [{"datasets": ["train@abc123"]}]
    refused(
        http,
        "POST",
        "runs/log-inputs",
        "INVALID_PARAMETER_VALUE",
        json={"run_id": run_id, "datasets": [{"dataset": {"name": "x"}}]},
    )


MPU = "/mlflow/api/2.0/mlflow-artifacts/mpu"


def test_a_multipart_upload_joins_its_parts_into_one_artifact(
    client: Client, http: httpx.Client, project: str
) -> None:
    experiment_id, run_id = start(http, project)
    # As to S3: the URL names the folder, ``path`` the client's file, whose name it keeps.
    root = f"{experiment_id}/{run_id}/artifacts"
    where, local = f"{root}/data", "C:\\Users\\ann\\big.bin"
    parts = [bytes([n]) * 1000 + b"end" for n in range(3)]

    def create(folder: str = where, num_parts: int = 3, file: str = local) -> httpx.Response:
        return http.post(f"{MPU}/create/{folder}", json={"path": file, "num_parts": num_parts})

    def post(what: str, body: dict[str, Any], folder: str = where) -> httpx.Response:
        return http.post(f"{MPU}/{what}/{folder}", json={"path": local, **body})

    def names() -> list[str]:
        return [a.path for a in client.list_artifacts(run_id)]

    info = http.get("/mlflow/api/3.0/mlflow/server-info").json()
    assert info["multipart_uploads_enabled"] is True
    made = create().json()
    urls = [c["url"] for c in made["credentials"]]
    assert [c["part_number"] for c in made["credentials"]] == [1, 2, 3]
    etags: dict[int, str] = {}
    for n in (3, 1, 2, 2):  # any order, and a part sent again replaces itself
        answer = http.put(urls[n - 1], content=parts[n - 1])
        assert answer.status_code == 200, answer.text
        etags[n] = answer.headers["ETag"]
    assert http.put(urls[0].rsplit("/", 1)[0] + "/4", content=b"x").status_code == 400
    assert http.put(f"{MPU}/parts/{'x' * 43}/1", content=b"x").status_code == 404

    listed = [{"part_number": n, "etag": etags[n]} for n in (1, 2, 3)]
    wrong = [{**p, "etag": "0" * 64} if p["part_number"] == 2 else p for p in listed]
    upload_id = made["upload_id"]
    assert post("complete", {"upload_id": upload_id, "parts": wrong}).status_code == 400
    elsewhere = post("complete", {"upload_id": upload_id, "parts": listed}, f"{root}/other")
    assert elsewhere.status_code == 404
    assert names() == []  # nothing named yet

    done = post("complete", {"upload_id": upload_id, "parts": listed})
    assert done.status_code == 200, done.text
    got = http.get(f"/mlflow/api/2.0/mlflow-artifacts/artifacts/{where}/big.bin")
    assert got.content == b"".join(parts)
    [artifact] = client.list_artifacts(run_id)
    assert (artifact.path, artifact.size) == ("data/big.bin", len(b"".join(parts)))
    # Finished: the upload id is spent.
    assert http.put(urls[0], content=parts[0]).status_code == 404
    assert post("complete", {"upload_id": upload_id, "parts": listed}).status_code == 404

    # Aborted: the parts go, nothing is named.
    dropped = create(root, 1, "/home/ann/dropped.bin").json()
    assert http.put(dropped["credentials"][0]["url"], content=b"abc").status_code == 200
    aborted = http.post(
        f"{MPU}/abort/{root}",
        json={"path": "/home/ann/dropped.bin", "upload_id": dropped["upload_id"]},
    )
    assert aborted.status_code == 200, aborted.text
    assert names() == ["data/big.bin"]
    for folder, file, num_parts in (
        (f"{root}/%2E%2E/x", "f", 1),
        (f"{root}/a%5C..%5Cb", "f", 1),
        (root, "/home/ann/..", 1),
        (root, "/home/ann/", 1),
        (root, "f", 0),
        (root, "f", 10_001),
    ):
        answer = create(folder, num_parts, file)
        # refused as bad input, or (a traversal the URL resolves away) as no such place
        assert answer.status_code in (400, 404) and answer.json()["error_code"], answer.text
    assert names() == ["data/big.bin"]
