"""Roles per project through the SDK: who sees which project, what a project's creator
may do, and how far a scoped token reaches. (The route-by-route matrix of every
permission is test_route_matrix.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.client import Client
from plinth.settings import Settings
from tests.conftest import raw_http

POINT = [{"key": "m", "value": 1.0, "step": 9, "timestamp": 1.0}]


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Project A with a run, a metric and an artifact; a user per role; project B."""
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        tokens = {
            name: root.create_user(name).token.token for name in ("viewer", "editor", "admin")
        }
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


def test_refusals_say_which_role_falls_short(world: dict[str, Any]) -> None:
    root: Client = world["root"]
    run, tokens = world["run"], world["tokens"]
    reader = root.create_token("a-reader", project="team-a", role="viewer").token
    write: Callable[[Client], Any] = lambda c: c.log_batch(run, metrics=POINT)  # noqa: E731
    administer: Callable[[Client], Any] = lambda c: c.add_member("team-a", "outsider", "viewer")  # noqa: E731
    for token, call, message in (
        (reader, write, "this token is limited to viewer in project 'team-a', and a viewer "),
        (tokens["viewer"], write, "viewer is a viewer of this project, and a viewer "),
        (tokens["editor"], administer, "editor is an editor of this project, and an editor "),
    ):
        with world["as_user"](token) as client, pytest.raises(plinth.PermissionDenied) as caught:
            call(client)
        verb = "cannot write" if call is write else "cannot administer it"
        assert caught.value.message == message + verb
    with (
        world["as_user"](tokens["viewer"]) as viewer,
        pytest.raises(plinth.PermissionDenied) as caught,
    ):
        list(viewer.audit_events())
    assert caught.value.message == "viewer is not a platform admin"


def test_a_taken_name_is_all_a_collision_reveals(world: dict[str, Any]) -> None:
    with world["as_user"](world["tokens"]["outsider"]) as outsider:
        with pytest.raises(plinth.NotFound, match="the name is taken"):
            outsider.create_run("team-a")
        with pytest.raises(plinth.Conflict, match="exists"):
            outsider.create_project("team-a")
        with pytest.raises(plinth.NotFound) as hidden:  # reads learn nothing more
            outsider.search_runs("team-a")
        assert hidden.value.message == "no project 'team-a'"
        assert "team-a" not in [p.name for p in outsider.list_projects()]


def test_a_run_id_prefix_finds_only_runs_one_may_read(world: dict[str, Any]) -> None:
    """An outsider's run whose id shares a prefix with a hidden run's: to the outsider
    the prefix finds the outsider's own run, not an ambiguity (which would tell the
    hidden id digit by digit); to the project's viewer it finds that project's run."""
    hidden: str = world["run"]
    prefix = hidden[:8]
    mine = prefix + ("0" if hidden[8] != "0" else "1") + "f" * 23
    with world["as_user"](world["tokens"]["outsider"]) as outsider:
        with pytest.raises(plinth.NotFound) as caught:
            outsider.get_run(prefix)  # as any prefix of no run
        assert caught.value.message == f"no run {prefix!r}"
        assert outsider.create_run("team-b", id=mine).id == mine
        assert outsider.get_run(prefix).id == mine
    with world["as_user"](world["tokens"]["viewer"]) as viewer:
        assert viewer.get_run(prefix).id == hidden
    with pytest.raises(plinth.InvalidInput, match="ambiguous"):
        world["root"].get_run(prefix)  # an admin reads both


def test_a_project_keeps_its_last_admin(world: dict[str, Any]) -> None:
    """Neither removing nor demoting the last admin: 409, and nothing changes. A
    platform admin is refused the same: the rule is about the project."""
    with world["as_user"](world["tokens"]["viewer"]) as alice:
        alice.create_project("alone")
        http = raw_http(alice)
        refusals = [
            lambda c: c.remove_member("alone", "viewer"),
            lambda c: c.add_member("alone", "viewer", "editor"),
            lambda c: c.add_member("alone", "viewer", "viewer"),
        ]
        for client in (alice, world["root"]):
            for refuse in refusals:
                with pytest.raises(plinth.Conflict) as caught:
                    refuse(client)
                assert caught.value.message == (
                    "project 'alone' would have no admin left; make another member admin first"
                )
        assert http.delete("/api/v1/projects/alone/members/viewer").status_code == 409
        assert [(m.user, m.role) for m in alice.list_members("alone")] == [("viewer", "admin")]

        alice.add_member("alone", "viewer", "admin")  # an admin stays one: allowed
        alice.add_member("alone", "editor", "admin")
        alice.add_member("alone", "viewer", "editor")  # another admin is left
        with world["as_user"](world["tokens"]["editor"]) as bob:
            with pytest.raises(plinth.Conflict):
                bob.remove_member("alone", "editor")
            bob.remove_member("alone", "viewer")
            assert [(m.user, m.role) for m in bob.list_members("alone")] == [("editor", "admin")]


def test_two_admins_removing_each_other_at_once_leave_one(world: dict[str, Any]) -> None:
    """The admins' rows are locked while the last one is looked for: of two admins who
    remove each other at once, one wins; the other is refused (409), or finds itself
    no longer a member (404), by the time its turn comes."""
    import threading

    root: Client = world["root"]
    root.create_project("pair")
    root.add_member("pair", "viewer", "admin")
    root.add_member("pair", "editor", "admin")
    root.remove_member("pair", "root")
    clients = {me: world["as_user"](world["tokens"][me]) for me in ("viewer", "editor")}
    for client in clients.values():  # each app built and warm before the race starts
        client.list_members("pair")
    barrier = threading.Barrier(2, timeout=30)
    outcomes: dict[str, str] = {}

    def remove(me: str, other: str) -> None:
        barrier.wait()
        try:
            clients[me].remove_member("pair", other)
            outcomes[me] = "removed"
        except (plinth.Conflict, plinth.NotFound) as exc:
            outcomes[me] = type(exc).__name__

    threads = [
        threading.Thread(target=remove, args=pair, daemon=True)
        for pair in (("viewer", "editor"), ("editor", "viewer"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for client in clients.values():
        client.close()
    assert sorted(outcomes.values()) in (["Conflict", "removed"], ["NotFound", "removed"])
    winner = next(me for me, outcome in outcomes.items() if outcome == "removed")
    assert [(m.user, m.role) for m in root.list_members("pair")] == [(winner, "admin")]
