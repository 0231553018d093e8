"""``python -m plinth.compute.fetch``, as a Kubernetes pod's init container runs it:
a job's snapshot fetched from a real ``plinth server`` with a token, checked against
its digest and unpacked; what it may not read, or cannot reach, fails with why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from plinth.client import Client
from plinth.compute.fetch import FetchError, fetch, main
from plinth.governance.identity import init_admin
from tests.conftest import make_settings
from tests.processes import Processes


def test_a_jobs_snapshot_is_fetched_and_unpacked_as_its_pod_would(
    processes: Processes, tmp_path: Path
) -> None:
    token = init_admin(make_settings(tmp_path / "home"), "root").token.token
    server = processes.server(tmp_path / "home")
    work = tmp_path / "work"
    (work / "pkg").mkdir(parents=True)
    (work / "train.py").write_text("print('train')\n")
    (work / "pkg" / "data.csv").write_text("a,b\n1,2\n")
    settings = make_settings(tmp_path / "sdk").model_copy(update={"url": server.url})
    with Client(settings=settings.model_copy(update={"token": token})) as root:
        job = root.submit_job("lab", [sys.executable, "-c", "pass"], workdir=work)
        outsider = root.create_user("outsider").token.token
    assert job.snapshot is not None
    snapshot = f"lab/{job.snapshot.digest}"

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")},
        "PLINTH_URL": server.url,
        "PLINTH_TOKEN": token,
        "PLINTH_SNAPSHOT": snapshot,
    }
    dest = tmp_path / "workspace"
    done = subprocess.run(
        [sys.executable, "-m", "plinth.compute.fetch", str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "2 files" in done.stderr
    assert (dest / "train.py").read_text() == "print('train')\n"
    assert (dest / "pkg" / "data.csv").read_text() == "a,b\n1,2\n"

    # Only a snapshot a job of the project runs in, and only for whom may read it.
    for who, what in ((outsider, snapshot), (token, "lab/" + "0" * 64)):
        with pytest.raises(FetchError, match="answered 404"):
            fetch(server.url, who, what, tmp_path / "nothing", tries=1)
    assert not (tmp_path / "nothing").exists() or not any((tmp_path / "nothing").iterdir())
    with pytest.raises(FetchError, match="PROJECT/DIGEST"):
        fetch(server.url, token, "no-digest", tmp_path / "nothing", tries=1)


def test_without_a_server_to_reach_it_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("PLINTH_URL", raising=False)
    assert main([str(tmp_path / "w")]) == 1
    assert "PLINTH_URL is not set" in capsys.readouterr().err
    monkeypatch.setenv("PLINTH_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("PLINTH_SNAPSHOT", "lab/" + "ab" * 32)
    with pytest.raises(FetchError, match="cannot reach"):
        fetch("http://127.0.0.1:9", None, "lab/" + "ab" * 32, tmp_path / "w", tries=1)
