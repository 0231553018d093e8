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
from plinth.api.context import all_routes
from plinth.client import Client
from plinth.core.access import Permission
from plinth.core.platform import Platform
from plinth.server.app import create_app
from plinth.settings import Settings
from tests.conftest import raw_http
from tests.server.test_permissions import _declared
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
    with pytest.raises(plinth.Unauthenticated):
        anonymous.init_admin("again")
    with _as(settings, token) as root, pytest.raises(plinth.Conflict):
        root.init_admin("again")


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
