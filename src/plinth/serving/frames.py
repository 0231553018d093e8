"""How the inputs of several requests join into one batch, and the model's answer
splits back into one part per request.

A coerced input is what ``Signature.coerce`` returns: a pandas DataFrame, a numpy
array, or a dict of arrays (one per named input); a prediction is an array, a
DataFrame, a dict of arrays or a plain list. Rows are the first axis of each.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rows(inputs: Any) -> int:
    """How many rows (first-axis entries) ``inputs`` holds."""
    if isinstance(inputs, dict):
        return rows(next(iter(inputs.values()))) if inputs else 0
    shape = getattr(inputs, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else 1
    return len(inputs)


def join(parts: list[Any]) -> Any:
    """One input holding every part's rows, in order."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, dict):
        return {key: join([part[key] for part in parts]) for key in first}
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if hasattr(first, "iloc"):  # a DataFrame: pandas is imported only where one exists
        import pandas as pd

        return pd.concat(parts, ignore_index=True)
    return [row for part in parts for row in part]


def split(predictions: Any, counts: list[int]) -> list[Any]:
    """``predictions`` cut into consecutive parts of ``counts`` rows; a model that
    answered another number of rows is a model failure (ValueError)."""
    total = sum(counts)
    if rows(predictions) != total:
        raise ValueError(f"the model returned {rows(predictions)} predictions for {total} rows")
    if len(counts) == 1:
        return [predictions]
    parts, start = [], 0
    for count in counts:
        parts.append(_rows_slice(predictions, start, start + count))
        start += count
    return parts


def _rows_slice(predictions: Any, start: int, stop: int) -> Any:
    if isinstance(predictions, dict):
        return {key: _rows_slice(value, start, stop) for key, value in predictions.items()}
    if hasattr(predictions, "iloc"):
        return predictions.iloc[start:stop]
    return predictions[start:stop]


def to_json(predictions: Any) -> Any:
    """Plain JSON values: arrays become lists, a DataFrame its records."""
    if isinstance(predictions, dict):
        return {key: to_json(value) for key, value in predictions.items()}
    if hasattr(predictions, "to_dict") and hasattr(predictions, "iloc"):
        if hasattr(predictions, "columns"):
            return predictions.to_dict("records")
        return predictions.tolist()  # a Series
    if hasattr(predictions, "tolist"):
        return predictions.tolist()
    return [to_json(value) if hasattr(value, "tolist") else value for value in predictions]
