"""The registry's bookkeeping over the real store (SQLite and Postgres): versions pinned
by digest, idempotent registration, aliases with their history, cards, roles, audit.
No model is loaded here: the server never loads one."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from plinth import Client
from plinth.errors import (
    Conflict,
    CorruptArtifact,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unprocessable,
)
from plinth.registry.uri import ModelRef, parse
from plinth.settings import Settings
from tests.conftest import raw_http
from tests.registry.files import SIGNATURE, model_files


def _logged(client: Client, project: str, tmp_path: Path, path: str = "model", **kw: object) -> str:
    run = client.create_run(project, params={"lr": 0.1}, tags={"team": "churn"})
    client.log_batch(run.id, metrics=[{"key": "auc", "value": 0.91, "step": 3}])
    client.log_artifacts(run.id, model_files(tmp_path / path, **kw), path)  # type: ignore[arg-type]
    return run.id


def test_a_version_pins_its_files_by_a_digest_anyone_can_check(
    client: Client, project: str, tmp_path: Path
) -> None:
    run_id = _logged(client, project, tmp_path)
    v = client.register_model(run_id, "model", "churn")
    assert (v.project, v.name, v.version, v.uri) == (
        project,
        "churn",
        1,
        f"models:/{project}/churn/1",
    )
    assert (v.flavor, v.signature, v.run_id, v.status) == ("sklearn", SIGNATURE, run_id, "ready")
    assert v.created_by == "local" and not v.needs_pickle and not v.unsafe_pickle
    lines = sorted(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.stat().st_size}  {p.name}\n"
        for p in (tmp_path / "model").iterdir()
    )
    assert v.digest == hashlib.sha256("".join(lines).encode()).hexdigest()

    again = client.register_model(run_id, "model", "churn")  # a retry: the same version
    assert again.version == 1 and len(client.list_model_versions(project, "churn")) == 1
    other = _logged(client, project, tmp_path / "b", content=b"other weights")
    assert client.register_model(other, "model", "churn").version == 2
    model = client.get_model(project, "churn")
    assert (model.versions, model.latest_version) == (2, 2)


def test_a_versions_files_cannot_be_replaced(client: Client, project: str, tmp_path: Path) -> None:
    run_id = _logged(client, project, tmp_path)
    client.register_model(run_id, "model", "churn")
    (tmp_path / "swap").mkdir()
    (tmp_path / "swap" / "model.bin").write_bytes(b"swapped")
    with pytest.raises(Conflict):
        client.log_artifact(run_id, tmp_path / "swap" / "model.bin", "model/model.bin")
    [version] = client.list_model_versions(project, "churn")
    dest = tmp_path / "dl"
    client.download_model(version.uri, dest)
    assert (dest / "model.bin").read_bytes() == b"weights"


def test_concurrent_registrations_number_versions_one_after_the_other(
    client: Client, project: str, tmp_path: Path
) -> None:
    runs = [_logged(client, project, tmp_path / str(i), content=bytes([i])) for i in range(6)]
    numbers: list[int] = []
    threads = [
        threading.Thread(
            target=lambda r=r: numbers.append(client.register_model(r, "model", "churn").version)
        )
        for r in runs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("meta", "files", "message"),
    [
        (None, ["model.bin"], "logged no model/MLmodel.json"),
        ("{not json", ["model.bin", "MLmodel.json"], "not a model description"),
        ('{"flavor": "Sk Learn"}', ["model.bin", "MLmodel.json"], "flavor"),
        ('{"flavor": "onnx", "files": ["model.onnx"]}', ["MLmodel.json"], "model.onnx"),
        # a signature every card, page and replica reads after (they answered 500)
        ('{"flavor": "onnx", "signature": {"inputs": ["x"]}}', ["MLmodel.json"], "inputs.0"),
        ('{"flavor": "onnx", "signature": {"inputs": 5}}', ["MLmodel.json"], "inputs"),
    ],
)
def test_files_that_do_not_describe_a_model_are_refused_by_name(
    client: Client,
    project: str,
    tmp_path: Path,
    meta: str | None,
    files: list[str],
    message: str,
) -> None:
    run = client.create_run(project)
    folder = tmp_path / "model"
    folder.mkdir()
    for name in files:
        (folder / name).write_text(meta if name == "MLmodel.json" and meta else "x")
    client.log_artifacts(run.id, folder, "model")
    with pytest.raises(InvalidInput, match=message):
        client.register_model(run.id, "model", "churn")
    with pytest.raises(NotFound):
        client.get_model(project, "churn")  # nothing was made


@pytest.mark.parametrize(
    ("extra", "clash"),
    [
        (["a", "a/b"], "'a' and 'a/b' clash"),  # 'a' both a file and a folder
        (["MLmodel.json/x"], "'MLmodel.json' and 'MLmodel.json/x' clash"),
        (["d/e", "d/e/f/g.bin"], "'d/e' and 'd/e/f/g.bin' clash"),
        (["w" * 256], "over 255 bytes"),  # no Linux filesystem holds the name
    ],
)
def test_files_that_cannot_be_written_out_as_one_tree_are_refused_by_name(
    client: Client, project: str, tmp_path: Path, extra: list[str], clash: str
) -> None:
    """Registered, such a version could never be served: writing its files out for a
    replica (or a download) fails. Refused at registration, with nothing stored."""
    run_id = _logged(client, project, tmp_path)
    (tmp_path / "one").write_bytes(b"x")
    for name in extra:
        client.log_artifact(run_id, tmp_path / "one", f"model/{name}")
    with pytest.raises(Unprocessable, match=clash) as refused:
        client.register_model(run_id, "model", "churn")
    assert refused.value.status_code == 422
    with pytest.raises(NotFound):
        client.get_model(project, "churn")
    refusals = [e for e in client.audit_events(project=project) if e.outcome == "refused"]
    assert [e.action for e in refusals] == ["models.register"]


def test_names_that_differ_in_case_only_are_two_files(
    client: Client, project: str, tmp_path: Path
) -> None:
    run_id = _logged(client, project, tmp_path)
    for name, content in (("Weights.bin", b"upper"), ("weights.bin", b"lower")):
        (tmp_path / name).write_bytes(content)
        client.log_artifact(run_id, tmp_path / name, f"model/{name}")
    v = client.register_model(run_id, "model", "churn")
    client.download_model(v.uri, tmp_path / "dl")
    assert (tmp_path / "dl" / "Weights.bin").read_bytes() == b"upper"
    assert (tmp_path / "dl" / "weights.bin").read_bytes() == b"lower"


def test_a_flavor_no_server_can_load_is_refused_naming_the_known_ones(
    client: Client, project: str, tmp_path: Path
) -> None:
    run_id = _logged(client, project, tmp_path, flavor="cobol")
    with pytest.raises(Unprocessable, match="flavor 'cobol'") as refused:
        client.register_model(run_id, "model", "churn")
    assert refused.value.status_code == 422
    assert "sklearn, pytorch, keras, tensorflow, python" in refused.value.message
    with pytest.raises(NotFound):
        client.get_model(project, "churn")
    pickled = _logged(client, project, tmp_path / "p", flavor="python", unsafe_pickle=True)
    assert client.register_model(pickled, "model", "churn").flavor == "python"


def test_a_run_of_another_project_is_refused(client: Client, project: str, tmp_path: Path) -> None:
    run_id = _logged(client, project, tmp_path)
    client.create_run(f"{project}-other")
    with pytest.raises(InvalidInput, match="not in project"):
        client.register_model(run_id, "model", "churn", project=f"{project}-other")


def test_aliases_move_with_their_history_and_resolve_as_uris(
    client: Client, project: str, tmp_path: Path
) -> None:
    for i in range(3):
        client.register_model(
            _logged(client, project, tmp_path / str(i), content=bytes([i])), "model", "churn"
        )
    first = client.set_model_alias(project, "churn", "champion", 1, reason="first good one")
    assert (first.version, first.previous, first.actor) == (1, None, "local")
    moved = client.set_model_alias(project, "churn", "champion", 2, reason="better AUC")
    assert (moved.version, moved.previous, moved.reason) == (2, 1, "better AUC")
    client.set_model_alias(project, "churn", "challenger", 3)
    assert client.get_model_version(f"models:/{project}/churn@champion").version == 2
    assert client.get_model_version(project, "churn", "challenger").version == 3
    assert client.get_model_version(f"models:/{project}/churn/1").aliases == []
    assert client.get_model(project, "churn").aliases == {"challenger": 3, "champion": 2}

    client.archive_model_version(project, "churn", 1)
    with pytest.raises(Conflict, match="archived"):
        client.set_model_alias(project, "churn", "champion", 1)
    gone = client.delete_model_alias(project, "churn", "challenger", reason="retired")
    assert (gone.version, gone.previous) == (None, 3)
    with pytest.raises(NotFound):
        client.get_model_version(f"models:/{project}/churn@challenger")
    history = client.model_alias_history(project, "churn", "champion")
    assert [(e.previous, e.version, e.reason) for e in history] == [
        (1, 2, "better AUC"),
        (None, 1, "first good one"),
    ]
    moves = [e for e in client.audit_events(project=project) if e.action == "models.alias"]
    reasons = [m.details.get("reason") for m in moves if m.outcome == "ok"]
    assert reasons == ["first good one", "better AUC", ""]


def test_the_card_tells_lineage_params_metrics_signature_and_alias_history(
    client: Client, project: str, tmp_path: Path
) -> None:
    run_id = _logged(client, project, tmp_path)
    v = client.register_model(run_id, "model", "churn", description="predicts churn")
    client.set_model_alias(project, "churn", "champion", 1, reason="launch")
    client.update_model_version(
        v.uri,
        card={"intended_use": "Rank accounts <script>alert(1)</script>", "limitations": "EU only"},
    )
    card = client.model_card(v.uri)
    for expected in (
        "# Model card: churn version 1",
        f"sha256:{v.digest}",
        run_id,
        "| lr | 0.1 |",
        "| auc | 0.91 |",
        "| input | x | float64 | [-1] |",
        "EU only",
        "launch",
        "predicts churn",
    ):
        assert expected in card, expected
    html = client.model_card(project, "churn", 1, format="html")
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert (
        raw_http(client)
        .get(f"/api/v1/projects/{project}/models/churn/versions/1/card", params={"format": "html"})
        .headers["content-type"]
        .startswith("text/html")
    )


def test_download_checks_every_byte_against_the_digest(
    settings: Settings, client: Client, project: str, tmp_path: Path
) -> None:
    run_id = _logged(client, project, tmp_path)
    v = client.register_model(run_id, "model", "churn")
    dest = tmp_path / "dl"
    assert client.download_model(v.uri, dest).digest == v.digest
    assert json.loads((dest / "MLmodel.json").read_text())["flavor"] == "sklearn"
    digest = hashlib.sha256(b"weights").hexdigest()
    [blob] = [p for p in settings.home.rglob(digest[2:]) if p.is_file()]  # on local disk
    blob.write_bytes(b"tampered")
    with pytest.raises(CorruptArtifact):
        client.download_model(v.uri, tmp_path / "again")
    assert not (tmp_path / "again" / "model.bin").exists()


def test_marking_a_pickle_servable_takes_a_platform_admin(
    own_settings: Settings, project: str, tmp_path: Path
) -> None:
    """Its pickle would run as the server's own user, which reads every project: not
    for an editor, nor for a project's admin (any user who made one), nor for a platform
    admin's token scoped to the project. A project admin may unmark it."""
    settings = own_settings  # logins turn on for the whole database
    with Client(settings=settings) as anonymous:
        root = Client(
            settings=settings.model_copy(update={"token": anonymous.init_admin("root").token.token})
        )
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    editor = as_user(root.create_user("ed").token.token)
    admin = as_user(root.create_user("ada").token.token)
    run_id = _logged(root, project, tmp_path, flavor="python", files=["model.bin"])
    scoped = as_user(root.create_token("s", project=project, role="admin").token)
    root.add_member(project, "ed", "editor")
    root.add_member(project, "ada", "admin")
    v = editor.register_model(run_id, "model", "churn")
    assert v.needs_pickle and not v.unsafe_pickle
    for refused in (editor, admin, scoped):
        with pytest.raises(PermissionDenied):
            refused.update_model_version(v.uri, unsafe_pickle=True)
    assert root.update_model_version(v.uri, unsafe_pickle=True).unsafe_pickle
    assert not admin.update_model_version(v.uri, unsafe_pickle=False).unsafe_pickle
    marks = [e for e in root.audit_events(project=project) if e.action == "models.update"]
    assert [m.outcome for m in marks] == ["refused"] * 3 + ["ok"] * 2
    for client in (editor, admin, scoped, root):
        client.close()


@pytest.mark.parametrize(
    "text",
    [
        "models:/p/m",
        "models:/p/m/0",
        "models:/p/m/x",
        "models:/p/m@1",
        "models:/../m/1",
        "m/1",
        "models:/p/m@a/b",
    ],
)
def test_bad_uris_are_refused_by_name(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse(text)


def test_uris_round_trip() -> None:
    assert parse("models:/churn/churn@champion") == ModelRef("churn", "churn", alias="champion")
    assert str(parse("models:/churn/churn/12")) == "models:/churn/churn/12"


def test_a_pickle_that_would_write_a_file_is_stored_and_never_loaded(
    client: Client, project: str, tmp_path: Path
) -> None:
    from tests.registry.flavor_models import CreatesFileOnLoad

    marker = tmp_path / "pwned"
    run = client.create_run(project)
    v = client.log_model(run.id, CreatesFileOnLoad(marker), "evil", flavor="python")
    assert v.needs_pickle and not v.unsafe_pickle and v.flavor == "python"
    client.model_card(v.uri, format="html")  # every read of it, on the server
    client.list_model_versions(project, "evil")
    client.download_model(v.uri, tmp_path / "dl")
    assert (tmp_path / "dl" / "MLmodel.json").exists()
    assert not marker.exists()  # nothing unpickled it
