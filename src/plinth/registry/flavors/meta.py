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
MLFLOW_META_FILE = "MLmodel"  # an MLflow model directory's description, in YAML
MAX_META_BYTES = 1 << 20  # a signature of thousands of columns fits many times over
MLFLOW_SKOPS = "model.skops"  # MLflow's sklearn flavor, serialization_format="skops"
# Any other MLflow model: kept and downloaded, never loaded by Plinth (no loader).
MLFLOW_FLAVOR = "mlflow"


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
    """Parse ``directory/MLmodel.json`` (or an MLflow model's ``MLmodel``); junk is
    refused as ``InvalidInput``."""
    path = Path(directory) / META_FILE
    mlflow = Path(directory) / MLFLOW_META_FILE
    if not path.is_file() and mlflow.is_file() and mlflow.stat().st_size <= MAX_META_BYTES:
        return meta_from_mlflow(mlflow.read_bytes())
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


def meta_from_mlflow(raw: bytes) -> ModelMeta:
    """What an MLflow model directory's ``MLmodel`` (YAML, read as data: no tags that
    build objects) says, as Plinth's description of the same files.

    A scikit-learn model MLflow saved with ``serialization_format="skops"`` is Plinth's
    ``sklearn`` flavor (the same ``model.skops``; MLflow's ``skops_trusted_types`` are the
    types it may build, each checked again at load). Any other MLflow model loads through
    MLflow's own code and pickle: it is flavor ``mlflow``, marked as needing pickle, so
    it is kept and downloaded, but no Plinth server loads it (there is no loader).
    """
    import yaml

    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{MLFLOW_META_FILE} is not YAML: {str(exc)[:200]}") from None
    flavors = doc.get("flavors") if isinstance(doc, dict) else None
    if not isinstance(flavors, dict) or not flavors:
        raise InvalidInput(f"{MLFLOW_META_FILE} names no flavors: is it an MLflow model?")
    sklearn = flavors.get("sklearn")
    if (
        isinstance(sklearn, dict)
        and sklearn.get("serialization_format") == "skops"
        and sklearn.get("pickled_model") == MLFLOW_SKOPS
    ):
        trusted = sklearn.get("skops_trusted_types") or []
        if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
            raise InvalidInput(f"{MLFLOW_META_FILE}: skops_trusted_types is not a list of names")
        return ModelMeta(
            flavor="sklearn", files=[MLFLOW_SKOPS], flavor_options={"trusted_types": trusted}
        )
    return ModelMeta(flavor=MLFLOW_FLAVOR, unsafe_pickle=True, files=[])


def write_meta(directory: Path, meta: ModelMeta) -> None:
    path = Path(directory) / META_FILE
    partial = path.with_name(f".{META_FILE}.partial")
    partial.write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
    os.replace(partial, path)
