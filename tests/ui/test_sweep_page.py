"""A sweep's page, from the runs a sweep makes (its summary and its trials), in every
state a trial can be in; the real sweep's page is checked in tests/compute/test_sweep.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from plinth.client import Client
from plinth.compute.sweep import SUMMARY_TAG, SWEEP_TAG, TRIAL_TAG
from plinth.ui.sweeps import sweep_url
from tests.conftest import make_settings, raw_http

NAME = "q'<b>\\x"  # quotes, markup and a backslash: a filter literal and HTML both escape


def trial(client: Client, number: int, x: float, losses: list[float], status: str) -> str:
    run = client.create_run(
        "lab", f"t{number}", {"x": x}, {SWEEP_TAG: NAME, TRIAL_TAG: str(number)}
    )
    points = [{"key": "loss", "value": v, "step": i} for i, v in enumerate(losses)]
    if points:
        client.log_batch(run.id, metrics=points)
    if status != "running":
        client.end_run(run.id, status)
    return run.id


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with Client(settings=make_settings(tmp_path_factory.mktemp("sweep-page"))) as client:
        yield made(client)


def made(client: Client) -> httpx.Client:
    settings = {"metric": "loss", "direction": "minimize", "objective": "last", "trials": 6}
    client.create_run("lab", NAME, settings, {SUMMARY_TAG: NAME})
    trial(client, 0, 3.0, [9.0, 4.0], "finished")
    trial(client, 1, 1.5, [2.0, 0.25], "finished")  # the best, by its last value
    trial(client, 2, 9.0, [81.0], "killed")  # pruned: never the best, though complete
    trial(client, 3, 5.0, [], "failed")
    trial(client, 4, 2.5, [float("nan")], "finished")  # no finite value: failed
    trial(client, 5, 0.0, [4.0], "running")
    client.create_run("lab", "other", {"x": 2.0}, {SWEEP_TAG: "another", TRIAL_TAG: "0"})
    return raw_http(client)


def test_a_sweeps_page_shows_its_trials_its_best_and_its_progress(http: httpx.Client) -> None:
    page = http.get(sweep_url("lab", NAME))
    assert page.status_code == 200, page.text
    html = page.text
    assert "q&#39;&lt;b&gt;\\x" in html and "<b>" not in html  # escaped, never markup
    rows = re.findall(
        r"<tr( class=\"best\"[^>]*)?>\s*<td class=\"num\">(\d+)</td>\s*"
        r"<td><span class=\"status status-(\w+)\">(\w+)</span>",
        html,
    )
    assert [(n, run_status, state) for _, n, run_status, state in rows] == [
        ("0", "finished", "complete"),
        ("1", "finished", "complete"),
        ("2", "killed", "stopped"),
        ("3", "failed", "failed"),
        ("4", "finished", "failed"),
        ("5", "running", "running"),
    ]
    assert [n for best, n, _, _ in rows if best] == ["1"]
    best = html[html.index('id="best"') :]
    assert "trial 1</a>: loss = <code>0.25</code>" in best
    chart = html[html.index("<svg") : html.index("</svg>")]
    assert chart.count("<circle") == 2  # the complete trials' values
    assert "best so far" in chart
    assert "another" not in html and ">other<" not in html  # another sweep's trial


def test_a_trials_run_page_links_to_its_sweep(http: httpx.Client) -> None:
    html = http.get("/projects/lab").text
    run_id = re.findall(r'href="/runs/([0-9a-f]{32})">t1<', html)[0]
    page = http.get(f"/runs/{run_id}").text
    assert f'href="{sweep_url("lab", NAME)}"' in page and "trial 1" in page


def test_an_unknown_sweep_is_404(http: httpx.Client) -> None:
    assert http.get(sweep_url("lab", "nothing")).status_code == 404
    assert http.get(sweep_url("nowhere", NAME)).status_code == 404
