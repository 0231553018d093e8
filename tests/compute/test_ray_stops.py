"""Stop requests of the Ray executor's workers: a small file on the worker's node, in a
private directory of the user (``_ray_launcher.ask_stop``). No Ray needed here: the
Ray tests (``test_ray_executor.py``, the contract suite) stop real workers with them."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from plinth.compute.executors import _ray_launcher as launcher


@pytest.fixture
def tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / f"plinth-ray-{os.getuid()}"


def test_a_stop_is_read_by_its_worker_only_and_the_earliest_deadline_wins(tmp: Path) -> None:
    path = launcher._stop_path("plinth-job1-1-0")
    assert Path(path).parent == tmp and "job1" not in Path(path).name  # hashed, not a path
    assert launcher._stop_asked(path, "token") is None
    began = time.time()
    launcher.ask_stop("plinth-job1-1-0", "token", 30)
    deadline, no_grace = launcher._stop_asked(path, "token") or (0.0, True)
    assert began + 29 < deadline < time.time() + 31 and not no_grace
    assert launcher._stop_asked(path, "another worker's token") is None
    launcher.ask_stop("plinth-job1-1-0", "token", 60)  # later: changes nothing
    assert launcher._stop_asked(path, "token") == (deadline, False)
    launcher.ask_stop("plinth-job1-1-0", "token", 0)  # earlier: wins
    now_deadline, no_grace = launcher._stop_asked(path, "token") or (0.0, False)
    assert now_deadline <= time.time() and no_grace
    assert (tmp.stat().st_mode & 0o777, Path(path).stat().st_mode & 0o777) == (0o700, 0o600)


def test_a_directory_somebody_else_could_enter_is_never_used(tmp: Path) -> None:
    tmp.mkdir(mode=0o777)
    tmp.chmod(0o777)  # as a squatter under a shared /tmp would leave it
    path = launcher._stop_path("plinth-job2-1-0")
    Path(path).write_text('{"token": "token", "deadline": 0, "no_grace": true}')
    assert launcher._stop_asked(path, "token") is None  # a planted stop is not obeyed
    with pytest.raises(RuntimeError, match="not a private directory"):
        launcher.ask_stop("plinth-job2-1-0", "token", 5)
