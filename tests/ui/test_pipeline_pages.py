"""Pipelines' pages over HTTP: a project's runs and triggers, a run's page (its steps
drawn as an SVG graph whose boxes link to the steps' rows, which link to the jobs that
ran them and their tracked runs), a cache hit marked on a second identical run, a
running run's page that follows it until it ends; hostile values escaped; outsiders, a
run of another project and an id that names no run get the same 404 as for nothing.

Steps run as real jobs on the local executor of one declared node
(tests/compute/conftest.py), in a single-user home: with logins on, a step's job reaches
Plinth through a server, and none serves here. The 404s are checked in a home with
logins whose queue is held, where a run waits. The pipeline is a module written to a
folder of its own, under a name of its own (modules are imported, and cached, by name)."""

from __future__ import annotations

import re
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from plinth.client import Client
from plinth.pipelines import schemas as s
from plinth.settings import ComputeSettings
from tests.compute.conftest import compute, wait_for
from tests.conftest import make_settings, raw_http

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
BASE = "/projects/lab/pipelines"

FLOW = """
import os
import time

import plinth


@plinth.step
def make(n: int, note: str = ""):
    return list(range(n))


@plinth.step
def total(xs):
    return sum(xs)


@plinth.pipeline
def flow(n: int = 3, note: str = ""):
    return total(make(n, note=note))


@plinth.step
def hold(flag: str):
    while not os.path.exists(flag):  # until the test lets it end
        time.sleep(0.05)
    return 1


@plinth.step
def after(x):
    return x + 1


@plinth.pipeline
def held(flag: str = ""):
    return after(hold(flag))
"""


@dataclass
class Site:
    client: Client  # a single-user home's: a step's job opens the home (no server)
    http: httpx.Client
    workdir: Path
    module: str
    first: s.PipelineRun  # ran both steps
    second: s.PipelineRun  # the same again: both steps cache hits


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A single-user home whose steps run: with auth on, a step's job would reach
    Plinth through a server (the browser test's), and here none serves."""
    tmp = tmp_path_factory.mktemp("pipelines-ui")
    client = Client(settings=make_settings(tmp / "home", compute=compute()))
    workdir = _flow(tmp)
    module = next(workdir.glob("flow_*.py")).stem
    params = {"n": 4, "note": EVIL}
    run = lambda: client.run_pipeline(  # noqa: E731
        "lab", f"{module}:flow", params, workdir=workdir, wait=True, timeout=120
    )
    first, second = run(), run()
    assert first.status == second.status == "succeeded", (first, second)
    client.create_pipeline_trigger(
        "lab", "nightly", f"{module}:flow", params, cron="0 3 * * *", workdir=workdir
    )
    try:
        yield Site(client, raw_http(client), workdir, module, first, second)
    finally:
        client.close()


@dataclass
class Secured:
    root: httpx.Client
    outsider: httpx.Client
    run: str  # a run of project lab, started by root; nothing dispatches, so it waits


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A home with logins, root and an outsider, whose queue is held: a run started
    there stays running, its steps waiting."""
    tmp = tmp_path_factory.mktemp("pipelines-ui-secured")
    settings = make_settings(tmp / "home", compute=ComputeSettings(dispatch=False, handoff=False))
    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
    root = Client(settings=settings.model_copy(update={"token": token}))
    outsider = Client(
        settings=settings.model_copy(update={"token": root.create_user("out").token.token})
    )
    workdir = _flow(tmp)
    module = next(workdir.glob("flow_*.py")).stem
    run = root.run_pipeline("lab", f"{module}:flow", workdir=workdir)
    root.create_run("other", name="elsewhere")  # a project the run is not of
    try:
        yield Secured(raw_http(root), raw_http(outsider), run.id)
    finally:
        outsider.close()
        root.close()


def _flow(tmp: Path) -> Path:
    """A folder holding the flow module, under a name of its own (modules are imported,
    and cached, by name)."""
    workdir = tmp / "work"
    workdir.mkdir()
    (workdir / f"flow_{uuid.uuid4().hex[:8]}.py").write_text(textwrap.dedent(FLOW))
    return workdir


def test_the_list_shows_runs_and_triggers_under_a_tab(site: Site) -> None:
    page = site.http.get(BASE)
    assert page.status_code == 200
    text = page.text
    assert f'href="{BASE}" aria-current="page">Pipelines</a>' in text
    for run in (site.first, site.second):
        assert f'href="{BASE}/{run.id}"' in text
    assert text.index(site.second.id) < text.index(site.first.id)  # newest first
    runs = _table(text, "pipeline-runs")
    assert runs.count("status-succeeded") == 2 and ">flow</td>" in runs
    triggers = _table(text, "pipeline-triggers")
    assert 'id="trigger-nightly"' in triggers and "<code>0 3 * * *</code> UTC" in triggers
    assert 'href="/projects/lab/datasets"' in text  # the other tabs stay


def test_a_runs_page_draws_its_graph_and_links_each_step(site: Site) -> None:
    run = site.first
    page = site.http.get(f"{BASE}/{run.id}")
    assert page.status_code == 200
    text = page.text
    svg = re.search(r'<svg class="dag".*?</svg>', text, re.S)
    assert svg is not None
    boxes = re.findall(r'<a class="dag-node" href="#step-(\w+)" data-step="(\w+)"', svg.group(0))
    assert boxes == [("make", "make"), ("total", "total")]
    assert svg.group(0).count('class="dag-edge"') == 1  # make → total
    assert "<text" in svg.group(0) and ">succeeded</text>" in svg.group(0)
    for step in run.steps:
        assert step.job_id is not None and step.run_id is not None
        row = _row(text, step.name)
        assert f'href="/projects/lab/jobs/{step.job_id}"' in row
        assert f'href="/runs/{step.run_id}"' in row
        assert "status-succeeded" in row
    assert "data-follow" not in text  # it has ended: nothing to follow
    assert EVIL not in text and ESCAPED in text  # the param, shown as text
    by_prefix = site.http.get(f"{BASE}/{run.id[:8]}")
    assert by_prefix.status_code == 200 and f'data-poll="{BASE}/{run.id}"' in by_prefix.text


def test_a_second_identical_run_is_marked_a_cache_hit(site: Site) -> None:
    run = site.second
    assert [step.status for step in run.steps] == ["cached", "cached"]
    text = site.http.get(f"{BASE}/{run.id}").text
    svg = re.search(r'<svg class="dag".*?</svg>', text, re.S)
    assert svg is not None
    assert svg.group(0).count(f">cached from {site.first.id[:8]}</text>") == 2
    assert svg.group(0).count('stroke-dasharray="5 3"') == 2  # cache hits drawn dashed
    for step in run.steps:
        row = _row(text, step.name)
        assert "status-cached" in row
        assert f'class="cached-from" href="{BASE}/{site.first.id}"' in row
        assert "jobs/" not in row  # nothing ran: no job
        assert f'href="/runs/{site.first.step(step.name).run_id}"' in row  # outputs reused


def test_a_running_runs_page_follows_it_until_it_ends(site: Site, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    run = site.client.run_pipeline(
        "lab", f"{site.module}:held", {"flag": str(flag)}, workdir=site.workdir
    )
    url = f"{BASE}/{run.id}"
    try:
        wait_for(
            lambda: site.client.get_pipeline_run("lab", run.id).step("hold").status == "running",
            timeout=60,
            what="the step to start",
        )
        text = site.http.get(url).text
        assert "data-follow" in text and 'src="/ui/static/pipelines.js"' in text
        assert "status-running" in _row(text, "hold") and "status-waiting" in _row(text, "after")
        assert 'data-step="after"' in text
    finally:
        flag.write_text("go")
    ended = site.client.wait_pipeline_run("lab", run.id, timeout=120)
    assert ended.status == "succeeded"
    assert "data-follow" not in site.http.get(url).text


def test_outsiders_other_projects_and_missing_runs_get_404(secured: Secured) -> None:
    run = secured.run
    for url in (BASE, f"{BASE}/{run}"):
        assert secured.root.get(url).status_code == 200
        assert secured.outsider.get(url).status_code == 404
    assert secured.root.get(f"/projects/other/pipelines/{run}").status_code == 404
    assert secured.root.get(f"/projects/nowhere/pipelines/{run}").status_code == 404
    assert secured.root.get(f"{BASE}/{uuid.uuid4().hex}").status_code == 404
    assert secured.root.get(f"{BASE}/not-an-id").status_code == 404
    assert secured.root.get(f"{BASE}/{run[:4]}").status_code == 404  # too short a prefix
    assert secured.root.get(BASE, params={"cursor": "x"}).status_code == 400


def test_a_run_not_started_yet_shows_its_steps_waiting(secured: Secured) -> None:
    text = secured.root.get(f"{BASE}/{secured.run}").text
    assert "data-follow" in text and "status-running" in text
    for step in ("make", "total"):
        row = _row(text, step)
        assert "status-waiting" in row and "jobs/" not in row
    assert text.count('data-step="') == 2


def _table(html: str, cls: str) -> str:
    found = re.search(rf'<table class="grid-table {cls}">.*?</table>', html, re.S)
    assert found is not None, cls
    return found.group(0)


def _row(html: str, step: str) -> str:
    found = re.search(rf'<tr id="step-{re.escape(step)}".*?</tr>', html, re.S)
    assert found is not None, step
    return found.group(0)
