"""People in the web UI: passwords, session cookies, CSRF and login rate limits."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

import plinth
from plinth import errors
from plinth.client import Client
from plinth.core.platform import Platform
from plinth.settings import Settings

PASSWORD = "correct horse battery staple"


@pytest.fixture
def browser(settings: Settings) -> Iterator[tuple[Any, Client]]:
    """(an httpx client with a cookie jar and no token, the admin's SDK client)."""
    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
        with Client(settings=settings.model_copy(update={"token": token})) as root:
            root.set_password("root", PASSWORD)
            yield anonymous._transport.http, root


def form_token(http: Any) -> str:
    """Open the login form, as a browser would, and read its anti-CSRF field."""
    page = http.get("/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None, page.text
    return match.group(1)


def _login(http: Any, password: str = PASSWORD, next: str = "/", user: str = "root") -> Any:
    data = {"user": user, "password": password, "next": next, "csrf": form_token(http)}
    return http.post("/login", data=data)


def test_pages_send_people_to_log_in_first(browser: tuple[Any, Client]) -> None:
    http, _ = browser
    page = http.get("/projects/p?filter=x")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fprojects%2Fp%3Ffilter%3Dx"
    assert "Log in" in http.get("/login").text


def test_login_sets_a_strict_httponly_session(browser: tuple[Any, Client]) -> None:
    http, root = browser
    response = _login(http, next="/projects/x")
    assert response.status_code == 303 and response.headers["location"] == "/projects/x"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("plinth_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert http.get("/").status_code == 200
    assert http.get("/api/v1/projects").status_code == 200
    assert [e.outcome for e in root.audit_events(action="login")] == ["ok"]


def test_unsafe_requests_with_the_cookie_need_the_csrf_token(
    browser: tuple[Any, Client],
) -> None:
    http, root = browser
    _login(http)
    body = {"project": "csrf"}
    assert http.post("/api/v1/runs", json=body).status_code == 403
    forged = http.post("/api/v1/runs", json=body, headers={"X-CSRF-Token": "guess"})
    assert forged.status_code == 403
    for method, path in (
        ("DELETE", "/api/v1/tokens/x"),
        ("PUT", "/api/v1/users/root/password"),
        ("PATCH", "/api/v1/runs/x"),
    ):
        assert http.request(method, path, json={}).status_code == 403, method
    token = http.cookies["plinth_csrf"]
    assert http.post("/api/v1/runs", json=body, headers={"X-CSRF-Token": token}).status_code == 201
    assert len(root.search_runs("csrf").runs) == 1  # the refused ones changed nothing
    refused = [e for e in root.audit_events(action="session") if e.outcome == "refused"]
    assert len(refused) == 5


def test_logout_ends_the_session(browser: tuple[Any, Client]) -> None:
    http, _ = browser
    _login(http)
    assert http.post("/logout").status_code == 403  # no CSRF token
    token = http.cookies["plinth_csrf"]
    stolen = http.cookies["plinth_session"]
    assert http.post("/logout", headers={"X-CSRF-Token": token}).status_code == 303
    http.cookies.set("plinth_session", stolen)  # replaying the old cookie does not work
    assert http.get("/api/v1/projects").status_code == 401


def test_wrong_passwords_are_refused_then_rate_limited(browser: tuple[Any, Client]) -> None:
    http, root = browser
    for _ in range(5):
        assert _login(http, "wrong password!").status_code == 401
    assert _login(http, "wrong password!").status_code == 429
    assert _login(http).status_code == 429  # even the right one, for a while
    assert len([e for e in root.audit_events(action="login") if e.outcome == "refused"]) == 5


def test_no_open_redirect_and_short_passwords_refused(browser: tuple[Any, Client]) -> None:
    http, root = browser
    assert _login(http, next="//evil.example/x").headers["location"] == "/"
    with pytest.raises(plinth.InvalidInput, match="12 characters"):
        root.set_password("root", "short")


def test_the_login_form_refuses_a_login_from_another_site(browser: tuple[Any, Client]) -> None:
    """Login CSRF: another site's form could log the browser in as the attacker. Only a
    form this server gave out, whose field matches its SameSite=Strict cookie, works."""
    http, root = browser
    data = {"user": "root", "password": PASSWORD, "next": "/"}
    assert http.post("/login", data=data).status_code == 403  # no field, no cookie
    token = form_token(http)
    cookie = next(c for c in http.get("/login").headers.get_list("set-cookie"))
    assert cookie.startswith("plinth_login_csrf=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/login" in cookie
    http.cookies.clear()  # a cross-site POST carries no Strict cookie
    refused = http.post("/login", data={**data, "csrf": token})
    assert refused.status_code == 403 and "expired" in refused.text
    assert http.post("/login", data={**data, "csrf": "guess"}).status_code == 403
    assert "plinth_session" not in http.cookies
    assert list(root.audit_events(action="login")) == []  # not even a try was counted
    assert _login(http).status_code == 303
    assert "plinth_login_csrf" not in http.cookies  # spent


def _session(settings: Settings, password: str = PASSWORD, user: str = "root") -> Client:
    """A browser of its own (a cookie jar) logged in as ``user``."""
    client = Client(settings=settings)
    assert _login(client._transport.http, password, user=user).status_code == 303
    return client


def test_changing_ones_password_needs_the_current_one_and_ends_other_sessions(
    browser: tuple[Any, Client], settings: Settings
) -> None:
    _, root = browser
    new = "another long passphrase"
    with _session(settings) as here, _session(settings) as elsewhere:
        with pytest.raises(plinth.InvalidInput, match="current"):
            root.set_password("root", new)
        with pytest.raises(plinth.PermissionDenied, match="current password is wrong"):
            root.set_password("root", new, current_password="not the password")
        assert elsewhere._transport.http.get("/api/v1/projects").status_code == 200
        http = here._transport.http
        changed = http.put(
            "/api/v1/users/root/password",
            json={"password": new, "current_password": PASSWORD},
            headers={"X-CSRF-Token": http.cookies["plinth_csrf"]},
        )
        assert changed.status_code == 204, changed.text
        assert http.get("/api/v1/projects").status_code == 200  # the one that changed it
        assert elsewhere._transport.http.get("/api/v1/projects").status_code == 401
    with Client(settings=settings) as stranger:
        assert _login(stranger._transport.http, PASSWORD).status_code == 401  # the old one
    events = list(root.audit_events(action="users.password"))
    assert [e.outcome for e in events] == ["ok", "refused", "refused", "ok"]
    assert events[-1].details == {"reset_by_admin": False, "sessions_ended": 1}


def test_an_admin_resets_a_password_without_it_and_every_session_ends(
    browser: tuple[Any, Client], settings: Settings
) -> None:
    _, root = browser
    alice = root.create_user("alice")
    with Client(settings=settings.model_copy(update={"token": alice.token.token})) as as_alice:
        as_alice.set_password("alice", PASSWORD)  # her first: nothing to confirm yet
        with pytest.raises(plinth.NotFound, match="no user 'root'"):
            as_alice.set_password("root", "alice wants roots account")
    with _session(settings, user="alice") as hers:
        root.set_password("alice", "reset by the admin!")
        assert hers._transport.http.get("/api/v1/projects").status_code == 401
    with _session(settings, "reset by the admin!", user="alice"):
        pass


def test_wrong_current_passwords_are_rate_limited(browser: tuple[Any, Client]) -> None:
    _, root = browser
    for _ in range(5):
        with pytest.raises(plinth.PermissionDenied):
            root.set_password("root", "a guess at a takeover", current_password="guess")
    with pytest.raises(errors.TooManyRequests):
        root.set_password("root", "a guess at a takeover", current_password=PASSWORD)


def test_the_cli_asks_for_the_current_password_only_for_ones_own(
    browser: tuple[Any, Client], settings: Settings
) -> None:
    from typer.testing import CliRunner

    from plinth.cli import app

    _, root = browser
    root.create_user("alice")
    env = {
        "PLINTH_URL": None,
        "PLINTH_HOME": str(settings.home),
        "PLINTH_DATABASE_URL": settings.database_url,
        "PLINTH_TOKEN": root.settings.token,
    }
    new = "a new long password"
    own = CliRunner().invoke(
        app, ["users", "password", "root"], input=f"{PASSWORD}\n{new}\n{new}\n", env=env
    )
    assert own.exit_code == 0, own.output
    assert own.output.startswith("Current password:")
    reset = CliRunner().invoke(
        app, ["users", "password", "alice"], input=f"{new}\n{new}\n", env=env
    )
    assert reset.exit_code == 0, reset.output
    assert "Current password" not in reset.output and "password of alice set" in reset.output
    with _session(settings, new), _session(settings, new, user="alice"):
        pass


def test_another_users_password_is_refused_as_an_unknown_users(
    browser: tuple[Any, Client], settings: Settings
) -> None:
    """The same answer and the same audit record: neither tells whether the user exists."""
    _, root = browser
    alice = root.create_user("alice")
    with Client(settings=settings.model_copy(update={"token": alice.token.token})) as as_alice:
        for user in ("root", "nobody"):
            with pytest.raises(plinth.NotFound) as caught:
                as_alice.set_password(user, "a takeover attempt")
            assert caught.value.message == f"no user {user!r}"
    events = [e for e in root.audit_events(actor="alice") if e.action == "users.password"]
    assert [(e.outcome, e.object, e.details) for e in events] == [
        ("refused", user, {"error": "NotFound", "message": f"no user {user!r}"})
        for user in ("root", "nobody")
    ]


class _CountingHasher:
    """The service's argon2 hasher, counting the hashes it checks."""

    def __init__(self, hasher: Any) -> None:
        self.hasher, self.verified = hasher, 0

    def verify(self, stored: str, password: str) -> bool:
        self.verified += 1
        return bool(self.hasher.verify(stored, password))

    def hash(self, password: str) -> str:
        return str(self.hasher.hash(password))


def test_a_login_costs_a_hash_check_whoever_it_names(
    browser: tuple[Any, Client], platform: Platform
) -> None:
    """No user, a user with no password and a wrong password all take one argon2 check,
    so the time a refusal takes does not tell which names have passwords."""
    from plinth.governance.sessions import SessionService

    _, root = browser
    root.create_user("nopassword")
    service = SessionService(platform)
    counting = _CountingHasher(service.hasher)
    service.hasher = counting  # type: ignore[assignment]
    for user in ("nobody", "nopassword", "root"):
        before = counting.verified
        with pytest.raises(errors.Unauthenticated, match="wrong user name or password"):
            service.login(user, "not it", "10.0.0.1")
        assert counting.verified == before + 1, user
    assert service.login("root", PASSWORD, "10.0.0.1").principal.name == "root"


def test_failed_login_counts_for_names_tried_long_ago_are_dropped(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.governance import sessions

    service = sessions.SessionService(platform)
    clock = [1000.0]
    monkeypatch.setattr(sessions.time, "monotonic", lambda: clock[0])
    for i in range(3 * sessions.PRUNE_AT):
        service._record_failure(f"guess-{i}", "10.0.0.2")
        clock[0] += 0.5  # one new name every half a second: the window holds 120
    assert len(service._failures) <= sessions.PRUNE_AT + 1
    assert ("guess-0", "10.0.0.2") not in service._failures
    last = f"guess-{3 * sessions.PRUNE_AT - 1}"
    assert (last, "10.0.0.2") in service._failures  # the recent are still counted


def test_signed_in_pages_and_answers_are_not_cached(browser: tuple[Any, Client]) -> None:
    http, root = browser
    assert _login(http).status_code == 303
    root.create_run("cached")
    for path in ("/projects/cached", "/api/v1/projects"):
        answer = http.get(path)
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store", path
    assert "no-store" not in http.get("/ui/static/style.css").headers.get("cache-control", "")
