"""The API docs page in a real browser that may reach nothing but the server: Swagger
UI's files come from the package, not a CDN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_browser import CHROMIUM_ARGS, DEBIAN_CHROMIUM, HOW_TO_INSTALL, _serve

pytestmark = pytest.mark.browser


def test_api_docs_render_offline(tmp_path: Path) -> None:
    from playwright.sync_api import Error, sync_playwright

    home = tmp_path / "home"
    home.mkdir()
    with _serve(home) as base, sync_playwright() as pw:
        executable = str(DEBIAN_CHROMIUM) if DEBIAN_CHROMIUM.exists() else None
        try:
            chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(f"{HOW_TO_INSTALL}\n{exc}")
        page = chromium.new_page()
        outside: list[str] = []
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def only_the_server(route: Any) -> None:
            if route.request.url.startswith(f"{base}/"):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_server)
        page.goto(f"{base}/api/v1/docs")
        page.locator(".swagger-ui .info .title").filter(has_text="Plinth").wait_for()
        page.locator(".opblock-summary-path", has_text="/api/v1/runs/search").first.wait_for()
        chromium.close()
    assert outside == []
    assert errors == []
