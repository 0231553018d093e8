"""Datasets' pages over HTTP: the list, a dataset's versions, a version's files,
validation and profiles (drawn as inline SVG), the comparison of two versions; hostile
names escaped; outsiders get the same 404 as for nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from plinth.client import Client
from plinth.core.platform import Platform
from plinth.core.projects import projects
from plinth.data.tables import dataset_files, datasets
from tests.conftest import make_settings, raw_http

EVIL = "<script>alert(1)</script>"
BASE = "/projects/shop/datasets"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    tmp = tmp_path_factory.mktemp("datasets-ui")
    settings = make_settings(tmp / "home")
    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
    root = Client(settings=settings.model_copy(update={"token": token}))
    outsider = Client(
        settings=settings.model_copy(update={"token": root.create_user("out").token.token})
    )
    data = tmp / "data"
    data.mkdir()
    pq.write_table(pa.table({"age": [30.0, 40.0, 50.0], EVIL: ["a", "b", "a"]}), data / "t.parquet")
    root.set_dataset_rules(
        "shop",
        "customers",
        [{"check": "nulls", "column": "age", "max_fraction": 0, "severity": "warn"}],
    )
    root.push_dataset("shop", "customers", data, message=EVIL)
    pq.write_table(
        pa.table({"age": [30.0, None, 50.0], "plan": ["x", "y", "z"]}), data / "t.parquet"
    )
    (data / "more.txt").write_text("more")
    root.push_dataset("shop", "customers", data, message="second")
    try:
        yield raw_http(root), raw_http(outsider)
    finally:
        outsider.close()
        root.close()


def test_the_list_and_a_datasets_versions(site: tuple[httpx.Client, httpx.Client]) -> None:
    http, _ = site
    page = http.get(BASE)
    assert page.status_code == 200 and "customers@2" in page.text
    versions = http.get(f"{BASE}/customers")
    assert versions.status_code == 200
    assert versions.text.index("customers@2") < versions.text.index("customers@1")  # newest first
    assert "1 warnings" in versions.text and 'name="old"' in versions.text
    assert EVIL not in versions.text and "&lt;script&gt;" in versions.text


def test_a_version_shows_files_schemas_checks_and_profiles(
    site: tuple[httpx.Client, httpx.Client],
) -> None:
    http, _ = site
    page = http.get(f"{BASE}/customers/versions/1")
    assert page.status_code == 200
    text = page.text
    assert "data/t.parquet" in text and "parquet, 2 columns" in text
    assert 'svg class="bars"' in text  # age's histogram, the other column's top values
    assert EVIL not in text
    second = http.get(f"{BASE}/customers/versions/latest").text
    assert "33.33% of age is null" in second  # the warning, shown


def test_two_versions_compared(site: tuple[httpx.Client, httpx.Client]) -> None:
    http, _ = site
    page = http.get(f"{BASE}/customers/diff", params={"old": 1, "new": 2})
    assert page.status_code == 200
    assert "1 added, 0 removed, 1 changed" in page.text
    assert "data/more.txt" in page.text and "plan" in page.text
    bad = http.get(f"{BASE}/customers/diff", params={"old": "../1"})
    assert bad.status_code == 400


def test_outsiders_and_missing_things_get_404(site: tuple[httpx.Client, httpx.Client]) -> None:
    http, outsider = site
    for url in (BASE, f"{BASE}/customers", f"{BASE}/customers/versions/1"):
        assert outsider.get(url).status_code == 404
    assert http.get(f"{BASE}/nothing").status_code == 404
    assert http.get(f"{BASE}/customers/versions/7").status_code == 404


def test_a_version_page_shows_what_old_stored_profiles_hold(
    client: Client, project: str, tmp_path: Path, platform: Platform
) -> None:
    """Profiles stored before pushes were checked (a count of 0 with top values, NaN
    and infinities, a NaN kept as null) answer the page and the API: the columns that
    hold are shown, the others counted as not shown; a profile whose row counts do not
    hold is left out."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("age,plan\n30,x\n40,y\n")
    (data / "b.csv").write_text("z\n1\n")
    client.push_dataset(project, "old", data)
    good = {"name": "age", "type": "int64", "kind": "numeric", "count": 2, "nulls": 0}
    stored = {
        "rows": 2,
        "sampled": 2,
        "columns": [
            good | {"mean": 35.0, "histogram": {"edges": [30, 35, 40], "counts": [1, 1]}},
            {
                "name": "plan",
                "type": "string",
                "kind": "categorical",
                "count": 0,
                "nulls": 2,
                "top": [{"value": "x", "count": 1}, {"value": "y", "count": 1}],
            },
            good | {"name": "nan", "mean": float("nan"), "quantiles": {"p50": float("inf")}},
            good | {"name": "null-edge", "histogram": {"edges": [0, None], "counts": [2]}},
        ],
    }
    broken = {"rows": -1, "sampled": 0, "columns": []}
    f, d = dataset_files, datasets
    with platform.db.write() as conn:
        pid = conn.execute(sa.select(projects.c.id).where(projects.c.name == project)).scalar()
        dataset_id = conn.execute(
            sa.select(d.c.id).where(d.c.project_id == pid, d.c.name == "old")
        ).scalar()
        for path, profile in (("data/a.csv", stored), ("data/b.csv", broken)):
            conn.execute(
                f.update()
                .where(f.c.dataset_id == dataset_id, f.c.path == path)
                .values(profile=json.dumps(profile))  # NaN and Infinity as Python writes them
            )
    http = raw_http(client)
    page = http.get(f"/projects/{project}/datasets/old/versions/1")
    assert page.status_code == 200, page.text
    assert 'data-file="data/a.csv"' in page.text and 'data-file="data/b.csv"' not in page.text
    assert '<td class="strong">age</td>' in page.text
    assert '<td class="strong">plan</td>' not in page.text
    assert "3 more columns not profiled or not shown" in page.text
    profiles = client.dataset_profiles(project, "old@1")
    assert list(profiles) == ["data/a.csv"]
    assert [c.name for c in profiles["data/a.csv"].columns] == ["age"]
    assert profiles["data/a.csv"].columns_left_out == 3
