"""``MLmodel.json``: what a saved model directory says about itself, read and written here."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ValidationError, field_validator

from plinth.errors import InvalidInput
from plinth.registry.signature import Signature

META_FILE = "MLmodel.json"
MAX_META_BYTES = 1 << 20  # a signature of thousands of columns fits many times over


class ModelMeta(BaseModel):
    flavor: str
    signature: Signature | None = None
    unsafe_pickle: bool = False  # loading needs pickle
    files: list[str]
    flavor_options: dict[str, Any] = {}
    plinth_version: str = ""

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: list[str]) -> list[str]:
        for name in files:
            path = PurePosixPath(name)
            if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
                raise ValueError(f"'{name}' is not a relative path inside the model directory")
        return files


def read_meta(directory: Path) -> ModelMeta:
    """Parse ``directory/MLmodel.json``; junk is refused as ``InvalidInput``."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise InvalidInput(f"{directory} holds no {META_FILE}: is it a saved model?")
    if path.stat().st_size > MAX_META_BYTES:
        raise InvalidInput(f"{META_FILE} is over {MAX_META_BYTES} bytes")
    try:
        return ModelMeta.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'document'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise InvalidInput(f"{META_FILE} is not valid: {problems}") from None


def write_meta(directory: Path, meta: ModelMeta) -> None:
    path = Path(directory) / META_FILE
    partial = path.with_name(f".{META_FILE}.partial")
    partial.write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
    os.replace(partial, path)
