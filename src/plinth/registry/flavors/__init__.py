"""Model flavors: how each kind of model is written to files and loaded back, safely.

One small module per flavor behind one interface (``base.Flavor``): ``sklearn`` (skops,
types checked against an allow-list), ``onnx`` (onnxruntime), ``pytorch`` (safetensors
plus an importable class), ``keras`` (Keras 3 files and TensorFlow SavedModels) and
``python`` (pickle: refused unless the caller allows it). Flavors are found by name in a
lazy table, so importing this package imports none of their libraries.

    meta = save_model(model, directory, input_example=X[:5])   # files + MLmodel.json
    model = load_model(directory, timeout=30)                    # a Predictor
    model.predict(meta.signature.coerce(request["instances"]))
"""

from __future__ import annotations

import importlib
import shutil
import threading
from pathlib import Path
from typing import Any

from plinth.errors import Conflict, InvalidInput, PermissionDenied, PlinthError, ServiceUnavailable
from plinth.registry.flavors.base import Flavor, Placed, Predictor
from plinth.registry.flavors.meta import META_FILE, ModelMeta, read_meta, write_meta
from plinth.registry.signature import Signature

__all__ = [
    "FLAVORS",
    "Flavor",
    "ModelMeta",
    "Predictor",
    "flavor_of",
    "get_flavor",
    "load_model",
    "read_meta",
    "save_model",
]

# Tried in this order by flavor_of: the catch-all "python" comes last.
_FLAVORS = {
    "onnx": "plinth.registry.flavors.onnx:OnnxFlavor",
    "sklearn": "plinth.registry.flavors.sklearn:SklearnFlavor",
    "pytorch": "plinth.registry.flavors.pytorch:PyTorchFlavor",
    "keras": "plinth.registry.flavors.keras:KerasFlavor",
    "tensorflow": "plinth.registry.flavors.keras:TensorFlowFlavor",
    "python": "plinth.registry.flavors.python:PythonFlavor",
}
FLAVORS = tuple(_FLAVORS)  # the flavors a server can load


def get_flavor(name: str) -> Flavor:
    if name not in _FLAVORS:
        raise InvalidInput(f"unknown flavor '{name}': one of {', '.join(_FLAVORS)}")
    module, _, attribute = _FLAVORS[name].partition(":")
    flavor: Flavor = getattr(importlib.import_module(module), attribute)()
    return flavor


def flavor_of(model: Any) -> Flavor:
    """The first flavor that handles ``model``."""
    for name in _FLAVORS:
        flavor = get_flavor(name)
        if flavor.handles(model):
            return flavor
    raise InvalidInput(f"no flavor saves a {type(model).__name__}: it has no predict or __call__")


def save_model(
    model: Any,
    directory: Path,
    *,
    input_example: Any = None,
    flavor: str | None = None,
    **options: Any,
) -> ModelMeta:
    """Write ``model``'s files and ``MLmodel.json`` into ``directory``.

    With an ``input_example`` the signature is inferred from it, and the saved files are
    loaded back and asked to predict it: a model that cannot answer its own example is
    refused now rather than at serving time, and the answer gives the outputs' signature.
    """
    directory = Path(directory)
    if (directory / META_FILE).exists():
        raise Conflict(f"{directory} already holds a saved model")
    chosen = get_flavor(flavor) if flavor else flavor_of(model)
    if not chosen.handles(model):
        raise InvalidInput(f"the {chosen.name} flavor cannot save a {type(model).__name__}")
    directory.mkdir(parents=True, exist_ok=True)
    before = set(directory.iterdir())
    try:
        files, flavor_options = chosen.save(model, directory, **options)
        if input_example is not None:
            signature: Signature | None = _signature_from_example(
                chosen, model, directory, flavor_options, input_example
            )
        else:
            signature = chosen.signature(directory, flavor_options)
    except BaseException:
        _remove_new(directory, before)  # no half-saved model is left to be mistaken for one
        raise
    meta = ModelMeta(
        flavor=chosen.name,
        signature=signature,
        unsafe_pickle=chosen.needs_pickle,
        files=sorted(files),
        flavor_options=flavor_options,
        plinth_version=_plinth_version(),
    )
    write_meta(directory, meta)
    return meta


def _remove_new(directory: Path, before: set[Path]) -> None:
    for path in set(directory.iterdir()) - before:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _signature_from_example(
    flavor: Flavor, model: Any, directory: Path, options: dict[str, Any], example: Any
) -> Signature:
    signature = Signature.infer(example)
    inputs = signature.coerce(example)
    if flavor.needs_pickle:
        # The caller's own object, in memory: never unpickle just to check it.
        from plinth.registry.flavors.python import PythonPredictor

        predictor: Predictor = PythonPredictor(model)
    else:
        predictor = flavor.load(directory, options)
    try:
        output = predictor.predict(inputs)
    except Exception as exc:
        raise InvalidInput(
            f"the saved {flavor.name} model could not predict its input_example: {exc}"
        ) from exc
    return Signature.infer(example, output=output)


def load_model(
    directory: Path,
    *,
    allow_pickle: bool = False,
    timeout: float | None = None,
    device: str | None = None,
) -> Predictor:
    """Load a saved model; a flavor that needs pickle is refused unless ``allow_pickle``.

    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) is where a flavor that declares
    ``Placed`` (pytorch) runs the model; the other flavors ignore it.

    With a ``timeout`` the load runs in a daemon thread and a load that has not finished
    in time raises ``ServiceUnavailable``; the thread cannot be stopped, so a caller that
    must reclaim it runs loads in a worker process it can end.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    flavor = get_flavor(meta.flavor)
    if (flavor.needs_pickle or meta.unsafe_pickle) and not allow_pickle:
        raise PermissionDenied(
            f"this {meta.flavor} model needs pickle to load (unsafe_pickle): it is loaded "
            "only when a project admin marks the version unsafe_pickle, in an isolated worker"
        )
    _check_files(directory, meta.files)
    if timeout is None:
        return _load(flavor, directory, meta, device)
    return _load_within(flavor, directory, meta, timeout, device)


def _check_files(directory: Path, files: list[str]) -> None:
    root = directory.resolve()
    for name in files:
        path = (directory / name).resolve()
        if not path.is_relative_to(root):
            raise InvalidInput(f"the model file '{name}' lies outside the model directory")
        if not path.is_file():
            raise InvalidInput(f"the model file '{name}' listed in {META_FILE} is missing")


def _load(flavor: Flavor, directory: Path, meta: ModelMeta, device: str | None) -> Predictor:
    try:
        if device is not None and isinstance(flavor, Placed):
            return flavor.load_on(directory, meta.flavor_options, device)
        return flavor.load(directory, meta.flavor_options)
    except PlinthError:
        raise
    except Exception as exc:
        raise InvalidInput(
            f"the {meta.flavor} model could not be loaded: {type(exc).__name__}: {exc}"
        ) from exc


def _load_within(
    flavor: Flavor, directory: Path, meta: ModelMeta, timeout: float, device: str | None
) -> Predictor:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["predictor"] = _load(flavor, directory, meta, device)
        except BaseException as exc:  # handed to the waiting caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"plinth-load-{meta.flavor}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ServiceUnavailable(
            f"loading the {meta.flavor} model did not finish within {timeout:g} s"
        )
    if "error" in outcome:
        raise outcome["error"]
    predictor: Predictor = outcome["predictor"]
    return predictor


def _plinth_version() -> str:
    import plinth

    return str(plinth.__version__)
