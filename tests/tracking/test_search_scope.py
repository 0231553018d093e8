"""Search stays inside its project, and a metric order pages the same across the runs
with a value and those without (two statements, see tracking/search.py)."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

import plinth
from plinth.client import Client
from plinth.core.platform import Platform
from plinth.tracking import tables as t


def _run(client: Client, project: str, name: str, acc: float | None, **params: object) -> str:
    run = client.create_run(project, name=name, params=params, tags={"team": project[-4:]})
    if acc is not None:
        point = {"key": "acc", "value": acc, "step": 0, "timestamp": 1.0}
        client.log_batch(run.id, metrics=[point])
    return run.id


def _names(page: object) -> list[str]:
    return [r.name for r in page.runs]  # type: ignore[attr-defined]


def _walk(client: Client, project: str, limit: int, **query: str) -> list[str]:
    seen: list[str] = []
    token = None
    while True:
        page = client.search_runs(project, limit=limit, page_token=token, **query)
        seen += _names(page)
        token = page.next_page_token
        if token is None:
            return seen


def test_a_search_sees_only_its_own_project(client: Client, project: str) -> None:
    other = f"{project}-other"
    for i in range(3):
        _run(client, project, f"mine-{i}", 0.1 * (i + 1), lr=0.1)
    for i in range(4):  # better runs, same keys, in another project
        _run(client, other, f"theirs-{i}", 0.9 + 0.01 * i, lr=0.1, only_there=1)
    query = {"filter": "metrics.acc > 0 and params.lr = 0.1", "order_by": "metrics.acc desc"}
    assert _names(client.search_runs(project, **query)) == ["mine-2", "mine-1", "mine-0"]
    assert _walk(client, project, 2, **query) == ["mine-2", "mine-1", "mine-0"]
    assert _names(client.search_runs(project, filter="tags.team = 'ther'")) == []
    # a key only the other project has is unknown here, and named as such
    with pytest.raises(plinth.InvalidInput, match="only_there"):
        client.search_runs(project, filter="params.only_there = 1")
    with pytest.raises(plinth.InvalidInput, match=r"known params: lr$"):
        client.search_runs(project, order_by="params.only_there")


@pytest.mark.parametrize("direction", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 2, 3, 5, 50])
def test_metric_order_pages_through_runs_with_and_without_a_value(
    client: Client, project: str, direction: str, limit: int
) -> None:
    values = {"v0": 0.5, "v1": 0.2, "v2": 0.9, "v3": 0.7, "v4": -1.0}
    for name, acc in values.items():
        _run(client, project, name, acc, lr=0.1)
    # NaN and no value at all sort last, newest first, whatever the direction
    for name, acc in (("nan", math.nan), ("none-a", None), ("none-b", None)):
        _run(client, project, name, acc, lr=0.1)
    by_value = sorted(values, key=values.__getitem__, reverse=direction == "desc")
    expected = [*by_value, "none-b", "none-a", "nan"]
    order = {"order_by": f"metrics.acc {direction}"}
    assert _walk(client, project, limit, **order) == expected
    assert _walk(client, project, limit, filter="params.lr = 0.1", **order) == expected
    # a filter on the metric itself leaves the runs without a value out
    assert _walk(client, project, limit, filter="metrics.acc != 0.2", **order) == [
        n for n in by_value if n != "v1"
    ]
    either = "metrics.acc > 0.6 or params.lr = 0.1"  # not every branch needs a value
    assert _walk(client, project, limit, filter=either, **order) == expected


def test_writes_copy_the_run_project(client: Client, project: str, platform: Platform) -> None:
    run = client.create_run(project, params={"a": 1}, tags={"t": "x"})
    client.log_batch(
        run.id,
        params={"b": "two"},
        tags={"t": "y", "u": "3"},
        metrics=[{"key": "m", "value": 1.0, "step": 0, "timestamp": 1.0}],
    )
    client.log_batch(run.id, metrics=[{"key": "m", "value": 2.0, "step": 1, "timestamp": 2.0}])
    with platform.db.read() as conn:
        owner = conn.execute(sa.select(t.runs.c.project_id).where(t.runs.c.id == run.id))
        project_id = owner.scalar_one()
        for table, count in ((t.params, 2), (t.tags, 2), (t.latest_metrics, 1)):
            rows = conn.execute(
                sa.select(table.c.project_id).where(table.c.run_id == run.id)
            ).scalars()
            assert list(rows) == [project_id] * count, table.name
