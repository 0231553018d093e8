"""The README's Python runs as pasted: a newcomer's first contact must not fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_runs_as_pasted(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README shows no Python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")}
    env["PLINTH_HOME"] = str(tmp_path / "home")
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
    assert "lr-0.1" in done.stdout
    assert (tmp_path / "out" / "model.txt").read_text() == "weights"
