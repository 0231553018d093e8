"""Models the flavor tests save: importable classes, as the pytorch flavor requires."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Set by a test when it is done waiting: a "hanging" load then finishes, so no thread
# is left behind for the rest of the session.
RELEASE = threading.Event()


class TinyNet(torch.nn.Module):
    def __init__(self, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(features, 8)
        self.out = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class HangsOnInit(torch.nn.Module):
    """Its constructor blocks until RELEASE is set: a load that hangs."""

    def __init__(self) -> None:
        super().__init__()
        RELEASE.wait(60)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class Doubler:
    """A plain Python model for the python flavor."""

    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def predict(self, inputs: Any) -> np.ndarray:
        return np.asarray(inputs, dtype=float) * self.factor


class CreatesFileOnLoad:
    """Unpickling this touches ``marker``: proof, if the file appears, that it was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def predict(self, inputs: Any) -> Any:
        return inputs

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


class NotAllowListed:
    """A scikit-learn-shaped transformer from outside scikit-learn: skops does not trust it."""

    def fit(self, X: Any, y: Any = None) -> NotAllowListed:
        return self

    def transform(self, X: Any) -> Any:
        return X

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {}
