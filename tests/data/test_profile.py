"""Profiles, unit by unit over pyarrow (no server): exact counts and moments, sampled
quantiles and histograms, bounded category tracking; then end to end through a push."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plinth import Client
from plinth.data import profile as profiling
from plinth.data.schemas import ColumnProfile
from plinth.data.tabular import read_table
from tests.conftest import raw_http


def _profile(table: pa.Table, path: Path, batch_rows: int = 1000) -> dict[str, ColumnProfile]:
    pq.write_table(table, path, row_group_size=batch_rows)
    read = read_table(path.name, lambda: io.BytesIO(path.read_bytes()))
    found, profile = read.table, read.profile
    assert found is not None and profile is not None
    assert profile.rows == table.num_rows == found.rows
    return {c.name: c for c in profile.columns}


def test_counts_moments_and_ranges_are_exact_across_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(5, 2, 5000)
    with_nulls = pa.array([None if i % 10 == 0 else float(v) for i, v in enumerate(x)])
    table = pa.table({"x": x, "y": with_nulls, "n": pa.array(np.arange(5000) % 7, pa.int32())})
    cols = _profile(table, tmp_path / "t.parquet")
    cx = cols["x"]
    assert (cx.kind, cx.count, cx.nulls) == ("numeric", 5000, 0)
    assert cx.min == pytest.approx(x.min()) and cx.max == pytest.approx(x.max())
    assert cx.mean == pytest.approx(x.mean()) and cx.std == pytest.approx(x.std())
    assert cx.quantiles["p50"] == pytest.approx(np.quantile(x, 0.5))
    assert cx.histogram is not None and sum(cx.histogram.counts) == pytest.approx(5000)
    cy = cols["y"]
    kept = np.array([v for i, v in enumerate(x) if i % 10])
    assert (cy.count, cy.nulls) == (4500, 500)
    assert cy.mean == pytest.approx(kept.mean()) and cy.std == pytest.approx(kept.std())


def test_any_numbers_and_times_a_file_holds_profile(tmp_path: Path) -> None:
    """Values a double cannot cut into bins, integers past 2^53 and times past the year
    9999 (each crashed a push, or dropped the file's schema): profiled, every figure
    finite, what cannot be said left out."""
    table = pa.table(
        {
            "alone": [1e17, 1e17],  # one large value: no width to cut
            "extremes": [1.7e308, -1.7e308],  # a span past what a double holds
            "ids": pa.array([2**60 + 1, 2**62 + 3], pa.int64()),  # snowflake ids
            "wide": pa.array([10**70, 1], pa.decimal256(76, 0)),
            "far": pa.array([253402300800 * 10**6] * 2, pa.timestamp("us")),  # year 10000
        }
    )
    cols = _profile(table, tmp_path / "odd.parquet")
    for name in ("alone", "extremes", "ids", "wide"):
        column = cols[name]
        assert column.kind == "numeric" and column.count == 2, column
        figures = [column.min, column.max, column.mean, column.std, *column.quantiles.values()]
        assert all(np.isfinite(f) for f in figures if f is not None), column
        assert column.histogram is not None and sum(column.histogram.counts) == 2
        assert all(np.isfinite(column.histogram.edges)), column
    assert cols["ids"].max == pytest.approx(2**62)
    assert (cols["far"].kind, cols["far"].count, cols["far"].min) == ("temporal", 2, None)


def test_quantiles_of_a_long_file_come_from_a_uniform_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profiling, "SAMPLE", 2000)
    x = np.arange(100_000, dtype=float)  # sorted: a biased sample would show it
    cols = _profile(pa.table({"x": x}), tmp_path / "t.parquet", batch_rows=10_000)
    cx = cols["x"]
    assert cx.mean == pytest.approx(x.mean()) and cx.max == 99_999
    assert cx.quantiles["p50"] == pytest.approx(50_000, rel=0.05)
    assert cx.quantiles["p95"] == pytest.approx(95_000, rel=0.03)
    assert cx.histogram is not None
    counts = cx.histogram.counts
    assert sum(counts) == pytest.approx(100_000) and min(counts) > 0.6 * max(counts)


def test_categories_are_counted_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profiling, "TRACKED", 50)
    common = ["a"] * 3000 + ["b"] * 2000 + ["c"] * 1000
    rare = [f"r{i}" for i in range(400)]  # each once: more distinct values than tracked
    values = common + rare + [None] * 100
    rng = np.random.default_rng(3)
    order = rng.permutation(len(values))
    table = pa.table({"c": pa.array([values[i] for i in order]), "b": [True, False] * 3250})
    cols = _profile(table, tmp_path / "t.parquet", batch_rows=500)
    cc = cols["c"]
    assert (cc.kind, cc.count, cc.nulls) == ("categorical", 6400, 100)
    assert [(t.value, t.count) for t in cc.top[:3]] == [("a", 3000), ("b", 2000), ("c", 1000)]
    assert cc.distinct is None and cc.distinct_over == 50
    cb = cols["b"]
    assert cb.distinct == 2 and {t.value for t in cb.top} == {"True", "False"}


def test_a_push_stores_each_tables_profile_and_csv_is_profiled_in_the_same_pass(
    client: Client, project: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.csv").write_text("age,plan,when\n30,pro,2026-01-01\n40,free,2026-02-01\n,pro,\n")
    (data / "notes.txt").write_text("no table")
    client.push_dataset(project, "churn", data)
    profiles = client.dataset_profiles(project, "churn@1")
    assert set(profiles) == {"data/t.csv"}
    p = profiles["data/t.csv"]
    cols = {c.name: c for c in p.columns}
    assert p.rows == 3 and (cols["age"].count, cols["age"].nulls, cols["age"].mean) == (2, 1, 35)
    assert [(t.value, t.count) for t in cols["plan"].top] == [("pro", 2), ("free", 1)]
    assert cols["when"].kind == "temporal" and cols["when"].min is not None
    unprofiled = client.push_dataset(project, "plain", data, profile=False)
    assert unprofiled.rows == 3 and client.dataset_profiles(project, "plain") == {}


def _hostile(column: dict[str, Any], **profile: Any) -> dict[str, Any]:
    """A profile of the one-column, three-row file pushed below, with ``column``'s
    fields and the profile's own replaced."""
    good = {"name": "age", "type": "int64", "kind": "numeric", "count": 3, "nulls": 0}
    return {"rows": 3, "sampled": 3, "columns": [good | column]} | profile


NAN, INF = float("nan"), float("inf")
HOSTILE = {
    "mean NaN": _hostile({"mean": NAN}),
    "max Infinity": _hostile({"max": INF}),
    "std -Infinity": _hostile({"std": -INF}),
    "negative std": _hostile({"std": -1.0}),
    "quantile NaN": _hostile({"quantiles": {"p50": NAN}}),
    "edge Infinity": _hostile({"histogram": {"edges": [0, INF], "counts": [3]}}),
    "count NaN in a bin": _hostile({"histogram": {"edges": [0, 1], "counts": [NAN]}}),
    "negative bin": _hostile({"histogram": {"edges": [0, 1], "counts": [-3]}}),
    "bins without edges": _hostile({"histogram": {"edges": [0], "counts": [1, 2]}}),
    "edges going back": _hostile({"histogram": {"edges": [5, 1, 9], "counts": [1, 2]}}),
    "count 0 with top values": _hostile(
        {"kind": "categorical", "count": 0, "nulls": 3, "top": [{"value": "a", "count": 0}]}
    ),
    "count 0 with a top value": _hostile(
        {"kind": "categorical", "count": 0, "nulls": 3, "top": [{"value": "a", "count": 1}]}
    ),
    "top over the count": _hostile({"kind": "categorical", "top": [{"value": "a", "count": 9}]}),
    "negative nulls": _hostile({"nulls": -1}),
    "more values than rows": _hostile({"count": 10**30}),
    "min above max": _hostile({"min": 9.0, "max": 1.0}),
    "sampled past the rows": _hostile({}, sampled=4),
    "rows NaN": _hostile({}, rows=NAN),
}


def test_a_pushed_profile_that_does_not_hold_is_refused_and_changes_nothing(
    client: Client, project: str, tmp_path: Path
) -> None:
    """A hostile pusher's profile (NaN, infinities, a count of 0 with top values, counts
    past the rows) is a 422 naming the file, and no version is made: the version's page
    and every reader of profiles can trust each figure."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.csv").write_text("age\n30\n40\n50\n")
    client.push_dataset(project, "churn", data)
    files = [f.model_dump(exclude_none=True) for f in client.dataset_files(project, "churn@1")]
    files[0]["path"] = "moved/t.csv"  # other files than version 1: a version would be made
    http = raw_http(client)
    base = f"/api/v1/projects/{project}/datasets/churn/versions"
    for why, profile in HOSTILE.items():
        body = json.dumps({"files": files, "profiles": {"moved/t.csv": profile}})  # NaN as is
        r = http.post(base, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (why, r.text)
        error = r.json()["error"]
        assert error["type"] == "Unprocessable", why
        assert error["message"].startswith("the profile of 'moved/t.csv' is refused: "), why
    assert [v.version for v in client.list_dataset_versions(project, "churn")] == [1]
    fine = _hostile({"mean": 40.0, "min": 30.0, "max": 50.0})
    r = http.post(base, json={"files": files, "profiles": {"moved/t.csv": fine}})
    assert r.status_code == 201, r.text
    assert client.dataset_profiles(project, "churn@2")["moved/t.csv"].columns[0].mean == 40
