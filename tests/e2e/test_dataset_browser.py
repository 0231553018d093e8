"""Datasets' pages in a real browser against a real ``plinth server``: open a version's
profile (its columns drawn), then compare two versions. The browser and its page come
from test_browser.py (Debian's Chromium, no console errors)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plinth.client import Client
from tests.conftest import make_settings
from tests.e2e import test_browser as shared

pytestmark = pytest.mark.browser
browser, page = shared.browser, shared.page  # the fixtures, shared


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A home with two versions of ``customers`` in project ``lab``, then served."""
    home = tmp_path_factory.mktemp("datasets-browser-home")
    data = tmp_path_factory.mktemp("data") / "data"
    data.mkdir()
    with Client(settings=make_settings(home)) as client:
        ages = [float(20 + i % 50) for i in range(500)]
        plans = ["free", "pro", "team", "pro", "free"] * 100
        pq.write_table(pa.table({"age": ages, "plan": plans}), data / "customers.parquet")
        client.push_dataset("lab", "customers", data, message="first cut")
        pq.write_table(
            pa.table({"age": ages, "plan": plans, "tenure": list(range(500))}),
            data / "customers.parquet",
        )
        (data / "notes.txt").write_text("added in the second version")
        client.push_dataset("lab", "customers", data, message="tenure added")
    with shared._serve(home) as base:
        yield base


def test_open_a_versions_profile_then_compare_two_versions(
    server: str, page: Any, tmp_path: Path
) -> None:
    page.goto(server + "/projects/lab")
    page.get_by_role("link", name="Datasets", exact=True).click()
    page.wait_for_url("**/projects/lab/datasets")
    page.get_by_role("link", name="customers", exact=True).click()
    page.wait_for_url("**/projects/lab/datasets/customers")
    page.get_by_role("link", name="customers@2", exact=True).click()
    page.wait_for_url("**/datasets/customers/versions/2")
    profile = page.locator("section.profile")
    assert profile.count() == 1
    assert "500 rows" in profile.inner_text()
    columns = profile.locator("table.profile-columns tbody tr")
    assert columns.count() == 3
    assert columns.first.locator("svg.bars rect").count() == 20  # age: a 20-bin histogram
    assert "free" in columns.nth(1).inner_text()  # plan: its top values
    page.screenshot(path=str(tmp_path / "version.png"), full_page=True)

    page.go_back()
    page.wait_for_url("**/projects/lab/datasets/customers")
    page.locator("select[name=old]").select_option("1")
    page.locator("select[name=new]").select_option("2")
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url("**/datasets/customers/diff?old=1&new=2")
    summary = page.locator(".diff-summary").inner_text()
    assert "1 added, 0 removed, 1 changed" in summary
    rows = page.locator("table.dataset-diff tbody tr")
    assert rows.count() == 2
    changed = page.locator("tr.change-changed").inner_text()
    assert "tenure" in changed and "added" in changed
    page.screenshot(path=str(tmp_path / "diff.png"), full_page=True)
