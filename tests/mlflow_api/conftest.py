"""The real MLflow client, in a virtualenv of its own (it pins many packages), made on
first use under ``.venv/peers`` and reused after; made once even with parallel workers."""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# MLflow's client, what its SQLite store needs (for the stores imports are tested on), and
# what mlflow.sklearn.log_model(serialization_format="skops") needs
MLFLOW = (
    "mlflow-skinny==3.17.2",
    "sqlalchemy>=2,<3",
    "alembic",
    "scikit-learn",
    "skops",
    "pandas",
)
REPO = Path(__file__).resolve().parents[2]


def mlflow_venv() -> Path:
    """The python of a virtualenv holding ``MLFLOW``."""
    wanted = hashlib.sha256(" ".join(MLFLOW).encode()).hexdigest()[:8]
    venv = REPO / ".venv" / "peers" / f"{MLFLOW[0].replace('==', '-')}-{wanted}"
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = venv / ".ready"
        if not ready.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            done = subprocess.run([*pip, *MLFLOW], capture_output=True, text=True)
            if done.returncode != 0:  # no skip: a missing client is an error
                raise RuntimeError(f"installing {MLFLOW} failed:\n{done.stderr[-3000:]}")
            ready.touch()
    return python


@pytest.fixture(scope="session")
def mlflow_python() -> Iterator[Path]:
    yield mlflow_venv()
