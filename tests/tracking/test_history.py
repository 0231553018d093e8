"""Metric histories as columns: both wire forms, the SDK's three shapes, and the server's
thinning (``max_points``), on SQLite and on Postgres."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from plinth.client import Client
from plinth.errors import InvalidInput, NotFound, Unprocessable
from plinth.tracking import history
from plinth.tracking.history import Columns, HistoryPoint, downsample
from tests.conftest import make_settings, raw_http

INF = math.inf
# (step, timestamp, value), logged out of order; step 2 twice, the later one first.
POINTS = [
    (0, 10.0, 1.5),
    (2, 13.0, -INF),
    (1, 11.0, math.nan),
    (2, 12.0, INF),
    (3, 14.0, 0.25),
]
BY_STEP = sorted(POINTS, key=lambda p: (p[0], p[1]))


def _log(client: Client, run_id: str, key: str, points: list[tuple[int, float, float]]) -> None:
    metrics = [{"key": key, "step": s, "timestamp": t, "value": v} for s, t, v in points]
    client.log_batch(run_id, metrics=metrics)


def _same(got: list[Any], want: list[tuple[int, float, float]]) -> bool:
    """Points equal, NaN equal to NaN."""
    return len(got) == len(want) and all(
        g[0] == w[0] and g[1] == w[1] and (g[2] == w[2] or (math.isnan(g[2]) and math.isnan(w[2])))
        for g, w in zip(got, want, strict=True)
    )


@pytest.fixture
def run_id(client: Client, project: str) -> str:
    run = client.create_run(project)
    _log(client, run.id, "m", POINTS)
    return run.id


# round trips -------------------------------------------------------------------------


def test_list_round_trips_nan_infinities_and_duplicate_steps_in_order(
    client: Client, run_id: str
) -> None:
    points = client.metric_history(run_id, "m")
    assert len(points) == 5
    assert all(isinstance(p, HistoryPoint) for p in points)
    assert _same(list(points), BY_STEP)
    assert [p.step for p in points] == [0, 1, 2, 2, 3]
    assert points[2].value == INF and points[3].value == -INF  # step 2 by time
    assert math.isnan(points[1].value)
    assert list(points.steps) == [0, 1, 2, 2, 3]
    assert list(points.timestamps) == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert points[-1] == (3, 14.0, 0.25) and points[:1] == [(0, 10.0, 1.5)]
    assert _same(list(client.metric_history(run_id, "m", as_="list")), BY_STEP)
    assert _same(list(client.metric_history(run_id, "m", max_points=100)), BY_STEP)  # whole


def test_numpy_is_a_structured_array(client: Client, run_id: str) -> None:
    got = client.metric_history(run_id, "m", as_="numpy")
    assert isinstance(got, np.ndarray) and got.shape == (5,)
    assert got.dtype.names == ("step", "timestamp", "value")
    assert got["step"].dtype == np.int64 and got["value"].dtype == np.float64
    assert _same(got.tolist(), BY_STEP)


def test_pandas_is_a_frame_of_step_timestamp_value(client: Client, run_id: str) -> None:
    got = client.metric_history(run_id, "m", as_="pandas")
    assert isinstance(got, pd.DataFrame)
    assert list(got.columns) == ["step", "timestamp", "value"] and len(got) == 5
    assert got["step"].dtype == np.int64
    assert _same(list(got.itertuples(index=False, name=None)), BY_STEP)


def test_an_empty_history_in_every_shape(client: Client, run_id: str) -> None:
    assert client.metric_history(run_id, "never") == []
    assert client.metric_history(run_id, "never", as_="numpy").shape == (0,)
    assert client.metric_history(run_id, "never", as_="pandas").empty
    assert client.metric_history(run_id, "never", max_points=2) == []


def test_unknown_run_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.metric_history("f" * 32, "m")
    response = raw_http(client).get(f"/api/v1/runs/{'f' * 32}/metrics", params={"key": "m"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "NotFound"


def test_an_unknown_shape_is_refused(client: Client, run_id: str) -> None:
    with pytest.raises(InvalidInput, match="as_ must be one of list, numpy, pandas"):
        client.metric_history(run_id, "m", as_="polars")  # type: ignore[call-overload]


# wire forms --------------------------------------------------------------------------


def test_json_form_is_strict_json_with_non_finite_values_as_strings(
    client: Client, run_id: str
) -> None:
    response = raw_http(client).get(f"/api/v1/runs/{run_id}/metrics", params={"key": "m"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"

    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in the JSON")

    body = json.loads(response.text, parse_constant=refuse)
    assert body == {
        "run_id": run_id,
        "key": "m",
        "steps": [0, 1, 2, 2, 3],
        "timestamps": [10.0, 11.0, 12.0, 13.0, 14.0],
        "values": [1.5, "NaN", "Infinity", "-Infinity", 0.25],
    }


@pytest.mark.parametrize(
    ("accept", "binary"),
    [
        ("", False),
        ("*/*", False),  # the binary form only for a client that names it
        (history.MEDIA_TYPE, True),
        (f"{history.MEDIA_TYPE}, application/json;q=0.5", True),
        (f"{history.MEDIA_TYPE};q=0, application/json", False),  # q=0: not acceptable
        (f"{history.MEDIA_TYPE};q=0.4, */*;q=0.5", False),
        (f"{history.MEDIA_TYPE.upper()};Q=0.9, application/json;q=0.8", True),
        (f"{history.MEDIA_TYPE};q=x", False),
    ],
)
def test_the_binary_form_goes_to_whom_accept_weighs_it_most(accept: str, binary: bool) -> None:
    assert history.wants_binary(accept) is binary


def test_binary_form_is_the_documented_layout(client: Client, run_id: str) -> None:
    response = raw_http(client).get(
        f"/api/v1/runs/{run_id}/metrics",
        params={"key": "m"},
        headers={"Accept": f"{history.MEDIA_TYPE}, application/json;q=0.5"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == history.MEDIA_TYPE
    raw = response.content
    assert len(raw) == 16 + 24 * 5
    assert struct.unpack_from("<4sIQ", raw) == (b"PLMH", 1, 5)
    steps = struct.unpack_from("<5q", raw, 16)
    stamps = struct.unpack_from("<5d", raw, 16 + 40)
    values = struct.unpack_from("<5d", raw, 16 + 80)
    assert _same(list(zip(steps, stamps, values, strict=True)), BY_STEP)


def test_a_malformed_binary_body_is_an_error() -> None:
    good = history.to_binary(Columns(np.arange(3), np.zeros(3), np.ones(3)))
    assert list(history.from_binary(good).steps) == [0, 1, 2]
    for bad in (b"", good[:-1], b"XXXX" + good[4:], good + b"\0"):
        with pytest.raises(Exception, match="metric history"):
            history.from_binary(bad)


# max_points --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 1, history.MAX_POINTS + 1])
def test_max_points_out_of_range_is_422(client: Client, run_id: str, bad: int) -> None:
    url = f"/api/v1/runs/{run_id}/metrics"
    response = raw_http(client).get(url, params={"key": "m", "max_points": bad})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "Unprocessable"
    assert "max_points must be from 2 to 100,000" in response.json()["error"]["message"]
    with pytest.raises(Unprocessable):
        client.metric_history(run_id, "m", max_points=bad)


def test_max_points_that_is_not_a_number_is_400(client: Client, run_id: str) -> None:
    url = f"/api/v1/runs/{run_id}/metrics"
    response = raw_http(client).get(url, params={"key": "m", "max_points": "many"})
    assert response.status_code == 400


def test_max_points_thins_on_the_server_keeping_extremes_markers_and_ends(
    client: Client, project: str
) -> None:
    n = 20_000
    values = [math.sin(i / 300) for i in range(n)]
    values[7_777] = 50.0  # a spike
    values[12_345] = -50.0  # a dip
    for i in (3_000, 3_001, 3_002):  # one stretch of NaN
        values[i] = math.nan
    values[15_000] = INF
    values[15_001] = -INF
    points = [(i, 1000.0 + i, v) for i, v in enumerate(values)]
    run = client.create_run(project)
    _log(client, run.id, "loss", points)

    thinned = client.metric_history(run.id, "loss", max_points=500)
    assert len(thinned) <= 500 + 2 * 3  # plus first and last of each non-finite stretch
    steps = list(thinned.steps)
    assert steps == sorted(set(steps))
    assert steps[0] == 0 and steps[-1] == n - 1
    assert {7_777, 12_345, 3_000, 3_002, 15_000, 15_001} <= set(steps)
    for p in thinned:  # each is a point of the history, as it was
        assert _same([p], [points[p.step]])
    same = client.metric_history(run.id, "loss", max_points=500, as_="numpy")
    assert same["step"].tolist() == steps
    assert len(client.metric_history(run.id, "loss", max_points=n)) == n  # whole


def test_downsample_bound_and_what_it_keeps() -> None:
    rng = np.random.default_rng(0)
    n = 100_003
    values = np.cumsum(rng.normal(size=n))
    values[50_000:50_010] = np.nan  # one stretch: first and last kept
    values[70_000] = np.inf
    columns = Columns(np.arange(n) * 10, np.arange(n) / 10, values)
    for max_points in (2, 3, 5, 6, 100, 1_000, 10_000):
        out = downsample(columns, max_points)
        assert len(out) <= max_points + 2 * 2
        steps = out.steps.tolist()
        assert steps == sorted(set(steps))
        assert steps[0] == 0 and steps[-1] == (n - 1) * 10
        assert {500_000, 500_090, 700_000} <= set(steps)
        index = np.asarray(steps) // 10
        assert np.array_equal(out.timestamps, index / 10)
        assert np.array_equal(out.values, values[index], equal_nan=True)
    out = downsample(columns, 1_000)
    finite = np.isfinite(values)
    assert values[finite].max() in out.values and values[finite].min() in out.values
    short = Columns(np.arange(10), np.zeros(10), np.ones(10))
    assert downsample(short, 10) is short


def test_downsample_draws_the_shape_and_keeps_every_spike() -> None:
    """Lines through the kept points stay on the whole history's curve."""
    n = 200_000
    x = np.arange(n)
    wave = np.sin(x / 5_000)
    out = downsample(Columns(x, x.astype(float), wave), 1_500)
    assert np.max(np.abs(np.interp(x, out.steps, out.values) - wave)) < 0.01
    spiky = wave + (x % 1_000 == 0) * 3.0 - (x % 1_000 == 500) * 3.0
    out = downsample(Columns(x, x.astype(float), spiky), 1_500)
    assert set(range(0, n, 500)) <= set(out.steps.tolist())


def test_downsample_of_only_non_finite_values() -> None:
    n = 10_000
    values = np.full(n, np.nan)
    out = downsample(Columns(np.arange(n), np.zeros(n), values), 100)
    assert out.steps.tolist() == [0, n - 1]


# access ------------------------------------------------------------------------------


def test_an_outsider_gets_not_found_in_every_form(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        outsider_token = root.create_user("outsider").token.token
        run = root.create_run("team-a")
        _log(root, run.id, "m", POINTS)
        assert len(root.metric_history(run.id, "m")) == 5
    with as_user(outsider_token) as outsider:
        for kwargs in ({}, {"max_points": 10}, {"as_": "numpy"}):
            with pytest.raises(NotFound):
                outsider.metric_history(run.id, "m", **kwargs)
        response = raw_http(outsider).get(f"/api/v1/runs/{run.id}/metrics", params={"key": "m"})
        assert response.status_code == 404


def test_slow_logging_tops_up_one_chunk_and_big_batches_make_their_own(
    client: Client, project: str
) -> None:
    from plinth.core.platform import Platform
    from plinth.tracking import tables

    run_id = client.create_run(project).id
    for step in range(0, 150, 3):  # 50 small batches, as a slow training loop sends
        points = [{"key": "loss", "value": s / 10, "step": s} for s in range(step, step + 3)]
        client.log_batch(run_id, metrics=points)
    big = [{"key": "loss", "value": 1.0, "step": s} for s in range(150, 5_150)]
    client.log_batch(run_id, metrics=big)  # a chunk of its own
    client.log_batch(run_id, metrics=[{"key": "loss", "value": 2.0, "step": 5_150}])
    platform = Platform.open(client.settings)
    try:
        with platform.db.read() as conn:
            mc = tables.metric_chunks
            counts = conn.execute(
                sa.select(mc.c.count).where(mc.c.run_id == run_id).order_by(mc.c.id)
            ).scalars()
            assert list(counts) == [150, 5_001]  # the last point joined the last chunk
    finally:
        platform.close()
    history_ = client.metric_history(run_id, "loss")
    assert list(history_.steps) == list(range(5_151))
    assert history_[10].value == 1.0 and history_[-1].value == 2.0


def test_batches_written_at_once_to_one_metric_keep_every_point(client: Client) -> None:
    """Writers that log one metric of one run at the same moment (ranks of one job)
    each have every acknowledged point kept: on Postgres two transactions may grow the
    metric's last chunk at once, and neither may overwrite the other's points."""
    import threading
    import uuid

    run_id = client.create_run("concurrent").id
    writers, each = 4, 60

    def write(w: int) -> None:
        for i in range(each):
            step = w * each + i
            series = [{"key": "x", "steps": [step], "timestamps": [1.0], "values": [float(step)]}]
            client.send_batch(run_id, uuid.uuid4().hex, series)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    points = client.metric_history(run_id, "x")
    assert sorted(p.step for p in points) == list(range(writers * each))
