"""The web UI's pages, rendered by the in-process app (no browser, no server)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import plinth
from plinth.client import Client
from plinth.ui.charts import MAX_POINTS
from tests.conftest import make_settings, raw_http

EVIL = "<script>alert(1)</script>"


@dataclass
class Site:
    http: httpx.Client
    runs: dict[str, str]  # name -> id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("ui-home")
    with Client(settings=make_settings(home)) as client:
        runs = {}
        artifact = home / "weights.bin"
        artifact.write_bytes(b"w" * 2048)
        for lr in (0.1, 0.01, 0.001):
            with plinth.start_run(
                "vision", name=f"lr-{lr}", params={"lr": lr}, tags={"team": "cv"}, client=client
            ) as run:
                for step in range(30):
                    run.log({"loss": math.exp(-lr * step), "val/acc": lr * step}, step=step)
                if lr == 0.1:  # while it runs: a finished run takes no more artifacts
                    run.log_artifact(str(artifact), name="model dir/weights.bin")
            runs[f"lr-{lr}"] = run.id
        evil = client.create_run("vision", name=EVIL, params={"note": EVIL}, tags={"x": EVIL})
        client.log_batch(evil.id, metrics=_points("loss", [2.0, math.nan, math.inf, 1.0]))
        runs[EVIL] = evil.id
        yield Site(raw_http(client), runs)


def _points(key: str, values: list[float]) -> list[dict[str, object]]:
    return [{"key": key, "value": v, "step": i, "timestamp": 1.0 + i} for i, v in enumerate(values)]


def _row_names(html: str) -> list[str]:
    return re.findall(r'<a class="strong" href="/runs/[0-9a-f]+">([^<]*)</a>', html)


def test_projects_page_lists_projects_with_run_counts(site: Site) -> None:
    page = site.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'href="/projects/vision"' in page.text
    assert re.search(r'<td class="num">\s*4\s*</td>', page.text)


def test_project_page_shows_runs_params_and_metrics(site: Site) -> None:
    page = site.http.get("/projects/vision")
    assert page.status_code == 200
    assert sorted(_row_names(page.text)) == sorted(
        ["lr-0.1", "lr-0.01", "lr-0.001", "&lt;script&gt;alert(1)&lt;/script&gt;"]
    )
    for column in ("lr", "loss", "val/acc", "note"):
        assert f">{column}" in page.text
    assert 'class="status status-finished"' in page.text
    assert 'class="status status-running"' in page.text


def test_user_supplied_names_are_escaped(site: Site) -> None:
    evil_id = site.runs[EVIL]
    for url in ("/projects/vision", f"/runs/{evil_id}", f"/compare?runs={evil_id}"):
        page = site.http.get(url)
        assert page.status_code == 200, url
        assert EVIL not in page.text, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, url


def test_filter_and_order_by_use_the_api_language(site: Site) -> None:
    page = site.http.get("/projects/vision", params={"filter": "params.lr < 0.05"})
    assert sorted(_row_names(page.text)) == ["lr-0.001", "lr-0.01"]
    assert 'value="params.lr &lt; 0.05"' in page.text
    ordered = site.http.get(
        "/projects/vision", params={"filter": "status = 'finished'", "order_by": "params.lr asc"}
    )
    assert _row_names(ordered.text) == ["lr-0.001", "lr-0.01", "lr-0.1"]


def test_bad_filter_shows_the_message_above_the_table(site: Site) -> None:
    page = site.http.get("/projects/vision", params={"filter": "metrics.loss >"})
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    alert = page.text.index('role="alert"')
    assert "needs a value: a number or a quoted string" in page.text
    assert alert < page.text.index("<table")
    assert _row_names(page.text) == []


def test_pages_follow_page_tokens(site: Site) -> None:
    first = site.http.get("/projects/vision", params={"limit": 3, "order_by": "name"})
    assert len(_row_names(first.text)) == 3
    next_url = re.search(r'<a class="button" href="([^"]+)">Next page', first.text)
    assert next_url is not None
    second = site.http.get(next_url.group(1).replace("&amp;", "&"))
    assert second.status_code == 200
    names = _row_names(first.text) + _row_names(second.text)
    assert len(set(names)) == 4
    assert "First page" in second.text


def test_run_page_shows_header_params_tags_metrics_charts_and_artifacts(site: Site) -> None:
    run_id = site.runs["lr-0.1"]
    page = site.http.get(f"/runs/{run_id}")
    assert page.status_code == 200
    text = page.text
    assert "lr-0.1" in text and "status-finished" in text
    assert ">team</th>" in text and ">cv</td>" in text
    assert text.count('<svg class="chart"') == 2
    assert text.count("<polyline") == 2
    link = f"/api/v1/runs/{run_id}/artifacts/model%20dir/weights.bin"
    assert f'href="{link}"' in text
    assert "2.0 KiB" in text
    download = site.http.get(link)
    assert download.status_code == 200 and download.content == b"w" * 2048


def test_run_chart_skips_non_finite_points(site: Site) -> None:
    page = site.http.get(f"/runs/{site.runs[EVIL]}")
    (points,) = re.findall(r'<polyline[^>]* points="([^"]*)"', page.text)
    assert len(points.split()) == 2


def test_compare_draws_one_chart_per_metric_with_a_line_per_run(site: Site) -> None:
    ids = [site.runs["lr-0.1"], site.runs["lr-0.01"], site.runs[EVIL]]
    page = site.http.get("/compare", params={"runs": ",".join(ids)})
    assert page.status_code == 200
    charts = re.findall(r'<svg class="chart".*?</svg>', page.text, re.S)
    assert len(charts) == 2  # loss, val/acc
    by_title = {re.search(r"<title>([^<]*)</title>", c).group(1): c for c in charts}  # type: ignore[union-attr]
    assert by_title["loss"].count("<polyline") == 3
    assert by_title["val/acc"].count("<polyline") == 2
    repeated = site.http.get("/compare", params=[("runs", ids[0]), ("runs", ids[1])])
    assert repeated.status_code == 200 and "Compare 2 runs" in repeated.text


def test_unknown_run_and_project_are_html_404_pages(site: Site) -> None:
    for url, message in (("/runs/nope", "no run &#39;nope&#39;"), ("/projects/nope", "no project")):
        page = site.http.get(url)
        assert page.status_code == 404, url
        assert page.headers["content-type"].startswith("text/html")
        assert "Not found" in page.text and message in page.text


def test_compare_without_runs_is_a_400_page(site: Site) -> None:
    page = site.http.get("/compare")
    assert page.status_code == 400
    assert "choose at least one run" in page.text


def test_stylesheet_and_script_are_served(site: Site) -> None:
    css = site.http.get("/ui/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert site.http.get("/ui/static/ui.js").status_code == 200


def test_empty_home_invites_a_first_run(tmp_path: Path) -> None:
    with Client(settings=make_settings(tmp_path)) as client:
        page = raw_http(client).get("/")
    assert page.status_code == 200 and "No projects yet" in page.text


def test_a_long_history_is_drawn_thinned_by_the_service_keeping_its_spike(
    tmp_path: Path,
) -> None:
    values = [math.sin(i / 500) for i in range(30_000)]
    values[12_345] = 50.0
    with Client(settings=make_settings(tmp_path / "home")) as client:
        run = client.create_run("long")
        client.log_batch(run.id, metrics=_points("loss", values))
        page = raw_http(client).get(f"/runs/{run.id}")
    assert page.status_code == 200
    (points,) = re.findall(r'<polyline[^>]* points="([^"]*)"', page.text)
    assert 100 < len(points.split()) <= MAX_POINTS
    ticks = [
        float(t)
        for t in re.findall(r'<text class="tick"[^>]*text-anchor="end">([^<]*)<', page.text)
    ]
    assert max(ticks) >= 50  # the y axis reaches the spike: it was drawn


def test_a_deleted_run_leaves_the_project_page_and_says_so_on_its_own(tmp_path: Path) -> None:
    with Client(settings=make_settings(tmp_path / "home")) as client:
        kept = client.create_run("tidy", name="kept")
        gone = client.create_run("tidy", name="gone")
        client.delete_run(gone.id)
        http = raw_http(client)
        assert _row_names(http.get("/projects/tidy").text) == ["kept"]
        assert re.search(r'<td class="num">\s*1\s*</td>', http.get("/").text)  # one run
        page = http.get(f"/runs/{gone.id}")
        assert page.status_code == 200 and "status-deleted" in page.text
        assert "status-deleted" not in http.get(f"/runs/{kept.id}").text


def test_the_links_mlflows_client_prints_open_plinths_pages(tmp_path: Path) -> None:
    """``/mlflow/#/…`` is a page whose script reads the part after ``#``; the ids it
    cannot place itself go through redirects that answer what the caller may read."""
    from tests.registry.files import model_files

    with Client(settings=make_settings(tmp_path / "home")) as client:
        run = client.create_run("churn", name="fit")
        client.log_artifacts(run.id, model_files(tmp_path / "model"), "model")
        client.register_model(run.id, "model", "clf", project="churn")
        [project] = client.list_projects()
        http = raw_http(client)
        landing = http.get("/mlflow/")
        assert landing.status_code == 200 and "/ui/static/mlflow.js" in landing.text
        assert http.get("/ui/static/mlflow.js").status_code == 200
        moved = http.get(f"/ui/mlflow/experiments/{project.id}")
        assert (moved.status_code, moved.headers["location"]) == (303, "/projects/churn")
        moved = http.get("/ui/mlflow/models/clf")
        assert moved.headers["location"] == "/projects/churn/models/clf/versions/1"
        moved = http.get("/ui/mlflow/models/clf", params={"version": "1"})
        assert moved.headers["location"] == "/projects/churn/models/clf/versions/1"
        for gone in ("/ui/mlflow/experiments/nope", "/ui/mlflow/models/nope"):
            page = http.get(gone)
            assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
