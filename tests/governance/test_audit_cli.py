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


def test_tables_show_what_others_wrote_as_text(tmp_path: Path) -> None:
    """A token's name (any user's) in the admin's tables, and an audit event's: text,
    not Rich markup (``[/]`` made ``tokens list`` fail) nor a terminal's escape."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    named = "[/]x\x1b]0;title\x1b\\"
    settings = make_settings(home)
    with Client(settings=settings) as anonymous:
        root = anonymous.init_admin("root").token.token
    with Client(settings=settings.model_copy(update={"token": root})) as client:
        made = client.create_token(named)
    env = {**os.environ, "PLINTH_HOME": str(home), "PLINTH_TOKEN": root, "COLUMNS": "300"}
    env.pop("PLINTH_URL", None)
    for args in (("tokens", "list"), ("tokens", "revoke", made.info.id), ("audit", "list")):
        out = subprocess.run(
            [sys.executable, "-m", "plinth", *args], env=env, text=True, capture_output=True
        )
        assert out.returncode == 0, out.stderr
        assert "\x1b]" not in out.stdout
        if args[1] != "list" or args[0] == "tokens":
            assert "[/]x^[]0;title^[\\" in out.stdout, out.stdout
