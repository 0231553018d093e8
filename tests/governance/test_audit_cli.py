from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from plinth.client import Client
from tests.conftest import make_settings
from tests.test_cli import plinth_cmd


def test_audit_cli_lists_exports_and_catches_tampering(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Client(settings=make_settings(home)) as client:
        run = client.create_run("churn")
        client.end_run(run.id)
    listed = json.loads(plinth_cmd(home, "audit", "list", "--json").stdout)
    assert [e["action"] for e in listed] == ["projects.create", "runs.create", "runs.end"]
    exported = plinth_cmd(home, "audit", "export", "--action", "runs.end").stdout.splitlines()
    assert [json.loads(line)["object"] for line in exported] == [run.id]
    good = plinth_cmd(home, "audit", "verify")
    assert good.returncode == 0 and "intact: 3 events" in good.stdout

    with sqlite3.connect(home / "plinth.db") as db:
        db.execute("UPDATE audit_events SET details = '{}' WHERE action = 'runs.end'")
    bad = plinth_cmd(home, "audit", "verify")
    assert bad.returncode == 1
    assert f"broken at event {listed[2]['id']}: was edited" in bad.stderr
    out = plinth_cmd(home, "audit", "list", "--since", "yesterday")
    assert out.returncode == 1 and "not a time" in out.stderr
