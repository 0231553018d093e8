"""The README's Python runs as pasted: a newcomer's first contact must not fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _run_blocks(page: Path, tmp_path: Path) -> str:
    """Run every Python block of ``page`` in order, in one home; their output."""
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks, f"{page.name} shows no Python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")}
    env["PLINTH_HOME"] = str(tmp_path / "home")
    output = ""
    for code in blocks:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{code}\n{done.stderr[-3000:]}"
        output += done.stdout
    return output


def test_readme_python_runs_as_pasted(tmp_path: Path) -> None:
    output = _run_blocks(README, tmp_path)
    assert "lr-0.1" in output
    assert (tmp_path / "out" / "model.txt").read_text() == "weights"
    assert "models:/iris/iris/1" in output


def test_the_models_guide_runs_as_pasted(tmp_path: Path) -> None:
    _run_blocks(ROOT / "docs" / "models.md", tmp_path)


def test_the_datasets_guide_runs_as_pasted(tmp_path: Path) -> None:
    output = _run_blocks(ROOT / "docs" / "datasets.md", tmp_path)
    assert "customers@1 2 2" in output
    assert "[('data/train.csv', 'changed', ['plan'])]" in output
    assert output.rstrip().endswith("id,age,churned")


def test_the_pipelines_guide_runs_as_pasted(tmp_path: Path) -> None:
    output = _run_blocks(ROOT / "docs" / "pipelines.md", tmp_path)
    assert "succeeded ['succeeded', 'succeeded']" in output
    assert "['cached', 'succeeded']" in output
