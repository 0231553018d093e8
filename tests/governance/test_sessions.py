"""People in the web UI: passwords, session cookies, CSRF and login rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import plinth
from plinth.client import Client
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


def _login(http: Any, password: str = PASSWORD, next: str = "/") -> Any:
    return http.post("/login", data={"user": "root", "password": password, "next": next})


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
