"""The lineage page over HTTP: the graph around a node drawn as inline SVG, from the
dataset version a run read to the model version it made and the deployment serving
it, each box linking to its page; outsiders get the same 404 as for nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from plinth.client import Client
from tests.conftest import make_settings, raw_http
from tests.registry.files import model_files


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, httpx.Client, str]]:
    tmp = tmp_path_factory.mktemp("lineage-ui")
    settings = make_settings(tmp / "home")
    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
    root = Client(settings=settings.model_copy(update={"token": token}))
    outsider = Client(
        settings=settings.model_copy(update={"token": root.create_user("out").token.token})
    )
    (tmp / "data").mkdir()
    (tmp / "data" / "rows.csv").write_text("x,y\n1,2\n")
    root.push_dataset("shop", "customers", tmp / "data")
    run = root.create_run("shop")
    root.use_dataset("customers@1", run_id=run.id, project="shop")
    root.log_artifacts(run.id, model_files(tmp / "model"), "model")
    root.register_model(run.id, "model", "churn")
    root.create_deployment("shop", "svc", "models:/shop/churn/1", runtime="memory")
    try:
        yield raw_http(root), raw_http(outsider), run.id
    finally:
        outsider.close()
        root.close()


def _page(http: httpx.Client, uri: str) -> httpx.Response:
    return http.get(f"/projects/shop/lineage?uri={quote(uri, safe='')}")


def test_the_graph_runs_from_the_data_to_the_deployment(
    site: tuple[httpx.Client, httpx.Client, str],
) -> None:
    http, _, run_id = site
    page = _page(http, "datasets:/shop/customers@1")
    assert page.status_code == 200, page.text[:300]
    assert "<svg" in page.text
    boxes = re.findall(r'data-node="([^"]+)"', page.text)
    assert set(boxes) == {"customers@1", f"run {run_id[:8]}", "churn v1", "deployment svc"}
    for link in (
        "/projects/shop/datasets/customers/versions/1",
        f"/runs/{run_id}",
        "/projects/shop/models/churn/versions/1",
        "/projects/shop/deployments/svc",
    ):
        assert f'href="{link}"' in page.text
    # every page of the chain links to its own lineage
    for url, uri in (
        ("/projects/shop/datasets/customers/versions/1", "datasets:/shop/customers@1"),
        (f"/runs/{run_id}", f"runs:/{run_id}"),
        ("/projects/shop/models/churn/versions/1", "models:/shop/churn/1"),
        ("/projects/shop/deployments/svc", "deployments:/shop/svc"),
    ):
        there = http.get(url)
        assert there.status_code == 200
        assert f"/projects/shop/lineage?uri={quote(uri, safe='')}" in there.text, url


def test_a_node_with_no_edges_and_outsiders(
    site: tuple[httpx.Client, httpx.Client, str],
) -> None:
    http, outsider, _ = site
    quiet = http.post("/api/v1/runs", json={"project": "shop"}).json()["id"]
    alone = _page(http, f"runs:/{quiet}")
    assert alone.status_code == 200 and "Nothing is recorded" in alone.text
    assert _page(http, "runs:/" + "0" * 32).status_code == 404  # no such run
    assert _page(http, "runs:/../../x").status_code == 400
    assert _page(outsider, "datasets:/shop/customers@1").status_code == 404
    assert http.get("/projects/shop/lineage").status_code in (400, 422)
    assert _page(http, "<script>").status_code in (200, 400)
    assert "<script>" not in _page(http, "<script>").text.split("</head>", 1)[-1]
