"""The ``plinth`` command, run as a user would: a subprocess with PLINTH_HOME set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import plinth
from plinth.settings import Settings


def plinth_cmd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLINTH_HOME": str(home), "COLUMNS": "200"}
    env.pop("PLINTH_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "plinth", *args], env=env, text=True, capture_output=True, timeout=60
    )


@pytest.fixture
def home_with_runs(tmp_path: Path) -> tuple[Path, list[str]]:
    home = tmp_path / "home"
    ids = []
    with plinth.Client(settings=Settings(home=home, url=None, token=None)) as client:
        for lr in (0.01, 0.1):
            with plinth.start_run(
                "churn", name=f"lr-{lr}", params={"lr": lr}, client=client
            ) as run:
                run.log({"acc": 0.5 + lr}, step=0)
                model = tmp_path / "model.txt"
                model.write_text(f"model {lr}")
                run.log_artifact(str(model))
            ids.append(run.id)
    return home, ids


def test_runs_list_json_filters_and_orders(home_with_runs: tuple[Path, list[str]]) -> None:
    home, ids = home_with_runs
    out = plinth_cmd(
        home,
        "runs",
        "list",
        "--project",
        "churn",
        "--filter",
        "metrics.acc > 0.5",
        "--order-by",
        "metrics.acc desc",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)
    assert [r["id"] for r in runs] == [ids[1], ids[0]]
    assert runs[0]["params"] == {"lr": 0.1}


def test_runs_list_renders_a_table(home_with_runs: tuple[Path, list[str]]) -> None:
    home, _ = home_with_runs
    out = plinth_cmd(home, "runs", "list", "--project", "churn")
    assert out.returncode == 0, out.stderr
    assert "lr-0.01" in out.stdout and "acc" in out.stdout


def test_runs_show_and_artifacts(home_with_runs: tuple[Path, list[str]], tmp_path: Path) -> None:
    home, ids = home_with_runs
    shown = json.loads(plinth_cmd(home, "runs", "show", ids[0][:10], "--json").stdout)
    assert shown["id"] == ids[0]  # found by the prefix the tables show
    assert shown["status"] == "finished"
    assert [a["path"] for a in shown["artifacts"]] == ["model.txt"]
    out = plinth_cmd(home, "artifacts", "download", ids[0], "model.txt", str(tmp_path / "dl"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dl" / "model.txt").read_text() == "model 0.01"
    listed = json.loads(plinth_cmd(home, "artifacts", "list", ids[0], "--json").stdout)
    assert listed[0]["size"] == len("model 0.01")
    projects = json.loads(plinth_cmd(home, "projects", "list", "--json").stdout)
    assert [p["name"] for p in projects] == ["churn"]


def test_errors_print_one_line_not_a_traceback(home_with_runs: tuple[Path, list[str]]) -> None:
    home, _ = home_with_runs
    out = plinth_cmd(home, "runs", "list", "--project", "churn", "--filter", "x; DROP TABLE runs")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: filter:")
    out = plinth_cmd(home, "runs", "show", "nope")
    assert out.returncode == 1 and "no run 'nope'" in out.stderr
    out = plinth_cmd(home, "runs", "list")
    assert out.returncode == 2 and "--project" in out.stderr


def test_help_lists_commands(tmp_path: Path) -> None:
    out = plinth_cmd(tmp_path, "--help")
    assert out.returncode == 0
    for command in ("server", "demo", "runs", "artifacts"):
        assert command in out.stdout
