"""Lineage from dataset versions through runs to model versions: recorded where each
thing happens, walked upstream and downstream, and shown only within the projects the
reader may read."""

from __future__ import annotations

from pathlib import Path

import pytest

import plinth
from plinth import Client
from plinth.errors import InvalidInput, NotFound
from plinth.settings import Settings
from tests.conftest import raw_http
from tests.registry.files import model_files


def _dataset(client: Client, project: str, root: Path, name: str = "customers") -> str:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "t.csv").write_text("id,age\n1,30\n")
    return client.push_dataset(project, name, data, profile=False).ref


def test_a_models_lineage_reaches_back_to_the_dataset_its_run_read(
    client: Client, project: str, tmp_path: Path
) -> None:
    ref = _dataset(client, project, tmp_path)
    with plinth.start_run(project, client=client) as run:
        used = run.use_dataset(ref)
        run.use_dataset(ref)  # again: one edge
        run.log_artifacts(str(model_files(tmp_path / "model")), "model")
    assert used.ref == "customers@1"
    version = client.register_model(run.id, "model", "churn")
    dataset_uri, run_uri = f"datasets:/{project}/customers@1", f"runs:/{run.id}"

    graph = client.lineage(version.uri)
    assert graph.root == version.uri
    assert [(e.src, e.relation, e.dst) for e in graph.edges] == [
        (dataset_uri, "read", run_uri),
        (run_uri, "produced", version.uri),
    ]
    assert {n.uri: (n.kind, n.project) for n in graph.nodes} == {
        dataset_uri: ("datasets", project),
        run_uri: ("runs", project),
        version.uri: ("models", project),
    }
    down = client.lineage(dataset_uri)
    assert {e.dst for e in down.edges} == {run_uri, version.uri}
    assert client.lineage(run_uri).edges == graph.edges  # a run's project found from it
    _dataset(client, project, tmp_path, "other")  # stored, read by no run
    alone = client.lineage(f"datasets:/{project}/other@1")
    assert alone.edges == [] and [n.uri for n in alone.nodes] == [f"datasets:/{project}/other@1"]
    uses = [e for e in client.audit_events(project=project) if e.action == "datasets.use"]
    assert len(uses) == 2 and uses[0].object == "customers@1"

    # serving it: model version → deployment, and from the deployment back to the data
    client.create_deployment(project, "svc", version.uri, runtime="memory")
    service = f"deployments:/{project}/svc"
    assert (version.uri, "served", service) in {
        (e.src, e.relation, e.dst) for e in client.lineage(version.uri).edges
    }
    back = client.lineage(service, project=project)
    assert {n.uri for n in back.nodes} == {dataset_uri, run_uri, version.uri, service}
    client.delete_deployment(project, "svc")  # its history stays
    assert client.lineage(service).edges == back.edges


def test_use_dataset_needs_a_run_and_a_version_that_exists(
    client: Client, project: str, tmp_path: Path
) -> None:
    ref = _dataset(client, project, tmp_path)
    with pytest.raises(InvalidInput):
        client.use_dataset(ref)
    run = client.create_run(project)
    with pytest.raises(NotFound):
        client.use_dataset("customers@7", run_id=run.id)
    with pytest.raises(NotFound):
        client.use_dataset(ref, run_id="0" * 32, project=project)
    http = raw_http(client)
    for bad in ("nonsense", "models:/", "files:/etc/passwd", "runs:/a b"):
        r = http.get(f"/api/v1/projects/{project}/lineage", params={"uri": bad})
        assert r.status_code == 400, bad
    for bad in (  # of a known kind, but not of its form
        "runs:/../../x",
        "runs:/0123abcd",  # a prefix: lineage names a run by its whole id
        f"models:/{project}/churn/latest",
        f"models:/{project}/churn",
        f"datasets:/{project}/customers",
        f"datasets:/{project}/../customers@1",
        f"deployments:/{project}/svc/1",
        f"predictions:/{project}/svc",
    ):
        r = http.get(f"/api/v1/projects/{project}/lineage", params={"uri": bad})
        assert r.status_code == 400, bad
        assert r.json()["error"]["type"] == "InvalidInput", bad
        assert r.json()["error"]["message"].startswith(f"not a lineage URI: {bad!r}; use "), bad


def test_a_reader_sees_only_the_projects_they_may_read(
    own_settings: Settings, tmp_path: Path
) -> None:
    with Client(settings=own_settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=own_settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        ref = _dataset(root, "raw", tmp_path)  # a dataset in project raw
        run = root.create_run("team")
        root.use_dataset(ref, run_id=run.id, project="raw")
        users = {n: root.create_user(n).token.token for n in ("ana", "out")}
        root.add_member("team", "ana", "viewer")
        seen = root.lineage(f"runs:/{run.id}")
        assert {n.project for n in seen.nodes} == {"raw", "team"}
        with as_user(users["ana"]) as ana:  # reads team, not raw
            graph = ana.lineage(f"runs:/{run.id}")
            assert graph.edges == [] and {n.project for n in graph.nodes} == {"team"}
            with pytest.raises(NotFound):
                ana.lineage("datasets:/raw/customers@1")
            with pytest.raises(NotFound):  # a node of another project, named through this one
                ana.lineage("datasets:/raw/customers@1", project="team")
        with as_user(users["out"]) as out, pytest.raises(NotFound):
            out.lineage(f"runs:/{run.id}", project="team")


def test_a_predictions_lineage_is_the_version_that_answered_it(
    client: Client, settings: Settings, project: str, tmp_path: Path
) -> None:
    """A prediction's record names the version that answered; its graph is that
    version's, back to the data, with the prediction added. Records are written by the
    replicas' own recorder, as a served deployment writes them."""
    import sqlalchemy as sa

    from plinth.core.platform import Platform
    from plinth.serving.records import Recorder, RecordSettings, deployment_records_dir
    from plinth.serving.tables import deployments

    ref = _dataset(client, project, tmp_path)
    with plinth.start_run(project, client=client) as run:
        run.use_dataset(ref)
        run.log_artifacts(str(model_files(tmp_path / "model")), "model")
    version = client.register_model(run.id, "model", "churn")
    client.create_deployment(project, "svc", version.uri, runtime="memory")
    platform = Platform.open(settings)
    try:
        with platform.db.read() as conn:
            project_id = platform.projects.id_of(conn, project)
            dep_id = conn.execute(
                sa.select(deployments.c.id).where(
                    deployments.c.project_id == project_id, deployments.c.name == "svc"
                )
            ).scalar_one()
    finally:
        platform.close()
    recorder = Recorder(RecordSettings(deployment_records_dir(settings.home / "serving", dep_id)))
    for n in range(5):
        recorder.submit({"prediction_id": f"p{n}", "at": 1.0, "model": "churn", "version": "1"})
    recorder.close()

    uri = f"predictions:/{project}/svc/p3"
    graph = client.lineage(uri)
    assert graph.root == uri
    edges = {(e.src, e.relation, e.dst) for e in graph.edges}
    assert (version.uri, "answered", uri) in edges
    assert (f"deployments:/{project}/svc", "recorded", uri) in edges
    assert (f"runs:/{run.id}", "produced", version.uri) in edges
    assert (f"datasets:/{project}/customers@1", "read", f"runs:/{run.id}") in edges
    for missing in (f"predictions:/{project}/svc/nope", "predictions:/other/svc/p3"):
        with pytest.raises(NotFound):
            client.lineage(missing, project=project)


def test_a_node_outside_the_project_is_one_404_whether_it_exists_or_not(
    own_settings: Settings, tmp_path: Path
) -> None:
    """No existence oracle: a member of pa only, asking through pa about pb's model
    version, deployment, run or dataset version, gets the very answer given for one
    that exists nowhere; so does a platform admin, who may read pb."""
    with Client(settings=own_settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=own_settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        ref = _dataset(root, "pb", tmp_path, "d1")
        with plinth.start_run("pb", client=root) as run:
            run.use_dataset(ref)
            run.log_artifacts(str(model_files(tmp_path / "model")), "model")
        root.register_model(run.id, "model", "m1")
        root.create_deployment("pb", "dep1", "models:/pb/m1/1", runtime="memory")
        quiet = root.create_run("pa")  # in pa, with no lineage yet
        ana_token = root.create_user("ana").token.token
        root.add_member("pa", "ana", "viewer")
        with pytest.raises(NotFound, match=r"^no models:/pb/m1/1 in project 'pa'$"):
            root.lineage("models:/pb/m1/1", project="pa")
    foreign_and_absent = [
        ("models:/pb/m1/1", "models:/pb/nonexist/1"),
        ("deployments:/pb/dep1", "deployments:/pb/nodep"),
        (f"runs:/{run.id}", f"runs:/{'0' * 32}"),
        ("datasets:/pb/d1@1", "datasets:/pb/d1@9"),
        ("datasets:/pb/d1@1", "datasets:/pa/d1@1"),  # absent from pa itself
        ("models:/pb/m1/1", "models:/pa/m1/1"),
        ("deployments:/pb/dep1", "deployments:/pa/dep1"),
    ]
    with as_user(ana_token) as ana:
        http = raw_http(ana)
        for pair in foreign_and_absent:
            answers = []
            for uri in pair:
                with pytest.raises(NotFound) as caught:
                    ana.lineage(uri, project="pa")
                assert caught.value.message == f"no {uri} in project 'pa'"
                r = http.get("/api/v1/projects/pa/lineage", params={"uri": uri})
                answers.append((r.status_code, r.text.replace(uri, "URI")))
            assert answers[0] == answers[1], pair
        alone = ana.lineage(f"runs:/{quiet.id}")
        assert alone.edges == []
        assert [(n.uri, n.project) for n in alone.nodes] == [(f"runs:/{quiet.id}", "pa")]
