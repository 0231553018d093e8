"""The two request shapes a server speaks, turned into what ``Signature.coerce`` takes,
and the model's answer turned back into each one's response.

- ``POST /v1/models/NAME:predict``: ``{"instances": [...]}`` (records or rows) or
  ``{"inputs": {column: [...]}}`` → ``{"predictions": [...]}``.
- Open Inference Protocol v2 (KServe, Triton, MLServer): ``{"id", "inputs": [{"name",
  "shape", "datatype", "data"}]}`` → ``{"model_name", "model_version", "id",
  "outputs": [...]}``.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from plinth.errors import InvalidInput
from plinth.serving import frames
from plinth.serving.model import ServedModel

# numpy dtype names (as signatures record them) -> Open Inference Protocol datatypes
_V2_TYPES = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}


def v2_datatype(dtype: str) -> str:
    return _V2_TYPES.get(str(dtype), "BYTES")


def v1_instances(body: Any) -> Any:
    """The payload of a v1 predict request."""
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object: {"instances": [...]}')
    if "instances" in body and "inputs" not in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("instances must be a non-empty list of records or rows")
        return instances
    if "inputs" in body and "instances" not in body:
        inputs = body["inputs"]
        if not isinstance(inputs, dict | list) or not inputs:
            raise InvalidInput("inputs must be a non-empty object of columns")
        return inputs
    raise InvalidInput('the body needs exactly one of "instances" (a list) or "inputs" (columns)')


def v1_answer(predictions: Any) -> dict[str, Any]:
    return {"predictions": frames.to_json(predictions)}


def v2_instances(body: Any, model: ServedModel) -> tuple[Any, str]:
    """The payload of a v2 infer request, and the request's id (echoed back)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InvalidInput('the body must be a JSON object with "inputs": a non-empty list')
    tensors = {}
    for position, tensor in enumerate(body["inputs"]):
        name, value = _v2_tensor(tensor, position)
        if name in tensors:
            raise InvalidInput(f"input {name!r} is given twice")
        tensors[name] = value
    request_id = body.get("id")
    request_id = str(request_id) if request_id is not None else uuid.uuid4().hex
    specs = list(model.signature.inputs) if model.signature is not None else []
    if len(specs) == 1 and len(specs[0].shape) > 1:
        # one multi-dimensional tensor: its rows, as the signature takes them
        if list(tensors) != [specs[0].name]:
            given = ", ".join(repr(name) for name in tensors)
            raise InvalidInput(f"unknown input {given}: the model takes {specs[0].name!r}")
        return tensors[specs[0].name], request_id
    if not specs and len(tensors) == 1:
        return next(iter(tensors.values())), request_id
    return tensors, request_id


def _v2_tensor(tensor: Any, position: int) -> tuple[str, Any]:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InvalidInput(f"inputs[{position}] must be an object with a name")
    name = tensor["name"]
    shape, data = tensor.get("shape"), tensor.get("data")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise InvalidInput(f"input {name!r}: shape must be a list of sizes")
    if 0 in shape or len(shape) > 32:  # [30000000, 0]: no values, yet millions of rows
        raise InvalidInput(f"input {name!r}: shape {shape[:33]} holds no values, or too many axes")
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: data must be a list")
    try:
        values = np.asarray(data, dtype=object).reshape(shape)
    except ValueError:
        raise InvalidInput(
            f"input {name!r}: {np.asarray(data, dtype=object).size} values do not fill "
            f"shape {shape}"
        ) from None
    return name, values.tolist()


def v2_answer(model: ServedModel, predictions: Any, request_id: str) -> dict[str, Any]:
    return {
        "model_name": model.name,
        "model_version": model.version,
        "id": request_id,
        "outputs": v2_outputs(model, predictions),
    }


def v2_outputs(model: ServedModel, predictions: Any) -> list[dict[str, Any]]:
    if isinstance(predictions, dict):
        named = dict(predictions)
    elif hasattr(predictions, "columns"):
        named = {str(column): predictions[column].to_numpy() for column in predictions.columns}
    else:
        specs = (model.signature.outputs or []) if model.signature is not None else []
        named = {specs[0].name if len(specs) == 1 else "predictions": predictions}
    return [_v2_output(name, value) for name, value in named.items()]


def _v2_output(name: str, value: Any) -> dict[str, Any]:
    array = np.asarray(value)
    datatype = v2_datatype(array.dtype.name)
    data = array.reshape(-1).tolist()
    if datatype == "BYTES":
        data = [item if isinstance(item, str | int | float | bool) else str(item) for item in data]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def v2_metadata(model: ServedModel) -> dict[str, Any]:
    signature = model.signature
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.flavor,
        "inputs": _specs(signature.inputs if signature is not None else []),
        "outputs": _specs((signature.outputs or []) if signature is not None else []),
    }


def _specs(specs: Any) -> list[dict[str, Any]]:
    return [
        {"name": spec.name, "datatype": v2_datatype(spec.dtype), "shape": list(spec.shape)}
        for spec in specs
    ]


def example_instance(model_signature: Any) -> Any:
    """A request body a user can paste to try the model (zeros of the right shape)."""
    specs = list(model_signature.inputs) if model_signature is not None else []
    if len(specs) == 1 and len(specs[0].shape) > 1:
        width = max(1, specs[0].shape[-1])
        return {"instances": [[0] * width]}
    if specs:
        return {"instances": [{spec.name: 0 for spec in specs}]}
    return {"instances": [[0]]}
