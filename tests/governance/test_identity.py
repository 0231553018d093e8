"""Identities and tokens: no default credential, deny by default once an admin exists."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute

import plinth
from plinth.api.auth import declared_permissions as _declared
from plinth.api.context import all_routes
from plinth.client import Client
from plinth.core.access import Permission
from plinth.core.platform import Platform
from plinth.server.app import create_app
from plinth.settings import Settings
from tests.conftest import make_settings, raw_http
from tests.test_cli import plinth_cmd


@pytest.fixture
def admin(settings: Settings) -> Iterator[tuple[Client, str]]:
    """A home with a first admin: (an unauthenticated client, the admin's token)."""
    with Client(settings=settings) as anonymous:
        created = anonymous.init_admin("root")
        yield anonymous, created.token.token


def _as(settings: Settings, token: str | None) -> Client:
    return Client(settings=settings.model_copy(update={"token": token}))


def _filled(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0" * 32, path).replace(":path", "")


def test_before_the_first_admin_everything_is_open_and_local(client: Client) -> None:
    run = client.create_run("p-open")
    assert client.get_run(run.id).status == "running"
    assert [e.actor for e in client.audit_events(project="p-open")] == ["local", "local"]


def test_the_first_admin_is_created_once(admin: tuple[Client, str], settings: Settings) -> None:
    anonymous, token = admin
    with pytest.raises(plinth.Conflict, match=r"^an admin already exists"):
        anonymous.init_admin("again")
    with _as(settings, token) as root:
        with pytest.raises(plinth.Conflict):
            root.init_admin("again")
        assert [t.user for t in root.list_tokens()] == ["root"]


def test_before_the_first_admin_nobody_makes_users_or_tokens_over_http(
    client: Client, settings: Settings
) -> None:
    """On a fresh home every request is the local user; it must not get itself an admin
    token over HTTP (a fresh server is reachable by anyone on loopback)."""
    http = raw_http(client)
    for path, body in (
        ("/api/v1/users", {"name": "mallory", "is_admin": True}),
        ("/api/v1/tokens", {"name": "mine"}),
    ):
        response = http.post(path, json=body)
        assert response.status_code == 403, (path, response.text)
        assert "plinth admin init" in response.json()["error"]["message"]
    assert http.post("/api/v1/admin/init", json={"name": "mallory"}).status_code in (404, 405)
    with pytest.raises(plinth.PermissionDenied, match="plinth admin init"):
        client.create_user("mallory", is_admin=True)
    created = client.init_admin("root")  # over the home itself: the one way in
    assert (created.user.name, created.user.is_admin) == ("root", True)
    with _as(settings, created.token.token) as root:
        assert [t.user for t in root.list_tokens()] == ["root"]
        refused = [e for e in root.audit_events() if e.action in ("users.create", "tokens.create")]
        assert [e.outcome for e in refused] == ["refused"] * 3


def test_a_client_of_a_server_cannot_make_the_first_admin(tmp_path: Path) -> None:
    remote = Client(url="http://127.0.0.1:9", settings=make_settings(tmp_path / "h"))
    with remote, pytest.raises(plinth.PermissionDenied, match="plinth admin init"):
        remote.init_admin("root")


def test_every_route_without_credentials_is_401_and_audited(
    admin: tuple[Client, str], settings: Settings
) -> None:
    anonymous, token = admin
    http = raw_http(anonymous)
    checked = 0
    for route in all_routes(create_app(settings).routes):
        if not isinstance(route, APIRoute):
            continue
        public = _declared(route.dependant) == [Permission.PUBLIC]
        for method in route.methods:
            if public:
                continue
            response = http.request(method, _filled(route.path), json={})
            checked += 1
            if route.include_in_schema or route.path == "/metrics":
                assert response.status_code == 401, (method, route.path, response.text)
                if route.path.startswith("/mlflow/"):  # MLflow's shape, for its client
                    assert response.json()["error_code"] == "UNAUTHENTICATED"
                else:
                    assert response.json()["error"]["type"] == "Unauthenticated"
            else:  # a web page: off to the login form, not an error page
                assert response.status_code == 303, (method, route.path)
                assert response.headers["location"].startswith("/login?next=")
    assert checked >= 20
    with _as(settings, token) as root:
        refused = [e for e in root.audit_events(action="auth") if e.outcome == "refused"]
    assert len(refused) == checked
    assert {e.actor for e in refused} == {"anonymous"}


def test_a_token_lets_its_user_in_and_the_trail_names_them(
    admin: tuple[Client, str], settings: Settings
) -> None:
    _, token = admin
    with _as(settings, token) as root:
        run = root.create_run("p-auth")
        [event] = list(root.audit_events(project="p-auth", action="runs.create"))
        assert (event.actor, event.token_id) == ("root", token.split("_")[1])
        assert root.get_run(run.id).id == run.id


def test_tokens_are_stored_hashed(admin: tuple[Client, str], platform: Platform) -> None:
    _, token = admin
    secret = token.split("_")[2]
    with platform.db.engine.connect() as conn:
        for table in ("tokens", "users", "audit_events"):
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).all()
            assert secret not in repr(rows)


@pytest.mark.parametrize("spoil", ["revoke", "expire", "garble", "no-scheme"])
def test_revoked_expired_and_bad_tokens_are_refused(
    admin: tuple[Client, str], settings: Settings, platform: Platform, spoil: str
) -> None:
    _, root_token = admin
    with _as(settings, root_token) as root:
        new = root.create_token("ci", expires_in_days=30)
        if spoil == "revoke":
            root.revoke_token(new.info.id)
        elif spoil == "expire":
            with platform.db.engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE tokens SET expires_at = :t WHERE id = :id"),
                    {"t": time.time() - 1, "id": new.info.id},
                )
    token = {
        "revoke": new.token,
        "expire": new.token,
        "garble": new.token[:-2] + "xx",
        "no-scheme": new.token,
    }[spoil]
    with _as(settings, None) as anonymous:
        header = token if spoil == "no-scheme" else f"Bearer {token}"
        response = raw_http(anonymous).get("/api/v1/projects", headers={"Authorization": header})
    assert response.status_code == 401, response.text


def test_users_are_not_admins_unless_made_so(admin: tuple[Client, str], settings: Settings) -> None:
    _, root_token = admin
    with _as(settings, root_token) as root:
        alice = root.create_user("alice")
        root_tokens = {t.id for t in root.list_tokens() if t.user == "root"}
    with _as(settings, alice.token.token) as as_alice:
        as_alice.create_run("p-alice")  # roles per project come next; any user may write
        with pytest.raises(plinth.PermissionDenied):
            list(as_alice.audit_events())
        with pytest.raises(plinth.PermissionDenied):
            as_alice.create_user("mallory", is_admin=True)
        assert [t.user for t in as_alice.list_tokens()] == ["alice"]
        with pytest.raises(plinth.NotFound):
            as_alice.revoke_token(next(iter(root_tokens)))
    with _as(settings, root_token) as root:
        denied = [e for e in root.audit_events(actor="alice") if e.outcome == "refused"]
        assert len(denied) == 3


def test_the_cli_uses_plinth_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init = plinth_cmd(home, "admin", "init", "--name", "root")
    assert init.returncode == 0, init.stderr
    assert "admin root created in" in init.stdout
    assert f"sqlite:///{home}" in init.stdout.replace("\n", "")  # the home it wrote to
    token = next(line for line in init.stdout.splitlines() if line.startswith("plt_"))
    refused = plinth_cmd(home, "projects", "list")
    assert refused.returncode == 1 and "needs a token" in refused.stderr
    env = {**os.environ, "PLINTH_HOME": str(home), "PLINTH_TOKEN": token}
    ok = subprocess.run(
        [sys.executable, "-m", "plinth", "tokens", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert [t["user"] for t in json.loads(ok.stdout)] == ["root"]
    again = plinth_cmd(home, "admin", "init", "--name", "mallory")
    assert again.returncode == 1 and "an admin already exists" in again.stderr


def test_admin_init_works_on_the_home_not_over_plinth_url(tmp_path: Path) -> None:
    """Even with PLINTH_URL pointing at a server, the first admin is made in the home
    this machine opens: no request is sent (port 9 refuses them)."""
    home = tmp_path / "home"
    env = {**os.environ, "PLINTH_HOME": str(home), "PLINTH_URL": "http://127.0.0.1:9"}
    init = subprocess.run(
        [sys.executable, "-m", "plinth", "admin", "init", "--name", "root"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    token = next(line for line in init.stdout.splitlines() if line.startswith("plt_"))
    with _as(make_settings(home), token) as root:
        assert [t.user for t in root.list_tokens()] == ["root"]


IDENTITY_ROUTES = [
    ("POST", "/api/v1/tokens", {"name": "wider"}),
    ("POST", "/api/v1/tokens", {"name": "same", "project": "team", "role": "viewer"}),
    ("GET", "/api/v1/tokens", None),
    ("DELETE", "/api/v1/tokens/{other}", None),
    ("PUT", "/api/v1/users/root/password", {"password": "a brand new password"}),
    ("POST", "/api/v1/users", {"name": "mallory", "is_admin": True}),
    ("GET", "/api/v1/users/me", None),
]


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_a_scoped_token_reaches_no_identity_route(
    admin: tuple[Client, str], settings: Settings, platform: Platform, role: str
) -> None:
    """A token scoped to a project does project work only: it mints no token (scoped or
    not), sets no password, revokes and lists nothing, makes no user."""
    _, root_token = admin
    with _as(settings, root_token) as root:
        root.create_project("team")
        other = root.create_token("other")
        scoped = root.create_token("job", project="team", role=role)
        before = root.list_tokens()
    with _as(settings, scoped.token) as job:
        assert [p.name for p in job.list_projects()] == ["team"]  # it works where it should
        http = raw_http(job)
        for method, path, body in IDENTITY_ROUTES:
            response = http.request(method, path.format(other=other.info.id), json=body)
            assert response.status_code == 403, (method, path, response.text)
            message = response.json()["error"]["message"]
            assert message.startswith(f"this token is limited to {role} in project 'team': it ")
        assert http.post("/api/v1/admin/init", json={"name": "x"}).status_code in (404, 405)
    with _as(settings, root_token) as root:
        assert root.list_tokens() == before
        refused = [e for e in root.audit_events(actor="root") if e.token_id == scoped.info.id]
        assert [e.outcome for e in refused] == ["refused"] * len(IDENTITY_ROUTES)
    with platform.db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT password_hash FROM users")).scalar() is None


def test_someone_elses_token_is_refused_as_an_unknown_one(
    admin: tuple[Client, str], settings: Settings
) -> None:
    """Revoking another user's token and a token that does not exist: the same answer
    and the same audit record, so neither tells whether the other exists."""
    _, root_token = admin
    with _as(settings, root_token) as root:
        alice = root.create_user("alice")
        roots = root.create_token("roots").info.id
    with _as(settings, alice.token.token) as as_alice:
        for token_id in (roots, "0123456789abcdef"):
            with pytest.raises(plinth.NotFound) as caught:
                as_alice.revoke_token(token_id)
            assert caught.value.message == f"no token {token_id!r}"
    with _as(settings, root_token) as root:
        events = [e for e in root.audit_events(actor="alice") if e.action == "tokens.revoke"]
        assert [(e.outcome, e.object, e.details) for e in events] == [
            ("refused", token_id, {"error": "NotFound", "message": f"no token {token_id!r}"})
            for token_id in (roots, "0123456789abcdef")
        ]
        assert next(t for t in root.list_tokens() if t.id == roots).revoked_at is None


def test_tokens_are_revoked_by_a_unique_prefix_among_ones_own(
    admin: tuple[Client, str], settings: Settings, platform: Platform
) -> None:
    _, root_token = admin
    with _as(settings, root_token) as root:
        alice = root.create_user("alice")
        roots = root.create_token("roots").info.id
    with platform.db.engine.begin() as conn:  # two ids that share their first 8 digits
        for old, new in ((alice.token.info.id, "abcdef0111111111"), (roots, "abcdef0122222222")):
            conn.execute(
                sa.text("UPDATE tokens SET id = :new WHERE id = :old"), {"old": old, "new": new}
            )
    with _as(settings, root_token) as root, pytest.raises(plinth.InvalidInput, match="ambiguous"):
        root.revoke_token("abcdef01")  # root, an admin, sees both
    alices = "plt_abcdef0111111111_" + alice.token.token.split("_")[2]
    with _as(settings, alices) as as_alice:  # root's token is not hers to see
        assert as_alice.revoke_token("abcdef01").id == "abcdef0111111111"
    out = _cli(settings, root_token, "tokens", "revoke", "abcdef012")
    assert out.returncode == 0, out.stderr
    assert "token abcdef0122222222 (roots) revoked" in out.stdout


def _cli(settings: Settings, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``plinth ARGS`` over the test's home and database, with ``token``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")}
    env.update(PLINTH_HOME=str(settings.home), PLINTH_TOKEN=token, COLUMNS="200")
    if settings.database_url:
        env["PLINTH_DATABASE_URL"] = settings.database_url
    return subprocess.run(
        [sys.executable, "-m", "plinth", *args], env=env, capture_output=True, text=True, timeout=60
    )
