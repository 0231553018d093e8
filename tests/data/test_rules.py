"""Validation rules: declared in YAML or Python, stored with the dataset, checked where
the data is read; a blocking failure pushes nothing and names each rule, file and
sample rows; a warning is recorded with the version; the server takes no version
whose report was not made against the dataset's current rules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from plinth import Client
from plinth.data import client as data_client
from plinth.data.rules import Check, ValidationFailed
from plinth.errors import InvalidInput, NotFound
from tests.conftest import make_settings, raw_http

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


def test_a_repeated_header_breaks_the_rules_on_that_column_with_a_clear_message(
    client: Client, project: str, tmp_path: Path, uploads: list[str]
) -> None:
    """Which of two columns named alike a rule means cannot be told: the rule fails
    saying so (it crashed with a KeyError); rules on other columns still run."""
    client.set_dataset_rules(project, "customers", RULES)
    data = tmp_path / "data"
    data.mkdir()
    (data / "customers.csv").write_text("id,age,age,plan\n1,30,31,free\n2,40,41,pro\n3,5,6,pro\n")
    with pytest.raises(ValidationFailed) as caught:
        client.push_dataset(project, "customers", data)
    report = caught.value.report
    failing = {r.rule: r.message for r in report.blocking}
    assert failing == {"age-range": "2 columns are named 'age'; name them apart"}
    assert {r.rule for r in report.warnings} == {"age-nulls"}
    passed = {r.rule for r in report.results if r.passed}
    assert passed == {"plan-allowed", "id-unique", "id-type", "rows"}
    assert isinstance(caught.value, InvalidInput) and uploads == []
    assert client.get_dataset(project, "customers").versions == 0


@pytest.mark.parametrize(
    "values",
    [
        [{"free": 1}],  # a mapping
        [["free", "pro"]],  # a nested list
        {"free": 1},  # not a list
        [1, "free"],  # numbers and text: no column holds both
        [True, 1],
        [float("nan")],
        [10**400],  # past any number a column holds
        ["x" * 1001],
    ],
)
def test_allowed_values_of_a_wrong_type_are_refused_when_set(
    client: Client, project: str, values: Any
) -> None:
    client.set_dataset_rules(project, "customers", RULES)
    before = client.dataset_rules(project, "customers")
    rule = {"check": "allowed", "column": "plan", "values": values}
    with pytest.raises(InvalidInput, match=r"^not a rule set: rules\.0\.allowed"):
        client.set_dataset_rules(project, "customers", [rule])
    r = raw_http(client).put(
        f"/api/v1/projects/{project}/datasets/customers/rules",
        content=json.dumps({"rules": [rule]}),  # NaN as Python writes it
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "InvalidInput", r.text
    assert client.dataset_rules(project, "customers") == before


def test_allowed_values_of_another_kind_than_the_column_fail_the_rule_saying_so(
    client: Client, project: str, tmp_path: Path, uploads: list[str]
) -> None:
    """Numbers for a text column, text or true/false for a numeric one: the rule fails
    naming the column's type and the value (text for an integer column was taken as
    the file being unreadable; a number past int64 crashed with an OverflowError)."""
    data = _data(tmp_path, GOOD)
    cases = {
        "plan": ([1, 2], "plan is text (string): the allowed value 1 is a number, not text"),
        "id": (["1", "2"], "id is numeric (int64): the allowed value '1' is text, not a number"),
        "age": (
            [True],
            "age is numeric (int64): the allowed value True is true/false, not a number",
        ),
    }
    for column, (values, message) in cases.items():
        rules = [{"check": "allowed", "column": column, "values": values}]
        client.set_dataset_rules(project, "customers", rules)
        with pytest.raises(ValidationFailed) as caught:
            client.push_dataset(project, "customers", data)
        [result] = caught.value.report.blocking
        assert (result.rule, result.message) == (f"{column}-allowed", message)
    # numbers no value of an integer column can equal: allowed, and never matched
    client.set_dataset_rules(
        project, "customers", [{"check": "allowed", "column": "id", "values": [1.5, 2**63, 1, 2]}]
    )
    with pytest.raises(ValidationFailed) as caught:
        client.push_dataset(project, "customers", data)
    [result] = caught.value.report.blocking
    assert (result.failing, [s["id"] for s in result.samples]) == (2, [3, 4])
    client.set_dataset_rules(
        project, "customers", [{"check": "allowed", "column": "id", "values": [1.0, 2, 3, 4]}]
    )
    assert client.push_dataset(project, "customers", data).version == 1
    assert len(uploads) == 2  # the one push that passed: the table and the readme


def test_the_cli_says_why_rules_are_refused_in_lines_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from plinth import cli

    settings = make_settings(tmp_path / "home")
    for name in ("PLINTH_URL", "PLINTH_TOKEN", "PLINTH_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLINTH_HOME", str(settings.home))

    def plinth(*args: str) -> tuple[int, list[str]]:
        monkeypatch.setattr(sys, "argv", ["plinth", *args])
        try:
            cli.main()
        except SystemExit as ended:
            return int(ended.code or 0), capsys.readouterr().err.splitlines()
        return 0, capsys.readouterr().err.splitlines()

    (tmp_path / "bad.yaml").write_text("rules: [{check: allowed, column: a, values: [{x: 1}]}]")
    code, err = plinth("datasets", "rules", "set", "d", str(tmp_path / "bad.yaml"), "-p", "p")
    assert (code, err) == (
        1,
        [
            "error: not a rule set: rules.0.allowed.values.0: an allowed value is text, a "
            "number or true/false, not dict {'x': 1}"
        ],
    )
    (tmp_path / "ok.yaml").write_text("rules: [{check: range, column: a, min: 0}]")
    assert plinth("datasets", "rules", "set", "d", str(tmp_path / "ok.yaml"), "-p", "p")[0] == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.csv").write_text("a,a\n1,2\n")
    code, err = plinth("datasets", "push", "d", str(data), "-p", "p")
    assert code == 1 and not any("Traceback" in line for line in err), err
    assert err[-1] == "  a-range on data/t.csv: 2 columns are named 'a'; name them apart"


def test_a_csv_whose_types_change_past_its_first_block_is_read_whole_with_one_type(
    client: Client, project: str, tmp_path: Path
) -> None:
    """pyarrow infers a CSV's types from its first block (1 MiB): a text code after
    2 MB of numbers, or a fraction after integers, made the file "not readable" and
    blocked every push with rules. The later value widens its column's type, and the
    schema, the profile and every rule see the whole file as that one type."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [f"{i},{i % 100},{i % 7}" for i in range(200_000)]
    rows += ["200000,150.5,A7", "200001,3,B2"]  # past the first MB: a fraction, a text code
    big = data / "big.csv"
    big.write_text("id,score,code\n" + "\n".join(rows) + "\n")
    assert big.stat().st_size > 2_000_000
    client.set_dataset_rules(
        project,
        "late",
        [
            {"check": "unique", "column": "id"},
            {"check": "type", "column": "code", "type": "string"},
            {"check": "range", "column": "score", "min": 0, "max": 100, "severity": "warn"},
            {"check": "rows", "min": 200_002, "max": 200_002},
        ],
    )
    v = client.push_dataset(project, "late", data)
    assert v.validation is not None and v.rows == 200_002
    [warning] = v.validation.warnings
    assert (warning.rule, warning.failing) == ("score-range", 1)
    assert warning.samples == [{"_row": 200_000, "id": 200_000, "score": 150.5, "code": "A7"}]
    assert not v.validation.blocking
    [table] = [f.table for f in client.dataset_files(project, "late@1")]
    assert table is not None
    assert [(c.name, c.type) for c in table.columns] == [
        ("id", "int64"),
        ("score", "double"),
        ("code", "string"),
    ]
    profile = client.dataset_profiles(project, "late@1")["data/big.csv"]
    columns = {c.name: c for c in profile.columns}
    assert columns["score"].max == 150.5 and columns["score"].count == 200_002
    assert columns["code"].kind == "categorical" and columns["code"].distinct == 9
