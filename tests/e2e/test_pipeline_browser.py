"""Pipelines' pages in a real browser against a real ``plinth server`` that runs the
steps (its own dispatcher, the local executor): open the project's Pipelines tab, a
run, its graph; click a step's box, follow its job link and read the step's log. The
browser and its page come from test_browser.py (Debian's Chromium, no console errors).
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.client import Client
from plinth.pipelines import schemas as s
from plinth.settings import Settings
from tests.e2e import test_browser as shared

pytestmark = pytest.mark.browser
browser, page = shared.browser, shared.page  # the fixtures, shared

FLOW = """
import plinth


@plinth.step
def load(n: int):
    return list(range(n))


@plinth.step
def total(xs):
    return sum(xs)


@plinth.pipeline
def flow(n: int = 5):
    return total(load(n))
"""


@pytest.fixture(scope="module")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, s.PipelineRun]]:
    """A served home, and a run of a two-step pipeline in its project ``lab``, started
    through the SDK against the server and ended."""
    home = tmp_path_factory.mktemp("pipelines-browser-home")
    workdir = tmp_path_factory.mktemp("pipeline-work")
    module = f"flow_{uuid.uuid4().hex[:8]}"  # imported by name: one of its own
    (workdir / f"{module}.py").write_text(textwrap.dedent(FLOW))
    with shared._serve(home) as base:
        remote = Settings(home=tmp_path_factory.mktemp("client"), url=base, token=None)
        with Client(settings=remote) as client:
            run = client.run_pipeline(
                "lab", f"{module}:flow", workdir=workdir, wait=True, timeout=120
            )
        assert run.status == "succeeded", run
        yield base, run


def test_open_a_runs_graph_click_a_step_and_read_its_log(
    served_run: tuple[str, s.PipelineRun], page: Any, tmp_path: Path
) -> None:
    server, run = served_run
    page.goto(server + "/projects/lab")
    page.get_by_role("link", name="Pipelines", exact=True).click()
    page.wait_for_url("**/projects/lab/pipelines")
    page.locator("table.pipeline-runs a.run-link").first.click()
    page.wait_for_url(f"**/projects/lab/pipelines/{run.id}")
    assert page.locator("#run-status").inner_text() == "succeeded"
    graph = page.locator("svg.dag")
    assert graph.is_visible()
    boxes = graph.locator("a.dag-node")
    assert boxes.count() == 2
    assert graph.locator("path.dag-edge").count() == 1
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

    graph.locator('a[data-step="total"]').click()
    page.wait_for_url("**#step-total")
    assert page.locator("tr#step-total:target").count() == 1  # the box's row, pointed at
    row = page.locator("tr#step-total")
    assert "succeeded" in row.inner_text()
    job_id = run.step("total").job_id
    assert job_id is not None
    row.locator("a.job-link").click()
    page.wait_for_url(f"**/projects/lab/jobs/{job_id}")
    log = page.locator("#job-log")
    function = run.step("total").function
    assert f"step total: {function}(xs)" in log.inner_text()
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)
