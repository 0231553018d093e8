"""A tiny model that stands in where a real flavor cannot show a behaviour on
purpose: one that fails on a chosen input, one that is slow. Its signature enforces
two numeric columns, as ``Signature.coerce`` does for a DataFrame signature."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from plinth.errors import InvalidInput
from plinth.serving.model import ServedModel

POISON = -1.0  # a row whose `a` is this makes the model raise


@dataclass
class Spec:
    name: str
    dtype: str
    shape: list[int]


class TwoColumns:
    inputs = [Spec("a", "float64", [-1]), Spec("b", "float64", [-1])]
    outputs = [Spec("total", "float64", [-1])]

    def coerce(self, payload: Any) -> dict[str, np.ndarray]:
        if isinstance(payload, list):
            if not all(isinstance(row, dict) for row in payload):
                raise InvalidInput("instances must be records")
            payload = {name: [row.get(name) for row in payload] for name in ("a", "b")}
        for name in payload:
            if name not in ("a", "b"):
                raise InvalidInput(f"unknown field {name!r}")
        columns = {}
        for name in ("a", "b"):
            values = payload.get(name)
            if values is None or any(v is None for v in values):
                raise InvalidInput(f"missing column {name!r}")
            if not all(isinstance(v, int | float) for v in values):
                raise InvalidInput(f"{name!r} must be a number")
            columns[name] = np.asarray(values, dtype="float64")
        return columns


class Adder:
    """Predicts a + b; raises on a poisoned row; sleeps ``delay`` per call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def predict(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        if (inputs["a"] == POISON).any():
            raise ValueError("poisoned row")
        return inputs["a"] + inputs["b"]


def fake_model(delay: float = 0.0) -> ServedModel:
    return ServedModel("adder", "3", "python", Adder(delay), TwoColumns())
