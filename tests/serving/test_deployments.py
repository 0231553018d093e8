"""Deployments' control plane on SQLite and Postgres, with replicas in the memory
runtime (the fake): create, canary, shadow, promote, rollback, scale, delete, their
history and audit, and the refusals."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from plinth import Client
from plinth.errors import Conflict, InvalidInput, NotFound
from tests.registry.files import model_files


def _versions(client: Client, project: str, tmp_path: Path, count: int) -> None:
    run = client.create_run(project)
    for n in range(count):
        client.log_artifacts(run.id, model_files(tmp_path / f"m{n}", f"w{n}".encode()), f"m{n}")
        client.register_model(run.id, f"m{n}", "churn")
    client.set_model_alias(project, "churn", "champion", 1)


def _uri(project: str, tail: str) -> str:
    return f"models:/{project}/churn{tail}"


def _split(d) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    return [(e.version, e.weight) for e in d.split]


def test_create_canary_promote_rollback_scale_delete(
    client: Client, project: str, tmp_path: Path
) -> None:
    _versions(client, project, tmp_path, 3)
    d = client.create_deployment(
        project, "svc", _uri(project, "@champion"), replicas=2, max_replicas=4, runtime="memory"
    )
    assert _split(d) == [(1, 100)] and d.split[0].uri.endswith("@champion")
    assert d.url == f"http://127.0.0.1:{d.port}" and d.desired_replicas == 2
    assert [r.state for r in d.replicas] == ["ready", "ready"]

    d = client.update_deployment(project, "svc", canary=_uri(project, "/2"), weight=10)
    assert _split(d) == [(1, 90), (2, 10)]
    d = client.update_deployment(project, "svc", shadow=_uri(project, "/3"), reason="try v3")
    assert d.shadow is not None and d.shadow.version == 3
    d = client.rollback_deployment(project, "svc")  # undoes the shadow
    assert d.shadow is None and _split(d) == [(1, 90), (2, 10)]
    d = client.promote_deployment(project, "svc", reason="v2 is good")
    assert _split(d) == [(2, 100)]
    client.archive_model_version(_uri(project, "/1"))  # not back into service …
    with pytest.raises(Conflict, match="version 1 of 'churn' is archived"):
        client.rollback_deployment(project, "svc")
    assert _split(client.get_deployment(project, "svc")) == [(2, 100)]
    client.update_model_version(project, "churn", 1, status="ready")  # … until restored
    d = client.rollback_deployment(project, "svc", reason="v2 is not")
    assert _split(d) == [(1, 90), (2, 10)]

    d = client.scale_deployment(project, "svc", 3)
    assert d.desired_replicas == 3 and len(d.replicas) == 3
    d = client.scale_deployment(project, "svc", 1)
    assert len(d.replicas) == 1
    with pytest.raises(InvalidInput, match="between"):
        client.scale_deployment(project, "svc", 5)

    history = client.deployment_history(project, "svc")
    assert [e.action for e in history] == [
        "scale",
        "scale",
        "rollback",
        "promote",
        "rollback",
        "update",
        "update",
        "create",
    ]
    assert history[3].reason == "v2 is good" and history[0].actor == "local"
    [listed] = client.list_deployments(project)
    assert listed.name == "svc"
    actions = {e.action for e in client.audit_events(project=project)}
    assert {"deployments.create", "deployments.promote", "deployments.rollback"} <= actions

    client.delete_deployment(project, "svc")
    with pytest.raises(NotFound):
        client.get_deployment(project, "svc")
    assert client.list_deployments(project) == []


def test_refusals(client: Client, project: str, tmp_path: Path) -> None:
    _versions(client, project, tmp_path, 1)
    run = client.create_run(project)
    pickled = model_files(tmp_path / "pk", b"p", flavor="python", unsafe_pickle=True)
    client.log_artifacts(run.id, pickled, "pk")
    client.register_model(run.id, "pk", "churn")  # version 2 needs pickle
    with pytest.raises(Conflict, match="unsafe_pickle"):
        client.create_deployment(project, "svc", _uri(project, "/2"), runtime="memory")
    client.create_deployment(project, "svc", _uri(project, "/1"), runtime="memory")
    with pytest.raises(Conflict, match="unsafe_pickle"):
        client.update_deployment(project, "svc", canary=_uri(project, "/2"), weight=10)
    client.update_model_version(project, "churn", 2, unsafe_pickle=True)
    for weight in (0, 100, True):  # a canary of no traffic, or of all of it: not one
        with pytest.raises(InvalidInput, match="weight"):
            client.update_deployment(project, "svc", canary=_uri(project, "/2"), weight=weight)
    d = client.update_deployment(project, "svc", canary=_uri(project, "/2"), weight=10)
    assert _split(d) == [(1, 90), (2, 10)]

    with pytest.raises(Conflict, match="already"):
        client.create_deployment(project, "svc", _uri(project, "/1"), runtime="memory")
    with pytest.raises(NotFound):
        client.create_deployment(project, "x", _uri(project, "/9"), runtime="memory")
    with pytest.raises(InvalidInput, match="own project"):
        client.create_deployment(project, "y", "models:/other/churn/1", runtime="memory")
    client.create_deployment(project, "fresh", _uri(project, "/1"), runtime="memory")
    with pytest.raises(Conflict, match="no change"):
        client.rollback_deployment(project, "fresh")
    with pytest.raises(Conflict, match="no canary"):
        client.promote_deployment(project, "fresh")
    with pytest.raises(NotFound):
        client.get_deployment(project, "nope")
    refused = [e for e in client.audit_events(project=project) if e.outcome == "refused"]
    assert any(e.action == "deployments.create" for e in refused)


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_port_another_program_listens_on_is_refused(
    client: Client, project: str, tmp_path: Path, reuse_port: bool
) -> None:
    """Replicas bind the deployment's port with SO_REUSEPORT: on a port someone else
    holds they would fail, or (the stranger having set SO_REUSEPORT too) share its
    traffic. Refused at create, and nothing is made."""
    _versions(client, project, tmp_path, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stranger:
        if reuse_port:
            stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        with pytest.raises(Conflict, match=f"port {port} is in use on 127.0.0.1 by another") as e:
            client.create_deployment(
                project, "svc", _uri(project, "/1"), port=port, runtime="memory"
            )
        assert e.value.status_code == 409
        with pytest.raises(NotFound):
            client.get_deployment(project, "svc")
    d = client.create_deployment(project, "svc", _uri(project, "/1"), port=port, runtime="memory")
    assert d.port == port  # free again: taken
    with pytest.raises(Conflict, match=f"port {port} is taken by another deployment"):
        client.create_deployment(project, "other", _uri(project, "/1"), port=port, runtime="memory")


def test_an_alias_on_an_archived_version_is_refused_naming_the_alias(
    client: Client, project: str, tmp_path: Path
) -> None:
    _versions(client, project, tmp_path, 2)  # champion: version 1
    client.archive_model_version(_uri(project, "/1"))
    with pytest.raises(Conflict, match=r"version 1 of 'churn' is archived \(models:/") as e:
        client.create_deployment(project, "svc", _uri(project, "@champion"), runtime="memory")
    assert "@champion points to it" in e.value.message and "move the alias" in e.value.message
    client.create_deployment(project, "svc", _uri(project, "/2"), runtime="memory")
    with pytest.raises(Conflict, match="archived"):
        client.update_deployment(project, "svc", canary=_uri(project, "@champion"), weight=10)
    with pytest.raises(Conflict, match="archived"):
        client.update_deployment(project, "svc", shadow=_uri(project, "@champion"))


def test_a_version_no_flavor_loads_is_not_deployed(
    client: Client, project: str, tmp_path: Path
) -> None:
    """An MLflow model Plinth has no loader for is kept (and downloaded), never
    deployed, even once marked unsafe_pickle: its replicas could only crash."""
    run = client.create_run(project)
    mlflow = tmp_path / "mlflow"
    mlflow.mkdir()
    (mlflow / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n")
    client.log_artifacts(run.id, mlflow, "model")
    v = client.register_model(run.id, "model", "churn")
    assert (v.flavor, v.needs_pickle) == ("mlflow", True)
    client.update_model_version(v.uri, unsafe_pickle=True)
    with pytest.raises(Conflict, match="'mlflow' model, which Plinth has no loader for"):
        client.create_deployment(project, "svc", v.uri, runtime="memory")
