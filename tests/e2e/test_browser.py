"""The web UI in a real browser against a real ``plinth server``.

Chromium is Debian's (``/usr/bin/chromium``) when installed, else Playwright's own
download; ``make browser`` (run by ``make test``) provides one. A missing browser is a
failure that says how to install it, never a skip.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import plinth
from plinth.client import Client
from tests.conftest import make_settings
from tests.registry.files import model_files
from tests.services import free_port

pytestmark = pytest.mark.browser

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOW_TO_INSTALL = (
    "no Chromium for the browser tests: run `make browser` (as root it runs "
    "`apt-get install -y chromium`; otherwise `python -m playwright install chromium`)"
)


@contextlib.contextmanager
def _serve(home: Path) -> Iterator[str]:
    """``plinth server`` over ``home`` on a free loopback port, until the block ends.

    Its stderr (the access log: a line per request) goes to a file, not a pipe that
    nobody reads: a full pipe would block the server."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")}
    env["PLINTH_HOME"] = str(home)
    plinth_cmd = Path(sys.executable).with_name("plinth")
    log = home / "server.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [str(plinth_cmd), "server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("browser-home")
    _populate(home)
    with _serve(home) as base:
        yield base


PASSWORD = "a long browser password"


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose home has an admin with a password: every page needs a login."""
    home = tmp_path_factory.mktemp("secured-home")
    _populate(home)
    with Client(settings=make_settings(home)) as anonymous:
        token = anonymous.init_admin("root").token.token
    with Client(settings=make_settings(home).model_copy(update={"token": token})) as root:
        root.set_password("root", PASSWORD)
        root.create_user("viewer")
        root.set_password("viewer", PASSWORD)
        # queued now, started by the server's dispatcher: a job the viewer may only read,
        # running for as long as the module may take, and cancelled after it
        job = root.submit_job("lab", [sys.executable, "-c", TICKS, "3000"], cpus=0.5)
        root.add_member("lab", "viewer", "viewer")
    with _serve(home) as base:
        yield base
        auth = {"Authorization": f"Bearer {token}"}
        httpx.post(f"{base}/api/v1/projects/lab/jobs/{job.id}/cancel", headers=auth, timeout=30)


# prints a line every 0.3 s (argv[1] times): a log that grows while a page watches it
TICKS = (
    "import sys, time\n"
    "for i in range(int(sys.argv[1])):\n"
    "    print(f'tick {i}', flush=True)\n"
    "    time.sleep(0.3)\n"
)


def _populate(home: Path) -> None:
    with Client(settings=make_settings(home)) as client:
        for lr in (0.3, 0.1, 0.03, 0.01):
            with plinth.start_run(
                "vision",
                name=f"resnet-lr{lr}",
                params={"lr": lr, "optimizer": "adam", "layers": 18},
                tags={"team": "cv"},
                client=client,
            ) as run:
                for step in range(300):
                    wobble = 0.03 * math.sin(step / 4)
                    run.log(
                        {
                            "loss": 2 * math.exp(-step * lr / 8) + 0.1 + wobble,
                            "val/acc": 0.95 * (1 - math.exp(-step * lr / 10)),
                        },
                        step=step,
                    )
        client.create_run("nlp", name="bert-base")
        train = client.create_run("shop", name="train")
        for version in (1, 2):
            files = model_files(home / "model-files" / str(version), f"v{version}".encode())
            client.log_artifacts(train.id, files, f"model-{version}")
            client.register_model(train.id, f"model-{version}", "churn")
        client.set_model_alias("shop", "churn", "champion", 1, reason="first good one")


def _wait_until_up(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"plinth server exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("plinth server did not answer /healthz within 20 s")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as pw:
        executable = str(DEBIAN_CHROMIUM) if DEBIAN_CHROMIUM.exists() else None
        try:
            chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(f"{HOW_TO_INSTALL}\n{exc}")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # a refused login answers 401 with the form again: the browser notes it, rightly
    expected = "the server responded with a status of 401"
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text) if msg.type == "error" and expected not in msg.text else None
        ),
    )
    yield page
    context.close()
    assert errors == [], errors


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def test_browse_filter_and_open_a_run(server: str, page: Any, screenshots: Path) -> None:
    page.goto(server + "/")
    page.get_by_role("link", name="vision").click()
    page.wait_for_url("**/projects/vision")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 4
    page.screenshot(path=str(screenshots / "project.png"), full_page=True)

    page.fill("input[name=filter]", "params.lr >= 0.1")
    page.press("input[name=filter]", "Enter")
    page.wait_for_url("**filter=*")
    assert rows.count() == 2
    assert sorted(rows.locator("td a.strong").all_inner_texts()) == [
        "resnet-lr0.1",
        "resnet-lr0.3",
    ]

    page.get_by_role("link", name="resnet-lr0.1").click()
    page.wait_for_url("**/runs/*")
    assert page.locator("h1").inner_text().startswith("resnet-lr0.1")
    charts = page.locator("svg.chart")
    assert charts.count() == 2
    polyline = charts.first.locator("polyline")
    assert polyline.count() == 1 and polyline.is_visible()
    assert len(polyline.get_attribute("points").split()) == 300
    box = charts.first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 120
    shot = screenshots / "run.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshots in {screenshots}")


def test_select_runs_and_compare(server: str, page: Any, screenshots: Path) -> None:
    page.goto(server + "/projects/vision?order_by=params.lr")
    button = page.locator("#compare-button")
    assert button.is_disabled()
    boxes = page.locator("input[name=runs]")
    boxes.nth(0).check()
    boxes.nth(2).check()
    assert button.inner_text() == "Compare 2 selected"
    button.click()
    page.wait_for_url("**/compare?runs=*")
    assert "," in page.url.split("runs=", 1)[1]
    charts = page.locator("svg.chart")
    assert charts.count() == 2
    assert charts.first.locator("polyline").count() == 2
    page.screenshot(path=str(screenshots / "compare.png"), full_page=True)


def test_log_in_and_out(secured_server: str, page: Any, screenshots: Path) -> None:
    page.goto(secured_server + "/projects/vision")
    page.wait_for_url("**/login?next=*")
    assert page.locator("#logout").is_hidden()  # nobody to log out yet
    page.screenshot(path=str(screenshots / "login.png"))
    page.fill("input[name=user]", "root")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "wrong user name or password" in page.locator(".error").inner_text()
    page.fill("input[name=user]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/projects/vision")
    assert page.locator("table.runs tbody tr").count() == 4
    assert page.locator("#logout").is_visible()
    page.click("#logout")
    page.wait_for_url("**/login")
    page.goto(secured_server + "/")
    page.wait_for_url("**/login?next=*")


def _move_champion_to_version_2(page: Any, base: str, screenshots: Path) -> None:
    """From the project's models, open version 2 and point champion at it."""
    page.goto(base + "/projects/shop")
    page.get_by_role("link", name="Models").click()
    page.wait_for_url("**/projects/shop/models")
    assert page.locator("table.models a.alias").inner_text() == "champion → 1"
    page.get_by_role("link", name="version 2").click()
    page.wait_for_url("**/models/churn/versions/2")
    assert "churn" in page.locator(".run-header h1").inner_text()
    page.fill("#alias-form input[name=alias]", "champion")
    page.fill("#alias-form input[name=reason]", "v2 wins the A/B test")
    with page.expect_navigation():
        page.click("#alias-form button[type=submit]")
    assert page.url.endswith("/models/churn/versions/2")
    newest = page.locator("table.history tbody tr").first.locator("td").all_inner_texts()
    assert newest[1:] == ["champion", "1 → 2", newest[3], "v2 wins the A/B test"]
    assert page.locator(".aliases .alias").all_inner_texts() == ["champion"]
    page.screenshot(path=str(screenshots / "model-version.png"), full_page=True)
    page.goto(base + "/projects/shop/models")
    assert page.locator("table.models a.alias").inner_text() == "champion → 2"


def test_open_a_version_and_move_an_alias(server: str, page: Any, screenshots: Path) -> None:
    """Without logins: the form posts as it is, with its own CSRF token."""
    _move_champion_to_version_2(page, server, screenshots)


def test_move_an_alias_when_logged_in(secured_server: str, page: Any, screenshots: Path) -> None:
    """With a session: ui.js sends the form with the session's X-CSRF-Token."""
    page.goto(secured_server + "/login?next=/projects/shop")
    page.fill("input[name=user]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/projects/shop")
    _move_champion_to_version_2(page, secured_server, screenshots)
    history = page.request.get(
        secured_server + "/api/v1/projects/shop/models/churn/alias-history"
    ).json()
    assert history[0]["actor"] == "root" and history[0]["version"] == 2


def test_roll_back_a_deployment(server: str, page: Any, screenshots: Path) -> None:
    """A memory-runtime deployment with a canary: from the project's Deployments tab,
    open it, roll back, and see the split and the history change."""
    api = f"{server}/api/v1/projects/shop/deployments"
    created = {"name": "churn-svc", "model": "models:/shop/churn/1", "runtime": "memory"}
    httpx.post(api, json=created, timeout=30).raise_for_status()
    canary = {"canary": "models:/shop/churn/2", "weight": 20, "reason": "try v2"}
    httpx.patch(f"{api}/churn-svc", json=canary, timeout=30).raise_for_status()
    page.goto(server + "/projects/shop")
    page.get_by_role("link", name="Deployments").click()
    page.wait_for_url("**/projects/shop/deployments")
    page.get_by_role("link", name="churn-svc").click()
    page.wait_for_url("**/deployments/churn-svc")
    assert page.locator(".split-part").all_inner_texts() == ["v1", "v2"]
    assert page.locator("table.split td.weight").all_inner_texts() == ["80%", "20%"]
    page.fill("#rollback-form input[name=reason]", "v2 answers slowly")
    with page.expect_navigation():
        page.click("#rollback-form button[type=submit]")
    assert page.url.endswith("/deployments/churn-svc")
    assert page.locator(".split-part").all_inner_texts() == ["v1"]
    assert page.locator("table.split td.weight").all_inner_texts() == ["100%"]
    newest = page.locator("table.history tbody tr").first.locator("td").all_inner_texts()
    assert newest[1:] == ["rollback", newest[2], "v1 80% · v2 20% → v1 100%", "v2 answers slowly"]
    page.screenshot(path=str(screenshots / "deployment.png"), full_page=True)
    # ui.js polls the traffic charts while the page is open, and swaps them in place
    with page.expect_response(lambda r: r.url.endswith("/churn-svc/traffic")) as polled:
        pass
    assert polled.value.status == 200
    assert page.locator("#traffic .traffic-charts").count() == 1
    history = httpx.get(f"{api}/churn-svc/history", timeout=30).json()
    assert history[0]["action"] == "rollback" and history[0]["reason"] == "v2 answers slowly"
    # a canary again, from the page's own form (a version number and a weight)
    page.fill("#canary-form input[name=canary]", "2")
    page.fill("#canary-form input[name=weight]", "30")
    with page.expect_navigation():
        page.click("#canary-form button[type=submit]")
    assert page.locator("table.split td.weight").all_inner_texts() == ["70%", "30%"]


def _wait_job(base: str, project: str, job_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/api/v1/projects/{project}/jobs/{job_id}", timeout=10).json()
        if job["status"] == status:
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never became {status}: {job}")


def _log_text(page: Any) -> str:
    return str(page.locator("#job-log").inner_text())


def test_read_a_jobs_log_watch_one_stream_and_cancel_it(
    server: str, page: Any, screenshots: Path
) -> None:
    """A finished job's log; a running job's log growing while the page is open; the
    Cancel button stops it and the page follows it to cancelled."""
    api = f"{server}/api/v1/projects/lab/jobs"
    done = httpx.post(
        api, json={"argv": [sys.executable, "-c", "print('hello from a job')"]}, timeout=30
    ).json()
    argv = [sys.executable, "-c", TICKS, "200"]
    ticking = httpx.post(api, json={"argv": argv}, timeout=30).json()
    _wait_job(server, "lab", done["id"], "succeeded")
    _wait_job(server, "lab", ticking["id"], "running")

    page.goto(f"{server}/projects/lab/jobs")
    page.get_by_role("link", name=done["id"][:8]).first.click()
    page.wait_for_url(f"**/jobs/{done['id']}")
    assert page.locator("#job-status").inner_text() == "succeeded"
    assert "hello from a job" in _log_text(page)
    assert page.locator("#cancel-form").count() == 0  # an ended job is not cancelled

    page.goto(f"{server}/projects/lab/jobs/{ticking['id']}")
    first = _log_text(page)
    seen = max(int(line.split()[1]) for line in first.splitlines() if line.startswith("tick"))
    later = f"tick {seen + 4}"  # written after the page loaded: only polling brings it
    page.wait_for_function(
        "text => document.querySelector('#job-log').textContent.includes(text)",
        arg=later,
        timeout=60_000,
    )
    assert _log_text(page).startswith(first)  # appended, not replaced
    page.screenshot(path=str(screenshots / "job-running.png"), full_page=True)

    with page.expect_navigation():
        page.click("#cancel-form button[type=submit]")
    assert page.locator(".alert").count() == 0, page.locator(".alert").all_inner_texts()
    # stopped: SIGTERM now (then SIGKILL after the grace), ended by the dispatcher
    assert _wait_job(server, "lab", ticking["id"], "cancelled")["reason"]
    page.reload()
    assert page.locator("#job-status").inner_text() == "cancelled"
    assert page.locator("#cancel-form").count() == 0


def test_a_viewer_reads_a_running_jobs_log_and_is_not_offered_cancel(
    secured_server: str, page: Any
) -> None:
    page.goto(secured_server + "/login?next=/projects/lab/jobs")
    page.fill("input[name=user]", "viewer")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/projects/lab/jobs")
    page.locator("a[href*='/projects/lab/jobs/']").first.click()
    page.wait_for_url("**/projects/lab/jobs/*")
    page.wait_for_function(
        "() => document.querySelector('#job-log').textContent.includes('tick 2')",
        timeout=30_000,
    )
    assert page.locator("#job-status").inner_text() == "running"
    assert page.locator("#cancel-form").count() == 0
    # and the cancel itself is refused, whatever the page offers
    refused = page.request.post(page.url + "/cancel", form={"csrf": "x"})
    assert refused.status in (403, 404)
