"""A model's signature: the named, typed, shaped inputs it takes and outputs it gives.

``Signature.infer`` reads one from an example (a pandas DataFrame, a NumPy array, a dict
of arrays, a list of dicts); ``Signature.coerce`` turns a request payload into what the
model takes, refusing with an ``InvalidInput`` that names the offending field and row.

Payloads come in three forms, as in TensorFlow Serving's and KServe's v1 protocol:
records (a list of dicts, one per row), columns (a dict of name -> list of values), and,
for a single-input signature, a plain list of rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from plinth.errors import InvalidInput, Unprocessable, require

MAX_ROWS = 100_000
InputKind = Literal["dataframe", "ndarray", "dict"]

_NUMBER_KINDS = {"f": "fiub", "i": "iub", "u": "iub", "b": "b", "c": "fiubc"}


class TensorSpec(BaseModel):
    name: str
    dtype: str  # a NumPy dtype name ("float64", "int64", "bool") or "str"
    shape: list[int]  # -1 = any size (the batch dimension always is)


class Signature(BaseModel):
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] | None = None
    # What coerce() hands the model; None reads as "ndarray" for one input, else "dict".
    input_kind: InputKind | None = None

    @property
    def kind(self) -> InputKind:
        if self.input_kind is not None:
            return self.input_kind
        return "ndarray" if len(self.inputs) == 1 else "dict"

    @classmethod
    def infer(cls, example: Any, output: Any = None) -> Signature:
        """The signature of ``example`` (and of ``output``, when given)."""
        kind, inputs = _specs(example, default_name="input")
        outputs = None if output is None else _specs(output, default_name="output")[1]
        return cls(inputs=inputs, outputs=outputs, input_kind=kind)

    def coerce(self, instances: Any) -> Any:
        """A payload -> the DataFrame, array or dict of arrays the model takes."""
        columns = self._columns(instances)
        arrays = {spec.name: _column(spec, columns[spec.name]) for spec in self.inputs}
        kind = self.kind
        if kind == "ndarray":
            return arrays[self.inputs[0].name]
        if kind == "dict":
            return arrays
        _same_length(arrays)
        pd = require("pandas", "pandas")
        return pd.DataFrame(arrays, columns=[spec.name for spec in self.inputs])

    def _columns(self, instances: Any) -> dict[str, Any]:
        """Any accepted payload form -> {input name: values, one per row}."""
        names = [spec.name for spec in self.inputs]
        if _is_dataframe(instances):
            instances = {str(name): instances[name].to_numpy() for name in instances.columns}
        if isinstance(instances, np.ndarray):
            if len(names) != 1:
                raise InvalidInput(f"expected the inputs {_quoted(names)}, got one array")
            instances = {names[0]: instances}
        if isinstance(instances, Mapping):
            return _from_columns(instances, names)
        if isinstance(instances, Sequence) and not isinstance(instances, str | bytes):
            _check_rows(len(instances))
            if all(isinstance(row, Mapping) for row in instances):
                return _from_records(instances, names)
            if len(names) == 1:
                return {names[0]: instances}
            raise InvalidInput(
                f"instances must be records (a list of objects with {_quoted(names)}) "
                "or columns (an object of lists)"
            )
        raise InvalidInput(
            f"instances must be a list of records, an object of columns or a list of rows, "
            f"not {type(instances).__name__}"
        )


def _specs(example: Any, default_name: str) -> tuple[InputKind, list[TensorSpec]]:
    if _is_dataframe(example):
        return "dataframe", [_spec(str(c), example[c].to_numpy(), 1) for c in example.columns]
    if isinstance(example, Mapping):
        return "dict", [_spec(str(k), _array(v), None) for k, v in example.items()]
    if isinstance(example, list) and example and all(isinstance(r, Mapping) for r in example):
        names = list(dict.fromkeys(str(k) for row in example for k in row))
        rows = {name: [row.get(name) for row in example] for name in names}
        return "dataframe", [_spec(name, _array(v), None) for name, v in rows.items()]
    return "ndarray", [_spec(default_name, _array(example), None)]


def _spec(name: str, values: np.ndarray, ndim: int | None) -> TensorSpec:
    if values.ndim == 0:
        raise InvalidInput(f"example '{name}' is a scalar: give a batch of rows")
    shape = [-1] if ndim == 1 else [-1, *values.shape[1:]]
    return TensorSpec(name=name, dtype=_dtype_name(values), shape=shape)


def _array(value: Any) -> np.ndarray:
    """NumPy's view of an example; tensors of torch and TensorFlow convert themselves."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    try:
        return np.asarray(value)
    except ValueError as exc:
        raise InvalidInput(f"the example is not a regular array: {exc}") from exc


def _dtype_name(values: np.ndarray) -> str:
    kind = values.dtype.kind
    if kind in "US":
        return "str"
    if kind == "O":
        present = [v for v in values.ravel() if v is not None]
        if present and all(isinstance(v, str) for v in present):
            return "str"
        if present and all(isinstance(v, int | float) for v in present):
            return "float64"
        return "object"
    return values.dtype.name


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns")


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _check_rows(count: int) -> None:
    if count == 0:
        raise InvalidInput("instances is empty: send at least one row")
    if count > MAX_ROWS:
        raise Unprocessable(f"{count} rows in one request: at most {MAX_ROWS} are accepted")


def _from_records(records: Sequence[Mapping[str, Any]], names: list[str]) -> dict[str, Any]:
    _check_rows(len(records))
    wanted = set(names)
    for index, record in enumerate(records):
        if record.keys() != wanted:
            _refuse_fields(record.keys(), names, f" in row {index}")
    return {name: [record[name] for record in records] for name in names}


def _from_columns(columns: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    _refuse_fields(columns.keys(), names, "")
    for name in names:
        values = columns[name]
        if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
            raise InvalidInput(f"column '{name}' must be a list of values, one per row")
        _check_rows(len(values))
    return {name: columns[name] for name in names}


def _refuse_fields(given: Any, names: list[str], where: str) -> None:
    missing = [name for name in names if name not in given]
    if missing:
        raise InvalidInput(f"missing field {_quoted(missing)}{where}")
    unknown = sorted(str(name) for name in given if name not in set(names))
    if unknown:
        raise InvalidInput(f"unknown field {_quoted(unknown)}{where}: expected {_quoted(names)}")


def _same_length(arrays: Mapping[str, np.ndarray]) -> None:
    lengths = {name: len(values) for name, values in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"'{name}' has {n}" for name, n in lengths.items())
        raise InvalidInput(f"columns differ in length: {described}")


def _column(spec: TensorSpec, values: Any) -> np.ndarray:
    """One input's values -> an array of the spec's dtype and shape, or a precise refusal."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged rows
        array = None
    # NumPy turns [3, "a"] into two strings: a string column from a payload is checked
    # value by value below.
    checked = spec.dtype != "str" or isinstance(values, np.ndarray)
    if array is not None and checked and _fits(spec, array):
        return array.astype(_numpy_dtype(spec), copy=False)
    problem = _explain(spec, values)
    if problem is None:
        # Every value fits but NumPy's guess did not: None among numbers (-> NaN), or
        # strings held as objects (a pandas string column).
        converted = np.asarray(values, dtype=_numpy_dtype(spec))
        if converted.ndim == len(spec.shape):
            return converted
        problem = f"'{spec.name}' does not fit shape {spec.shape}"
    raise InvalidInput(problem)


def _numpy_dtype(spec: TensorSpec) -> Any:
    return object if spec.dtype in ("str", "object") else np.dtype(spec.dtype)


def _fits(spec: TensorSpec, array: np.ndarray) -> bool:
    if array.ndim != len(spec.shape):
        return False
    if any(
        want not in (-1, got) for want, got in zip(spec.shape[1:], array.shape[1:], strict=True)
    ):
        return False
    if spec.dtype == "object":
        return True
    if spec.dtype == "str":
        return array.dtype.kind == "U"
    kind = np.dtype(spec.dtype).kind
    if array.dtype.kind not in _NUMBER_KINDS.get(kind, kind):
        return False
    if kind in "iu" and array.dtype.kind == "f":
        return bool(np.all(np.isfinite(array)) and np.all(array == np.round(array)))
    return True


def _explain(spec: TensorSpec, values: Any) -> str | None:
    """The first row that does not fit, said in words; None when every row fits."""
    shape = spec.shape[1:]
    for index, row in enumerate(values):
        problem = _row_shape_problem(row, shape)
        if problem:
            return f"'{spec.name}': shape {spec.shape} expected, got {problem} in row {index}"
        for value in np.asarray(row, dtype=object).ravel():
            if not _value_fits(spec.dtype, value):
                shown = value.item() if isinstance(value, np.generic) else value
                return (
                    f"'{spec.name}' must be {_described(spec.dtype)}, got {shown!r} in row {index}"
                )
    return None


def _row_shape_problem(row: Any, shape: list[int]) -> str | None:
    if not shape:
        if isinstance(row, list | tuple | np.ndarray):
            return f"{len(row)} values"
        return None
    if not isinstance(row, list | tuple | np.ndarray):
        return "a single value"
    if shape[0] != -1 and len(row) != shape[0]:
        return f"{len(row)} values"
    for item in row:
        problem = _row_shape_problem(item, shape[1:])
        if problem:
            return problem
    return None


def _value_fits(dtype: str, value: Any) -> bool:
    if dtype == "object":
        return True
    if dtype == "str":
        return isinstance(value, str)
    kind = np.dtype(dtype).kind
    if kind == "b":
        return isinstance(value, bool | np.bool_)
    if kind in "iu":
        return isinstance(value, int | np.integer) or (
            isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value)
        )
    if kind in "fc":
        return value is None or isinstance(value, int | float | np.number)
    return True


def _described(dtype: str) -> str:
    if dtype == "str":
        return "a string"
    kind = np.dtype(dtype).kind
    return {"b": "a boolean", "i": "an integer", "u": "an integer"}.get(kind, "a number")
