"""Jobs' pages in a real browser against a real ``plinth server`` that runs the jobs
(its own dispatcher, the local executor): read a finished job's log, watch a running
job's log grow, and cancel it from its page. One server for the module; the browser
and its page come from test_browser.py (Debian's Chromium, no console errors)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import test_browser as shared

pytestmark = pytest.mark.browser
browser, page = shared.browser, shared.page  # the fixtures, shared

EVIL = "<script>alert(1)</script>"
API = "/api/v1/projects/lab/jobs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with shared._serve(tmp_path_factory.mktemp("jobs-browser-home")) as base:
        yield base


def _submit(base: str, code: str) -> str:
    body = {"argv": [sys.executable, "-c", code], "cpus": 0.5}
    answer = httpx.post(base + API, json=body, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["id"])


def _wait(base: str, job_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = httpx.get(f"{base}{API}/{job_id}", timeout=10).json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job['status']}, not {statuses}")
        time.sleep(0.1)


def test_read_a_finished_jobs_log(server: str, page: Any, tmp_path: Path) -> None:
    job = _submit(server, f"print('hello from a job'); print({EVIL!r})")
    _wait(server, job, "succeeded")
    page.goto(server + "/projects/lab")
    page.get_by_role("link", name="Jobs", exact=True).last.click()
    page.wait_for_url("**/projects/lab/jobs")
    page.locator("table.jobs-ended a.job-link").first.click()
    page.wait_for_url(f"**/jobs/{job}")
    assert page.locator("#job-status").inner_text() == "succeeded"
    # the log as text: the script tag is shown, never run
    assert page.locator("#job-log").inner_text() == f"hello from a job\n{EVIL}\n"
    assert page.locator("#job-log script").count() == 0
    assert page.locator(".log-note").inner_text() == "The whole log."
    assert page.locator("#cancel-form").count() == 0
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)


def test_watch_a_running_jobs_log_and_cancel_it(server: str, page: Any) -> None:
    code = (
        "import time\n"
        "for i in range(600):\n"
        "    print(f'tick {i}', flush=True)\n"
        "    time.sleep(0.2)\n"
    )
    job = _submit(server, code)
    _wait(server, job, "running")
    page.goto(f"{server}/projects/lab/jobs/{job}")
    log = page.locator("#job-log")
    # new lines arrive while the page is open (polled every second from its offset)
    page.wait_for_function(
        "() => document.getElementById('job-log').textContent.includes('tick 12')",
        timeout=20_000,
    )
    lines = log.inner_text().splitlines()
    assert lines == [f"tick {i}" for i in range(len(lines))]  # in order, none twice
    assert page.locator("#job-status").inner_text() == "running"
    with page.expect_navigation():
        page.click("#cancel-form button[type=submit]")
    assert page.url.endswith(f"/jobs/{job}")
    page.wait_for_function(
        "() => document.getElementById('job-status').textContent === 'cancelled'",
        timeout=30_000,
    )
    assert page.locator("#cancel-form").count() == 0
    page.wait_for_function(
        "() => document.querySelector('.log-note').textContent === 'The whole log.'",
        timeout=10_000,
    )
    assert _wait(server, job, "cancelled")["status"] == "cancelled"
    # what the job printed up to its end, once each and in order (the stop's own note,
    # if the executor writes one, comes after)
    ticks = [line for line in log.inner_text().splitlines() if line.startswith("tick")]
    assert ticks == [f"tick {i}" for i in range(len(ticks))] and len(ticks) >= len(lines)
