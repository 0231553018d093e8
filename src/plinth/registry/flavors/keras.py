"""Keras 3 ``.keras`` files (flavor "keras") and TensorFlow SavedModels ("tensorflow").

Keras files are loaded with ``safe_mode=True``, which refuses the one way they can
carry code (a ``Lambda`` layer's bytecode, or a ``TFSMLayer`` loading a SavedModel
from any path). A SavedModel is a graph with no Python in it, but its ops may read and
write files: its graph is checked before it loads (``tf_graph.py``). It is called
through its serving signature, which also names its inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from plinth.errors import InvalidInput, require
from plinth.registry.flavors.base import Predictor, imported, model_file, no_options
from plinth.registry.flavors.tf_graph import check_saved_model
from plinth.registry.signature import Signature, TensorSpec

KERAS_FILE = "model.keras"
SAVED_MODEL = "saved_model"
SERVING = "serving_default"


class KerasFlavor:
    name = "keras"
    needs_pickle = False

    def handles(self, model: Any) -> bool:
        keras = imported("keras")
        return keras is not None and isinstance(model, keras.Model)

    def save(self, model: Any, directory: Path, **options: Any) -> tuple[list[str], dict[str, Any]]:
        no_options(self.name, options)
        keras = require("keras", "tensorflow")
        model.save(directory / KERAS_FILE)
        backend = keras.backend.backend()
        return [KERAS_FILE], {
            "format": "keras",
            "keras_version": keras.__version__,
            "backend": backend,
        }

    def load(self, directory: Path, options: dict[str, Any]) -> Predictor:
        keras = require("keras", "tensorflow")
        path = model_file(directory, KERAS_FILE)
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        return KerasPredictor(model, keras)

    def signature(self, directory: Path, options: dict[str, Any]) -> Signature | None:
        return None


class KerasPredictor:
    def __init__(self, model: Any, keras: Any) -> None:
        self.model = model
        self.keras = keras

    def predict(self, inputs: Any) -> Any:
        if type(inputs).__name__ == "DataFrame":
            inputs = inputs.to_numpy()
        # Called directly rather than through model.predict(): no per-call dataset and
        # callback machinery, which costs milliseconds on a one-row request.
        output = self.model(inputs, training=False)
        return self.keras.tree.map_structure(self.keras.ops.convert_to_numpy, output)


class TensorFlowFlavor:
    name = "tensorflow"
    needs_pickle = False

    def handles(self, model: Any) -> bool:
        tf = imported("tensorflow")
        keras = imported("keras")
        if keras is not None and isinstance(model, keras.Model):
            return False
        return tf is not None and isinstance(model, tf.Module)

    def save(
        self, model: Any, directory: Path, *, signatures: Any = None
    ) -> tuple[list[str], dict[str, Any]]:
        tf = require("tensorflow", "tensorflow")
        root = directory / SAVED_MODEL
        tf.saved_model.save(model, str(root), signatures=signatures)
        files = sorted(p.relative_to(directory).as_posix() for p in root.rglob("*") if p.is_file())
        return files, {
            "format": "saved_model",
            "signature_key": SERVING,
            "tensorflow_version": tf.__version__,
        }

    def load(self, directory: Path, options: dict[str, Any]) -> Predictor:
        tf = require("tensorflow", "tensorflow")
        model_file(directory, f"{SAVED_MODEL}/saved_model.pb")
        check_saved_model(directory / SAVED_MODEL)  # before TensorFlow runs any of it
        loaded = tf.saved_model.load(str(directory / SAVED_MODEL))
        key = str(options.get("signature_key", SERVING))
        if key not in loaded.signatures:
            found = ", ".join(loaded.signatures.keys()) or "none"
            raise InvalidInput(
                f"the SavedModel has no '{key}' signature (it has {found}): save a tf.Module "
                "with one @tf.function(input_signature=...) or pass signatures="
            )
        return SavedModelPredictor(loaded, loaded.signatures[key], tf)

    def signature(self, directory: Path, options: dict[str, Any]) -> Signature | None:
        predictor = self.load(directory, options)
        assert isinstance(predictor, SavedModelPredictor)
        inputs = [_spec(name, spec) for name, spec in predictor.input_specs.items()]
        outputs = [
            _spec(name, spec) for name, spec in predictor.function.structured_outputs.items()
        ]
        return Signature(inputs=inputs, outputs=outputs)


def _spec(name: str, spec: Any) -> TensorSpec:
    dims = spec.shape.as_list() if spec.shape.rank is not None else [None]
    dtype = "str" if spec.dtype.name == "string" else spec.dtype.name
    return TensorSpec(name=name, dtype=dtype, shape=[-1 if d is None else d for d in dims])


class SavedModelPredictor:
    def __init__(self, loaded: Any, function: Any, tf: Any) -> None:
        self.loaded = loaded  # the function's variables live as long as this does
        self.function = function
        self.tf = tf
        self.input_specs: dict[str, Any] = dict(function.structured_input_signature[1])

    def predict(self, inputs: Any) -> Any:
        if type(inputs).__name__ == "DataFrame":
            names = list(self.input_specs)
            if len(names) > 1 and set(names) <= set(inputs.columns):
                inputs = {name: inputs[name].to_numpy() for name in names}
            else:
                inputs = inputs.to_numpy()
        if not isinstance(inputs, dict):
            if len(self.input_specs) != 1:
                raise InvalidInput(f"the SavedModel takes the inputs {', '.join(self.input_specs)}")
            inputs = {next(iter(self.input_specs)): inputs}
        feeds = {
            name: self.tf.constant(np.asarray(inputs[name]), dtype=spec.dtype)
            for name, spec in self.input_specs.items()
        }
        outputs = {name: value.numpy() for name, value in self.function(**feeds).items()}
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs
