"""Any Python object with ``predict`` or ``__call__``, pickled: the one flavor that needs pickle.

Loading a pickle runs whatever code its author chose, so ``load_model`` refuses this
flavor unless the caller passes ``allow_pickle=True`` (which serving does only for a
version a project admin marked ``unsafe_pickle``, and only in an isolated worker). The
check happens before the file is opened.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

from plinth.errors import InvalidInput
from plinth.registry.flavors.base import Predictor, model_file, no_options
from plinth.registry.signature import Signature

FILE = "model.pkl"


class PythonFlavor:
    name = "python"
    needs_pickle = True

    def handles(self, model: Any) -> bool:
        return callable(getattr(model, "predict", None)) or callable(model)

    def save(self, model: Any, directory: Path, **options: Any) -> tuple[list[str], dict[str, Any]]:
        no_options(self.name, options)
        try:
            data = pickle.dumps(model, protocol=5)
        except Exception as exc:
            raise InvalidInput(f"the python flavor cannot pickle this model: {exc}") from exc
        (directory / FILE).write_bytes(data)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return [FILE], {"python_version": version, "pickle_protocol": 5}

    def load(self, directory: Path, options: dict[str, Any]) -> Predictor:
        path = model_file(directory, FILE)
        with path.open("rb") as file:
            model = pickle.load(file)  # allowed by load_model's allow_pickle, checked before
        return PythonPredictor(model)

    def signature(self, directory: Path, options: dict[str, Any]) -> Signature | None:
        return None


class PythonPredictor:
    def __init__(self, model: Any) -> None:
        self.model = model
        method = getattr(model, "predict", None)
        if not callable(method):
            method = model
        if not callable(method):
            raise InvalidInput(f"the loaded {type(model).__name__} has no predict or __call__")
        self._predict = method

    def predict(self, inputs: Any) -> Any:
        return self._predict(inputs)
