"""Signatures: inferred from examples, and payloads coerced or refused by field and row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plinth.errors import InvalidInput, Unprocessable
from plinth.registry.signature import MAX_ROWS, Signature, TensorSpec

IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def frame_signature() -> Signature:
    frame = pd.DataFrame({name: [5.1, 4.9] for name in IRIS})
    return Signature.infer(frame)


@pytest.fixture
def tensor_signature() -> Signature:
    return Signature.infer(np.zeros((3, 4), dtype=np.float32))


def test_infer_dataframe_gives_one_spec_per_column() -> None:
    frame = pd.DataFrame({"age": [30, 40], "income": [1.5, 2.5], "city": ["a", "b"]})
    signature = Signature.infer(frame)
    assert signature.kind == "dataframe"
    assert [(s.name, s.dtype, s.shape) for s in signature.inputs] == [
        ("age", "int64", [-1]),
        ("income", "float64", [-1]),
        ("city", "str", [-1]),
    ]
    assert signature.outputs is None


def test_infer_array_and_output() -> None:
    signature = Signature.infer(np.zeros((5, 4), np.float32), output=np.zeros(5, np.int64))
    assert signature.kind == "ndarray"
    assert signature.inputs == [TensorSpec(name="input", dtype="float32", shape=[-1, 4])]
    assert signature.outputs == [TensorSpec(name="output", dtype="int64", shape=[-1])]


def test_infer_dict_of_arrays() -> None:
    signature = Signature.infer({"image": np.zeros((2, 8, 8)), "mask": np.ones(2, dtype=bool)})
    assert signature.kind == "dict"
    assert [(s.name, s.dtype, s.shape) for s in signature.inputs] == [
        ("image", "float64", [-1, 8, 8]),
        ("mask", "bool", [-1]),
    ]


def test_infer_records() -> None:
    signature = Signature.infer([{"a": 1.0, "b": "x"}, {"a": 2.5, "b": "y"}])
    assert signature.kind == "dataframe"
    assert [(s.name, s.dtype) for s in signature.inputs] == [("a", "float64"), ("b", "str")]


def test_infer_refuses_a_scalar() -> None:
    with pytest.raises(InvalidInput, match="scalar"):
        Signature.infer(3.0)


def test_signature_round_trips_through_json(frame_signature: Signature) -> None:
    assert Signature.model_validate_json(frame_signature.model_dump_json()) == frame_signature


def test_coerce_records_and_columns_give_the_same_frame(frame_signature: Signature) -> None:
    records = [dict(zip(IRIS, row, strict=True)) for row in [[5.1, 3.5, 1.4, 0.2], [6, 3, 5, 2]]]
    columns = {name: [row[name] for row in records] for name in IRIS}
    from_records = frame_signature.coerce(records)
    from_columns = frame_signature.coerce(columns)
    assert list(from_records.columns) == IRIS
    assert from_records.dtypes.tolist() == [np.float64] * 4
    pd.testing.assert_frame_equal(from_records, from_columns)


def test_coerce_rows_for_a_single_tensor(tensor_signature: Signature) -> None:
    array = tensor_signature.coerce([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert array.dtype == np.float32
    assert array.shape == (2, 4)
    assert tensor_signature.coerce({"input": [[1, 2, 3, 4]]}).shape == (1, 4)
    assert tensor_signature.coerce([{"input": [1, 2, 3, 4]}]).shape == (1, 4)


def test_coerce_passes_arrays_and_frames_through(
    tensor_signature: Signature, frame_signature: Signature
) -> None:
    array = np.ones((3, 4), np.float64)
    assert tensor_signature.coerce(array).dtype == np.float32
    frame = pd.DataFrame({name: [1.0] for name in IRIS})
    assert frame_signature.coerce(frame).shape == (1, 4)


def test_coerce_dict_signature() -> None:
    signature = Signature.infer({"ids": np.zeros((2, 3), np.int64), "scale": np.zeros(2)})
    coerced = signature.coerce({"ids": [[1, 2, 3]], "scale": [0.5]})
    assert coerced["ids"].dtype == np.int64 and coerced["ids"].shape == (1, 3)
    assert coerced["scale"].tolist() == [0.5]


def test_null_in_a_number_column_becomes_nan(frame_signature: Signature) -> None:
    record = dict.fromkeys(IRIS, 1.0) | {"petal_width": None}
    assert np.isnan(frame_signature.coerce([record])["petal_width"][0])


def test_integral_floats_fit_an_integer_column() -> None:
    signature = Signature.infer(pd.DataFrame({"count": [1, 2]}))
    assert signature.coerce({"count": [3.0, 4]})["count"].tolist() == [3, 4]


def test_strings_fit_a_string_column() -> None:
    signature = Signature.infer(pd.DataFrame({"city": ["a", "b"]}))
    assert signature.coerce([{"city": "Oslo"}])["city"].tolist() == ["Oslo"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([dict.fromkeys(IRIS[:3], 1.0)], "missing field 'petal_width' in row 0"),
        (
            [dict.fromkeys(IRIS, 1.0), dict.fromkeys(IRIS, 1.0) | {"colour": "red"}],
            "unknown field 'colour' in row 1",
        ),
        ({name: [1.0] for name in IRIS[1:]}, "missing field 'sepal_length'"),
        (
            [dict.fromkeys(IRIS, 1.0), dict.fromkeys(IRIS, 1.0) | {"sepal_length": "abc"}],
            "'sepal_length' must be a number, got 'abc' in row 1",
        ),
        (
            {name: [1.0, 2.0] if name != "petal_length" else [1.0] for name in IRIS},
            "'petal_length' has 1",
        ),
        ({name: 1.0 for name in IRIS}, "column 'sepal_length' must be a list"),
        ([[1.0, 2.0, 3.0, 4.0]], "instances must be records"),
        ("text", "instances must be a list of records"),
        ([], "instances is empty"),
    ],
)
def test_coerce_names_the_offending_field(
    frame_signature: Signature, payload: object, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        frame_signature.coerce(payload)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([[1, 2, 3, 4], [1, 2, 3]], "'input': shape [-1, 4] expected, got 3 values in row 1"),
        ([[1, 2, 3, 4], 5], "'input': shape [-1, 4] expected, got a single value in row 1"),
        ([[1, 2, 3, 4], [1, 2, "x", 4]], "'input' must be a number, got 'x' in row 1"),
        ({"inputs": [[1, 2, 3, 4]]}, "missing field 'input'"),
        ({"input": [[1, 2, 3, 4]], "extra": [1]}, "unknown field 'extra'"),
    ],
)
def test_coerce_names_the_offending_row(
    tensor_signature: Signature, payload: object, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        tensor_signature.coerce(payload)
    assert message in caught.value.message


def test_wrong_types_are_named() -> None:
    signature = Signature.infer(pd.DataFrame({"n": [1], "flag": [True], "city": ["a"]}))
    good = {"n": 1, "flag": True, "city": "a"}
    cases = [
        ({"n": 1.5}, "'n' must be an integer, got 1.5 in row 1"),
        ({"flag": 1}, "'flag' must be a boolean, got 1 in row 1"),
        ({"city": 3}, "'city' must be a string, got 3 in row 1"),
    ]
    for change, message in cases:
        with pytest.raises(InvalidInput) as caught:
            signature.coerce([good, good | change])
        assert message in caught.value.message


def test_an_array_for_a_many_input_signature_is_refused(frame_signature: Signature) -> None:
    with pytest.raises(InvalidInput, match="expected the inputs 'sepal_length'"):
        frame_signature.coerce(np.zeros((1, 4)))


def test_more_than_the_row_limit_is_refused(tensor_signature: Signature) -> None:
    rows = np.zeros((MAX_ROWS + 1, 4)).tolist()
    with pytest.raises(Unprocessable, match=f"at most {MAX_ROWS}"):
        tensor_signature.coerce(rows)
    with pytest.raises(Unprocessable, match=f"at most {MAX_ROWS}"):
        tensor_signature.coerce({"input": rows})
    with pytest.raises(Unprocessable, match=f"at most {MAX_ROWS}"):
        tensor_signature.coerce([{"input": [0, 0, 0, 0]}] * (MAX_ROWS + 1))
