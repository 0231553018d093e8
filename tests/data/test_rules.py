"""Validation rules: declared in YAML or Python, stored with the dataset, checked where
the data is read; a blocking failure pushes nothing and names each rule, file and
sample rows; a warning is recorded with the version; the server takes no version
whose report was not made against the dataset's current rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from plinth import Client
from plinth.data import client as data_client
from plinth.data.rules import Check, ValidationFailed
from plinth.errors import InvalidInput, NotFound
from tests.conftest import raw_http

RULES = """
rules:
  - {check: range, column: age, min: 0, max: 120}
  - {check: allowed, column: plan, values: [free, pro]}
  - {check: unique, column: id}
  - {check: nulls, column: age, max_fraction: 0.2, severity: warn}
  - {check: type, column: id, type: integer}
  - {check: rows, min: 3, files: "data/*.csv"}
"""


def _data(root: Path, rows: list[str]) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "customers.csv").write_text("id,age,plan\n" + "\n".join(rows) + "\n")
    (data / "readme.txt").write_text("not a table")
    return data


GOOD = ["1,34,free", "2,51,pro", "3,,pro", "4,29,free"]


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    send = data_client.DataCalls._send_content

    def counted(self: Any, base: str, items: list[tuple[str, Any]], *rest: Any) -> None:
        sent.extend(d for d, _ in items)
        send(self, base, items, *rest)

    monkeypatch.setattr(data_client.DataCalls, "_send_content", counted)
    return sent


def test_a_blocking_rule_stops_the_push_and_names_rules_files_and_rows(
    client: Client, project: str, tmp_path: Path, uploads: list[str]
) -> None:
    rules = client.set_dataset_rules(project, "customers", RULES)
    assert len(rules.rules) == 6 and len(rules.digest) == 64
    bad = ["1,34,free", "2,-5,pro", "2,51,gold", "4,200,pro"]
    with pytest.raises(ValidationFailed) as caught:
        client.push_dataset(project, "customers", _data(tmp_path, bad))
    report = caught.value.report
    failing = {r.rule: r for r in report.blocking}
    assert set(failing) == {"age-range", "plan-allowed", "id-unique"}
    assert failing["age-range"].failing == 2 and failing["age-range"].file == "data/customers.csv"
    assert [s["_row"] for s in failing["age-range"].samples] == [1, 3]
    assert failing["age-range"].samples[0] == {"_row": 1, "id": 2, "age": -5, "plan": "pro"}
    assert failing["plan-allowed"].samples[0]["plan"] == "gold"
    assert failing["id-unique"].samples == [{"_row": 2, "id": 2, "age": 51, "plan": "gold"}]
    assert "age-range on data/customers.csv" in str(caught.value)
    assert uploads == []  # nothing was sent
    assert client.get_dataset(project, "customers").versions == 0


def test_a_warning_is_recorded_with_the_version_and_lets_it_pass(
    client: Client, project: str, tmp_path: Path
) -> None:
    client.set_dataset_rules(project, "customers", RULES)
    rows = ["1,34,free", "2,,pro", "3,,pro", "4,29,free"]  # half the ages missing
    v = client.push_dataset(project, "customers", _data(tmp_path, rows))
    assert v.version == 1 and v.validation is not None
    [warning] = v.validation.warnings
    assert (warning.rule, warning.severity, warning.passed) == ("age-nulls", "warn", False)
    assert "50.00% of age is null" in warning.message
    assert client.get_dataset_version(project, "customers@1").validation == v.validation
    passed = {r.rule for r in v.validation.results if r.passed}
    assert passed == {"age-range", "plan-allowed", "id-unique", "id-type", "rows"}


def test_custom_python_checks_run_with_the_rules(
    client: Client, project: str, tmp_path: Path
) -> None:
    def old_free_users(batch: Any) -> Any:
        return pc.and_(pc.greater(batch.column("age"), 40), pc.equal(batch.column("plan"), "free"))

    data = _data(tmp_path, ["1,34,free", "2,51,free", "3,45,pro"])
    with pytest.raises(ValidationFailed) as caught:
        client.push_dataset(project, "c", data, checks=[Check("no-old-free", old_free_users)])
    [result] = caught.value.report.blocking
    assert (result.rule, result.failing, result.samples[0]["id"]) == ("no-old-free", 1, 2)
    v = client.push_dataset(
        project, "c", data, checks=[Check("no-old-free", old_free_users, severity="warn")]
    )
    assert v.validation is not None and [w.rule for w in v.validation.warnings] == ["no-old-free"]

    def broken(batch: Any) -> Any:
        raise ValueError("oops")

    with pytest.raises(ValidationFailed, match="raised ValueError: oops"):
        client.push_dataset(project, "d", data, checks=[Check("broken", broken)])


def test_the_server_takes_no_version_checked_against_other_rules(
    client: Client, project: str, tmp_path: Path
) -> None:
    client.set_dataset_rules(project, "customers", RULES)
    v = client.push_dataset(project, "customers", _data(tmp_path, GOOD))
    assert v.validation is not None
    http = raw_http(client)
    base = f"/api/v1/projects/{project}/datasets/customers/versions"
    files = [f.model_dump() for f in client.dataset_files(project, "customers@1")]
    files[0]["path"] = "moved/" + files[0]["path"]
    unchecked = http.post(base, json={"files": files})
    assert unchecked.status_code == 409 and "did not check" in unchecked.text
    stale = v.validation.model_dump(mode="json") | {"rules_digest": "0" * 64}
    r = http.post(base, json={"files": files, "validation": stale})
    assert r.status_code == 409 and "changed" in r.text
    failing = v.validation.model_dump(mode="json")
    failing["results"][0] |= {"passed": False, "severity": "block", "failing": 1}
    assert http.post(base, json={"files": files, "validation": failing}).status_code == 400
    assert len(client.list_dataset_versions(project, "customers")) == 1

    client.set_dataset_rules(project, "customers", [])  # no rules: no report needed
    assert http.post(base, json={"files": files}).status_code == 201
    events = [e for e in client.audit_events(project=project) if e.action == "datasets.rules"]
    assert [e.outcome for e in events] == ["ok", "ok"]


def test_bad_rules_are_refused_and_change_nothing(client: Client, project: str) -> None:
    client.set_dataset_rules(project, "customers", [{"check": "range", "column": "a", "min": 0}])
    before = client.dataset_rules(project, "customers")
    for bad in (
        "rules: [{check: nonsense, column: a}]",
        "rules: [{check: range, column: a, min: x}]",
        "rules: [{check: range}]",
        "{not yaml",
        [{"check": "unique", "column": "a"}, {"check": "unique", "column": "a"}],
        [{"check": "nulls", "column": "a", "max_fraction": 2}],
    ):
        with pytest.raises(InvalidInput):
            client.set_dataset_rules(project, "customers", bad)  # type: ignore[arg-type]
    assert client.dataset_rules(project, "customers") == before
    http = raw_http(client)
    r = http.put(
        f"/api/v1/projects/{project}/datasets/customers/rules",
        json={"rules": [{"check": "range", "column": "a", "exec": "import os"}]},
    )
    assert r.status_code == 400
    with pytest.raises(NotFound):
        client.dataset_rules(project, "never-made")


def test_an_unreadable_table_and_a_missing_column_break_the_rules_that_read_them(
    client: Client, project: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.csv").write_bytes(b"a,b\n1,2,3\n")
    (data / "other.csv").write_text("x\n1\n")
    client.set_dataset_rules(
        project,
        "t",
        [
            {"check": "range", "column": "age", "min": 0},  # other.csv has no age: not read
            {"check": "type", "column": "age", "type": "integer", "files": "data/other.csv"},
        ],
    )
    with pytest.raises(ValidationFailed) as caught:
        client.push_dataset(project, "t", data)
    failing = {(r.rule, r.file): r.message for r in caught.value.report.blocking}
    assert failing == {
        ("readable", "data/broken.csv"): failing[("readable", "data/broken.csv")],
        ("age-type", "data/other.csv"): "no column 'age'",
    }
    assert "not readable as csv" in failing[("readable", "data/broken.csv")]
