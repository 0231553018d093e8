"""PyTorch modules as safetensors weights plus the importable class that holds them.

No pickle: the weights are plain tensors, and the code is a class named by its import
path (``package.module:QualName``) with JSON constructor kwargs (option ``init_kwargs``).
The class is imported from what is installed, never from the model's own files, so a
model version can carry weights but not code.

A model loads onto a device (``load_on``: ``auto`` is CUDA when there is one, ``cpu``,
``cuda`` or ``cuda:N``); each predict moves its inputs (a whole micro-batch, as the
server joins them) there in one copy and brings the outputs back to the CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from plinth.errors import InvalidInput, require
from plinth.registry.flavors.base import Predictor, imported, model_file
from plinth.registry.signature import Signature

FILE = "model.safetensors"


class PyTorchFlavor:
    name = "pytorch"
    needs_pickle = False

    def handles(self, model: Any) -> bool:
        torch = imported("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def save(
        self, model: Any, directory: Path, *, init_kwargs: dict[str, Any] | None = None
    ) -> tuple[list[str], dict[str, Any]]:
        torch = require("torch", "torch")
        save_file = require("safetensors.torch", "torch").save_file
        class_path = _class_path(type(model))
        kwargs = dict(init_kwargs or {})
        try:
            json.dumps(kwargs)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"init_kwargs must be JSON: {exc}") from exc
        # clone(): tied weights share storage, which safetensors refuses to write twice.
        state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(directory / FILE))
        options = {
            "class_path": class_path,
            "init_kwargs": kwargs,
            "torch_version": torch.__version__,
        }
        return [FILE], options

    def load(self, directory: Path, options: dict[str, Any]) -> Predictor:
        return self.load_on(directory, options, "cpu")

    def load_on(self, directory: Path, options: dict[str, Any], device: str) -> Predictor:
        torch = require("torch", "torch")
        where = placement(torch, device)  # before any file is read: say so first
        load_file = require("safetensors.torch", "torch").load_file
        path = model_file(directory, FILE)
        cls = _import_class(str(options.get("class_path", "")), directory)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise InvalidInput(f"'{options.get('class_path')}' is not a torch.nn.Module class")
        kwargs = options.get("init_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise InvalidInput("init_kwargs must be a JSON object")
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise InvalidInput(f"'{FILE}' is not a valid safetensors file: {exc}") from exc
        model = cls(**kwargs)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InvalidInput(f"'{FILE}' does not fit {options['class_path']}: {exc}") from exc
        return TorchPredictor(model.eval().to(where), torch)

    def signature(self, directory: Path, options: dict[str, Any]) -> Signature | None:
        return None


def placement(torch: Any, device: str) -> Any:
    """The ``torch.device`` that ``device`` names here; InvalidInput when it is not one
    or is not on this machine."""
    found = re.fullmatch(r"auto|cpu|cuda(?::(\d{1,3}))?", device)
    if found is None:
        raise InvalidInput(f"device {device!r}: use auto, cpu, cuda or cuda:N")
    if device == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if device == "auto":
        return torch.device("cuda" if available else "cpu")
    if not available:
        why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise InvalidInput(
            f"device {device!r}: CUDA is not available here ({why}; torch "
            f"{torch.__version__}): serve with --device cpu, or auto to use a GPU when there is one"
        )
    index, count = int(found.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise InvalidInput(f"device {device!r}: this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)


def _class_path(cls: type) -> str:
    module, qualname = cls.__module__, cls.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        raise InvalidInput(
            f"{qualname} is defined in {module if module == '__main__' else 'a function'}: "
            "the pytorch flavor needs a class importable from an installed module"
        )
    try:
        found = _resolve(module, qualname)
    except (ImportError, AttributeError):
        found = None
    if found is not cls:
        raise InvalidInput(f"{module}:{qualname} does not import back as the model's class")
    return f"{module}:{qualname}"


def _import_class(class_path: str, directory: Path) -> Any:
    module, _, qualname = class_path.partition(":")
    if not module or not qualname:
        raise InvalidInput(f"class_path '{class_path}' is not 'package.module:ClassName'")
    # Looked up before anything is imported: a model directory that happens to be on
    # sys.path (a worker started inside it) must not supply the code it runs.
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise InvalidInput(f"the model class {class_path} cannot be imported: no such module")
    for place in [spec.origin, *(spec.submodule_search_locations or [])]:
        if place and Path(place).resolve().is_relative_to(directory.resolve()):
            raise InvalidInput(f"the model class {class_path} comes from the model's own files")
    try:
        return _resolve(module, qualname)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"the model class {class_path} cannot be imported: {exc}") from exc


def _resolve(module: str, qualname: str) -> Any:
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class TorchPredictor:
    def __init__(self, model: Any, torch: Any) -> None:
        self.model = model
        self.torch = torch
        first = next(iter(model.parameters()), None)
        self.dtype = first.dtype if first is not None else torch.float32
        self.device = first.device if first is not None else torch.device("cpu")

    def predict(self, inputs: Any) -> Any:
        torch = self.torch
        with torch.inference_mode():
            if isinstance(inputs, dict):
                output = self.model(**{k: self._tensor(v) for k, v in inputs.items()})
            else:
                output = self.model(self._tensor(inputs))
        return _numpy(output)

    def _tensor(self, value: Any) -> Any:
        if type(value).__name__ == "DataFrame":
            value = value.to_numpy()
        array = np.asarray(value)
        if not array.flags.writeable:  # pandas hands out read-only views; torch warns on them
            array = array.copy()
        tensor = self.torch.as_tensor(array)
        # JSON numbers arrive as float64; the weights say which float the model computes
        # in, and where: one copy to the device for the whole batch.
        if tensor.is_floating_point():
            return tensor.to(self.device, self.dtype)
        return tensor.to(self.device)


def _numpy(output: Any) -> Any:
    if hasattr(output, "detach"):
        return output.detach().cpu().numpy()
    if isinstance(output, dict):
        return {key: _numpy(value) for key, value in output.items()}
    if isinstance(output, list | tuple):
        return [_numpy(value) for value in output]
    return output
