"""Model files as a flavor writes them (MLmodel.json beside the model's own file), for
tests of the registry's bookkeeping, which never loads a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIGNATURE = {
    "inputs": [{"name": "x", "dtype": "float64", "shape": [-1]}],
    "outputs": [{"name": "y", "dtype": "int64", "shape": [-1]}],
}


def model_files(
    where: Path, content: bytes = b"weights", flavor: str = "sklearn", **meta: Any
) -> Path:
    """A directory holding ``model.bin`` and its MLmodel.json."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "model.bin").write_bytes(content)
    described = {"flavor": flavor, "signature": SIGNATURE, "files": ["model.bin"]} | meta
    (where / "MLmodel.json").write_text(json.dumps(described))
    return where
