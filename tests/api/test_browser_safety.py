"""What protects a browser user: Host allow-list, CORS only for configured origins,
security headers and a content security policy on pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.client import Client
from tests.conftest import make_settings, raw_http


@pytest.fixture
def http(tmp_path: Path) -> Iterator[object]:
    settings = make_settings(tmp_path / "home")
    settings.server.cors_origins = ["https://ui.example"]
    with Client(settings=settings) as client:
        yield raw_http(client)


def test_requests_for_other_hosts_are_refused(http) -> None:  # type: ignore[no-untyped-def]
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host
    assert http.get("/api/v1/projects", headers={"Host": "evil.example"}).status_code == 400
    assert http.get("/api/v1/projects", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    assert http.get("/healthz", headers={"Host": "localhost"}).status_code == 200


def test_cors_only_for_configured_origins(http) -> None:  # type: ignore[no-untyped-def]
    def preflight(origin: str):  # type: ignore[no-untyped-def]
        return http.options(
            "/api/v1/projects",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization",
            },
        )

    allowed = preflight("https://ui.example")
    assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
    refused = preflight("https://evil.example")
    assert "access-control-allow-origin" not in refused.headers
    plain = http.get("/api/v1/projects", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_security_headers_and_csp_on_pages(http) -> None:  # type: ignore[no-untyped-def]
    for path in ("/", "/api/v1/projects", "/healthz"):
        response = http.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    page = http.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]  # 'self' only
