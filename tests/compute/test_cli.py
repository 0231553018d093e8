"""``plinth jobs``, ``plinth nodes`` and ``plinth pools`` over an embedded home: each
command opens the home (its dispatcher with it) and closes it, as a user's shell does."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from plinth.cli import app
from tests.compute.conftest import PY
from tests.conftest import make_settings

POOLS = [{"name": "local", "nodes": [{"name": "n1", "cpus": 4, "memory": "8Gi", "gpus": 2}]}]


def _env(home: Path) -> dict[str, str]:
    make_settings(home)  # the home, from the migrated template
    return {
        "PLINTH_HOME": str(home),
        "PLINTH_URL": "",
        "PLINTH_TOKEN": "",
        "PLINTH_COMPUTE__POOLS": json.dumps(POOLS),
        "COLUMNS": "200",
    }


def test_submit_wait_show_list_logs(tmp_path: Path) -> None:
    runner, env = CliRunner(), _env(tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    (work / "job.py").write_text("print('from the job'); raise SystemExit(4)\n")
    args = ["jobs", "submit", "-p", "cli", "--gpus", "1", "--memory", "1Gi", "--timeout", "2m"]
    out = runner.invoke(app, [*args, "--workdir", str(work), "--", PY, "job.py"], env=env)
    assert out.exit_code == 0, out.output
    job_id = out.output.strip()
    assert len(job_id) == 32
    waited = runner.invoke(app, ["jobs", "wait", job_id, "-p", "cli", "--timeout", "30"], env=env)
    assert waited.exit_code == 4 and "failed" in waited.output
    shown = runner.invoke(app, ["jobs", "show", job_id, "-p", "cli", "--json"], env=env)
    job = json.loads(shown.output)
    assert (job["status"], job["exit_code"], job["gpus"], job["timeout_seconds"]) == (
        "failed",
        4,
        1,
        120.0,
    )
    listed = runner.invoke(app, ["jobs", "list", "-p", "cli", "--json"], env=env)
    assert [j["id"] for j in json.loads(listed.output)] == [job_id]
    logs = runner.invoke(app, ["jobs", "logs", job_id, "-p", "cli"], env=env)
    assert logs.output == "from the job\n"
    followed = runner.invoke(app, ["jobs", "logs", "-f", job_id, "-p", "cli"], env=env)
    assert followed.output == "from the job\n"


def test_submit_json_cancel_nodes_pools(tmp_path: Path) -> None:
    runner, env = CliRunner(), _env(tmp_path / "home")
    sleep = [PY, "-c", "import time; time.sleep(60)"]
    args = ["jobs", "submit", "-p", "cli", "--no-workdir", "--json", "--env", "A=1", "--"]
    out = runner.invoke(app, [*args, *sleep], env=env)
    assert out.exit_code == 0, out.output
    job = json.loads(out.output)
    assert job["argv"] == sleep and job["env"] == {"A": "1"}
    cancelled = runner.invoke(app, ["jobs", "cancel", job["id"], "-p", "cli", "--json"], env=env)
    assert json.loads(cancelled.output)["status"] in ("cancelled", "running")
    waited = runner.invoke(app, ["jobs", "wait", job["id"], "-p", "cli"], env=env)
    assert "cancelled" in waited.output
    nodes = runner.invoke(app, ["nodes", "--json"], env=env)
    [node] = json.loads(nodes.output)
    assert (node["name"], node["gpus"], node["cpus_used"]) == ("n1", 2, 0)
    pools = runner.invoke(app, ["pools"], env=env)
    assert pools.exit_code == 0 and "local" in pools.output
    refused = runner.invoke(app, ["jobs", "submit", "-p", "cli", "--no-workdir"], env=env)
    assert refused.exit_code != 0
