"""The one model version a server holds: its name, version, flavor, signature and
predictor, and how it is loaded from a directory of files plus ``MLmodel.json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from plinth.errors import InvalidInput, PermissionDenied

if TYPE_CHECKING:
    from plinth.registry.flavors import ModelMeta


class Predictor(Protocol):
    def predict(self, inputs: Any) -> Any: ...


@dataclass
class ServedModel:
    """A loaded version. ``signature`` is a ``plinth.registry.signature.Signature``
    (anything with ``inputs``, ``outputs`` and ``coerce``), or None when the model was
    saved without an input example."""

    name: str
    version: str
    flavor: str
    predictor: Predictor
    signature: Any = None

    @property
    def label(self) -> str:
        """What every answer's ``X-Plinth-Model-Version`` header says."""
        return f"{self.name}/{self.version}"

    def coerce(self, payload: Any) -> Any:
        """The request's instances as the model takes them; InvalidInput names the
        offending field."""
        if self.signature is not None:
            return self.signature.coerce(payload)
        return _unsigned(payload)


def _unsigned(payload: Any) -> Any:
    """Without a signature: columns or records become a DataFrame, rows an array."""
    if isinstance(payload, dict) or (payload and isinstance(payload[0], dict)):
        import pandas as pd

        return pd.DataFrame(payload)
    try:
        return np.asarray(payload)
    except ValueError as exc:
        raise InvalidInput(f"instances: rows of unequal length ({exc})") from None


def refuse_pickle(meta: ModelMeta, allowed: bool, how_to_allow: str) -> None:
    """Stop before loading a model whose files need pickle, unless allowed."""
    if meta.unsafe_pickle and not allowed:
        raise PermissionDenied(
            f"this model ({meta.flavor}) needs pickle to load (unsafe_pickle in MLmodel.json): "
            f"loading it runs any code its files hold. {how_to_allow}"
        )


def load(
    directory: Path,
    *,
    name: str,
    version: str,
    allow_pickle: bool = False,
    timeout: float | None = None,
    digest: str | None = None,
    device: str | None = None,
) -> ServedModel:
    """Load the version held in ``directory`` (its files and MLmodel.json); with
    ``digest``, only if the files are still the registered version's. ``device``: where
    a model that can choose runs (pytorch: auto, cpu, cuda, cuda:N)."""
    from plinth.registry.flavors import load_model, read_meta

    if digest is not None:
        from plinth.registry.manifest import check_directory

        check_directory(directory, digest, f"version {version} of {name!r}")

    meta = read_meta(directory)
    predictor = load_model(directory, allow_pickle=allow_pickle, timeout=timeout, device=device)
    return ServedModel(name, version, meta.flavor, predictor, meta.signature)
