"""X-Forwarded-For against a real ``plinth server``: believed only from the proxies it
is told to trust, so a client can neither dodge the login rate limit nor forge the
source the audit trail records."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from plinth.client import Client
from plinth.governance.identity import init_admin
from plinth.settings import Settings
from tests.conftest import make_settings
from tests.governance.test_sessions import form_token
from tests.processes import PLINTH, REPO, Server, child_env, started
from tests.services import free_port

PASSWORD = "a long enough password"


def _home_with_root(home: Path) -> tuple[Settings, str]:
    settings = make_settings(home)
    token = init_admin(settings, "root").token.token
    with Client(settings=settings.model_copy(update={"token": token})) as root:
        root.set_password("root", PASSWORD)
    return settings, token


def _wrong_login(base: str, forwarded_for: str) -> int:
    with httpx.Client(base_url=base) as http:
        data = {"user": "root", "password": "not the password", "csrf": form_token(http)}
        response = http.post("/login", data=data, headers={"X-Forwarded-For": forwarded_for})
    return response.status_code


def _login_sources(settings: Settings, token: str) -> list[str]:
    with Client(settings=settings.model_copy(update={"token": token})) as root:
        return [e.source for e in root.audit_events(action="login")]


def test_forwarded_for_is_not_believed_by_default(tmp_path: Path) -> None:
    settings, token = _home_with_root(tmp_path / "home")
    with started(tmp_path) as processes:
        server = processes.server(settings.home)
        statuses = [_wrong_login(server.url, f"203.0.113.{i}") for i in range(7)]
    assert statuses == [401] * 5 + [429] * 2  # one address, however it says it is many
    assert _login_sources(settings, token) == ["127.0.0.1"] * 5


def test_a_trusted_proxy_is_believed(tmp_path: Path) -> None:
    """``--trusted-proxy`` (and PLINTH_SERVER__TRUSTED_PROXIES): behind a real proxy,
    the client's own address is what counts and what the trail records."""
    settings, token = _home_with_root(tmp_path / "home")
    port = free_port()
    env = child_env(PLINTH_HOME=str(settings.home), PLINTH_SERVER__TRUSTED_PROXIES='["10.9.9.9"]')
    server = Server(settings.home, port, env, tmp_path / "server.log")
    with started(tmp_path) as processes:
        processes.servers.append(server)
        with open(server.log, "ab") as log:
            server.proc = subprocess.Popen(
                [str(PLINTH), "server", "--port", str(port), "--trusted-proxy", "127.0.0.1"],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server.wait_healthy(30)
        statuses = [_wrong_login(server.url, f"203.0.113.{i}") for i in range(6)]
    assert statuses == [401] * 6  # six clients, each with one failure
    assert _login_sources(settings, token) == [f"203.0.113.{i}" for i in range(6)]
