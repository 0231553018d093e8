from __future__ import annotations

import pytest

import plinth
from plinth.client import Client
from plinth.tracking.search import BoolOp, Comparison, Field, parse_filter, parse_order_by


def _sweep(client: Client, project: str) -> dict[str, str]:
    ids = {}
    for lr in (0.01, 0.1, 1.0):
        for opt in ("adam", "sgd"):
            run = client.create_run(
                project,
                name=f"{opt}-{lr}",
                params={"lr": lr, "opt": opt},
                tags={"team": "a" if opt == "adam" else "b"},
            )
            acc = lr / 2 + (0.1 if opt == "adam" else 0.0)
            client.log_batch(
                run.id, metrics=[{"key": "acc", "value": acc, "step": 0, "timestamp": 1.0}]
            )
            ids[f"{opt}-{lr}"] = run.id
    return ids


def names(page: plinth.Client | object) -> list[str]:
    return [r.name for r in page.runs]  # type: ignore[attr-defined]


def test_filter_and_order(client: Client, project: str) -> None:
    _sweep(client, project)
    page = client.search_runs(
        project, filter="metrics.acc > 0.09 and params.opt = 'adam'", order_by="metrics.acc desc"
    )
    assert names(page) == ["adam-1.0", "adam-0.1", "adam-0.01"]
    page = client.search_runs(project, filter="params.lr = 0.1")
    assert sorted(names(page)) == ["adam-0.1", "sgd-0.1"]
    page = client.search_runs(
        project, filter="params.lr < 0.5 and tags.team = 'b'", order_by="params.lr asc"
    )
    assert names(page) == ["sgd-0.01", "sgd-0.1"]
    page = client.search_runs(
        project,
        filter="(tags.team = 'a' and params.lr >= 1) or name like 'sgd-0.0%'",
        order_by="name",
    )
    assert names(page) == ["adam-1.0", "sgd-0.01"]
    page = client.search_runs(project, filter="status = 'running'", order_by="params.lr desc, name")
    assert names(page)[:2] == ["adam-1.0", "sgd-1.0"]


def test_runs_missing_the_order_metric_sort_last(client: Client, project: str) -> None:
    _sweep(client, project)
    client.create_run(project, name="no-metrics")
    for direction in ("asc", "desc"):
        page = client.search_runs(project, order_by=f"metrics.acc {direction}")
        assert names(page)[-1] == "no-metrics"


def test_pagination_walks_every_run_once(client: Client, project: str) -> None:
    ids = set(_sweep(client, project).values())
    seen: list[str] = []
    token = None
    while True:
        page = client.search_runs(project, order_by="metrics.acc desc", limit=4, page_token=token)
        seen += [r.id for r in page.runs]
        token = page.next_page_token
        if token is None:
            break
    assert len(seen) == len(ids) and set(seen) == ids


@pytest.mark.parametrize(
    "bad",
    [
        "metrics.acc > 0.9; DROP TABLE runs",
        "metrics.acc > 0.9 -- comment",
        "metrics.acc > 0.9 or 1=1",
        "params.lr = 0.1' OR '1'='1",
        "metrics.acc > (SELECT 1)",
        "bogus.x = 1",
        "unknown_attr = 1",
        "metrics.acc >",
        "metrics.acc like 'x'",
        "status = 1",
        "metrics.acc > 0.9 and",
    ],
)
def test_bad_filters_are_refused(client: Client, project: str, bad: str) -> None:
    _sweep(client, project)
    with pytest.raises(plinth.InvalidInput):
        client.search_runs(project, filter=bad)
    assert len(client.search_runs(project).runs) == 6


def test_search_in_unknown_project_is_404(client: Client) -> None:
    with pytest.raises(plinth.NotFound):
        client.search_runs("nope-never-created")


def test_parser_builds_the_tree() -> None:
    node = parse_filter('metrics.`val/acc` >= 0.5 and (params.lr = 1e-3 or tag.x != "y")')
    assert node == BoolOp(
        "and",
        (
            Comparison(Field("metrics", "val/acc"), ">=", 0.5),
            BoolOp(
                "or",
                (
                    Comparison(Field("params", "lr"), "=", 0.001),
                    Comparison(Field("tags", "x"), "!=", "y"),
                ),
            ),
        ),
    )
    assert parse_filter("  ") is None
    order = parse_order_by("metrics.acc desc, start_time")
    assert [(k.field, k.descending) for k in order] == [
        (Field("metrics", "acc"), True),
        (Field("attr", "start_time"), False),
    ]
    with pytest.raises(plinth.InvalidInput):
        parse_order_by("metrics.acc sideways")
