"""Roles per project, as a generated matrix: viewer, editor and admin of project A, and
a user who only has project B, against every operation on project A."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.client import Client
from plinth.settings import Settings

Op = Callable[[Client, str, Path], Any]
POINT = [{"key": "m", "value": 1.0, "step": 9, "timestamp": 1.0}]


def _upload(c: Client, run_id: str, tmp: Path) -> Any:
    f = tmp / "new.bin"
    f.write_bytes(b"new content")
    return c.log_artifact(run_id, f)


OPERATIONS: dict[str, tuple[str, Op]] = {
    "get_run": ("read", lambda c, r, _: c.get_run(r)),
    "search_runs": ("read", lambda c, r, _: c.search_runs("team-a")),
    "metric_history": ("read", lambda c, r, _: c.metric_history(r, "m")),
    "list_artifacts": ("read", lambda c, r, _: c.list_artifacts(r)),
    "download_artifact": ("read", lambda c, r, t: c.download_artifact(r, "a.txt", t / "dl")),
    "list_members": ("read", lambda c, r, _: c.list_members("team-a")),
    "create_run": ("write", lambda c, r, _: c.create_run("team-a")),
    "log_batch": ("write", lambda c, r, _: c.log_batch(r, metrics=POINT)),
    "end_run": ("write", lambda c, r, _: c.end_run(r, "killed")),
    "resume_run": ("write", lambda c, r, _: c.resume_run(r)),
    "log_artifact": ("write", _upload),
    "add_member": ("admin", lambda c, r, _: c.add_member("team-a", "outsider", "viewer")),
}
ROLES = ["viewer", "editor", "admin", "outsider", "token-b"]  # token-b: root's, scoped to B
ACTOR = {"token-b": "root"}
RANK = {"viewer": 1, "editor": 2, "admin": 3}
NEED = {"read": 1, "write": 2, "admin": 3}


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Project A with a run, a metric and an artifact; a user per role; project B."""
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        tokens = {name: root.create_user(name).token.token for name in RANK}
        tokens["outsider"] = root.create_user("outsider").token.token
        run = root.create_run("team-a")
        root.log_batch(run.id, metrics=[{**POINT[0], "step": 0}])
        (tmp_path / "a.txt").write_text("a")
        root.log_artifact(run.id, tmp_path / "a.txt")
        for role in ("viewer", "editor", "admin"):
            root.add_member("team-a", role, role)
        root.create_run("team-b")
        root.add_member("team-b", "outsider", "admin")
        tokens["token-b"] = root.create_token("b-only", project="team-b", role="admin").token
        yield {"root": root, "tokens": tokens, "run": run.id, "as_user": as_user}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_role_matrix(world: dict[str, Any], role: str, operation: str, tmp_path: Path) -> None:
    need, call = OPERATIONS[operation]
    root: Client = world["root"]
    before = (
        root.get_run(world["run"]),
        root.list_artifacts(world["run"]),
        root.list_members("team-a"),
    )
    actor = ACTOR.get(role, role)
    audited_before = len(list(root.audit_events(actor=actor)))
    with world["as_user"](world["tokens"][role]) as client:
        if role in RANK and RANK[role] >= NEED[need]:
            call(client, world["run"], tmp_path)
            return
        expected = plinth.PermissionDenied if role in RANK else plinth.NotFound
        with pytest.raises(expected) as caught:
            call(client, world["run"], tmp_path)
    if role not in RANK:  # the same answer as for something that does not exist
        assert caught.value.message in (f"no run {world['run']!r}", "no project 'team-a'")
    after = (
        root.get_run(world["run"]),
        root.list_artifacts(world["run"]),
        root.list_members("team-a"),
    )
    assert after == before  # a denial changes nothing
    denials = list(root.audit_events(actor=actor))[audited_before:]
    assert [e.outcome for e in denials] == ["refused"], denials


def test_outsiders_do_not_see_the_project(world: dict[str, Any]) -> None:
    with world["as_user"](world["tokens"]["outsider"]) as outsider:
        assert [p.name for p in outsider.list_projects()] == ["team-b"]
    with world["as_user"](world["tokens"]["viewer"]) as viewer:
        assert [p.name for p in viewer.list_projects()] == ["team-a"]


def test_a_new_projects_creator_is_its_admin(world: dict[str, Any]) -> None:
    with world["as_user"](world["tokens"]["viewer"]) as viewer:
        viewer.create_run("viewers-own")
        assert [(m.user, m.role) for m in viewer.list_members("viewers-own")] == [
            ("viewer", "admin")
        ]
        viewer.add_member("viewers-own", "editor", "editor")
        viewer.remove_member("viewers-own", "editor")
        assert [m.user for m in viewer.list_members("viewers-own")] == ["viewer"]


def test_scoped_tokens_stay_in_their_project_and_role(world: dict[str, Any]) -> None:
    root: Client = world["root"]
    reader = root.create_token("a-reader", project="team-a", role="viewer").token
    with world["as_user"](reader) as scoped:
        assert [p.name for p in scoped.list_projects()] == ["team-a"]
        scoped.get_run(world["run"])
        with pytest.raises(plinth.PermissionDenied):
            scoped.log_batch(world["run"], metrics=POINT)
        with pytest.raises(plinth.NotFound):
            scoped.search_runs("team-b")
        with pytest.raises(plinth.PermissionDenied):  # no platform powers either
            list(scoped.audit_events())
    with world["as_user"](world["tokens"]["viewer"]) as viewer:
        with pytest.raises(plinth.PermissionDenied):  # cannot grant more than one holds
            viewer.create_token("escalate", project="team-a", role="editor")
        with pytest.raises(plinth.InvalidInput):
            viewer.create_token("half", project="team-a")
        token = viewer.create_token("ok", project="team-a", role="viewer")
        assert (token.info.project, token.info.role) == ("team-a", "viewer")
