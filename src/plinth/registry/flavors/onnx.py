"""ONNX models, run by onnxruntime on the CPU. The graph declares its own signature."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from plinth.errors import InvalidInput, require
from plinth.registry.flavors.base import Predictor, imported, model_file, no_options
from plinth.registry.signature import Signature, TensorSpec

FILE = "model.onnx"


class OnnxFlavor:
    name = "onnx"
    needs_pickle = False

    def handles(self, model: Any) -> bool:
        if isinstance(model, str | Path):
            return str(model).endswith(".onnx") and Path(model).is_file()
        onnx = imported("onnx")
        return onnx is not None and isinstance(model, onnx.ModelProto)

    def save(self, model: Any, directory: Path, **options: Any) -> tuple[list[str], dict[str, Any]]:
        no_options(self.name, options)
        onnx = require("onnx", "onnx")
        path = directory / FILE
        if isinstance(model, str | Path):
            shutil.copyfile(model, path)
            model = _parse(onnx, path)
        else:
            onnx.save_model(model, path)
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            path.unlink()
            raise InvalidInput(f"the ONNX model does not pass onnx.checker: {exc}") from exc
        return [FILE], {"opset": [op.version for op in model.opset_import if op.domain == ""]}

    def load(self, directory: Path, options: dict[str, Any]) -> Predictor:
        ort = require("onnxruntime", "onnx")
        path = model_file(directory, FILE)
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InvalidInput(f"'{FILE}' is not a valid ONNX model: {exc}") from exc
        return OnnxPredictor(session)

    def signature(self, directory: Path, options: dict[str, Any]) -> Signature | None:
        onnx = require("onnx", "onnx")
        graph = _parse(onnx, model_file(directory, FILE)).graph
        initialized = {init.name for init in graph.initializer}
        inputs = [_spec(onnx, value) for value in graph.input if value.name not in initialized]
        outputs = [_spec(onnx, value) for value in graph.output]
        return Signature(inputs=inputs, outputs=outputs) if inputs else None


def _parse(onnx: Any, path: Path) -> Any:
    try:
        return onnx.load_model(str(path))
    except Exception as exc:
        raise InvalidInput(f"'{path.name}' is not a valid ONNX model: {exc}") from exc


def _spec(onnx: Any, value: Any) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
    return TensorSpec(
        name=value.name, dtype="str" if dtype.kind == "O" else dtype.name, shape=shape
    )


class OnnxPredictor:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.inputs = {arg.name: arg for arg in session.get_inputs()}
        self.outputs = [arg.name for arg in session.get_outputs()]

    def predict(self, inputs: Any) -> Any:
        results = self.session.run(self.outputs, self._feeds(inputs))
        if len(results) == 1:
            return results[0]
        return dict(zip(self.outputs, results, strict=True))

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if type(inputs).__name__ == "DataFrame":
            if set(inputs.columns) >= set(self.inputs) and len(self.inputs) > 1:
                inputs = {name: inputs[name].to_numpy() for name in self.inputs}
            else:
                inputs = inputs.to_numpy()
        if not isinstance(inputs, dict):
            if len(self.inputs) != 1:
                raise InvalidInput(f"the ONNX model takes {len(self.inputs)} named inputs")
            inputs = {next(iter(self.inputs)): inputs}
        return {name: _cast(np.asarray(inputs[name]), arg) for name, arg in self.inputs.items()}


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_, "tensor(string)": np.object_,
}  # fmt: skip


def _cast(array: np.ndarray, arg: Any) -> np.ndarray:
    """JSON numbers arrive as float64 or int64; the graph says what it takes."""
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None or array.dtype == dtype:
        return array
    return array.astype(dtype)
