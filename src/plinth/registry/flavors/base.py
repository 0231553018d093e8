"""What every flavor is: the ``Flavor`` and ``Predictor`` interfaces and the checks they share.

A flavor writes a model's own files into a directory and loads them back as a
``Predictor``. It never imports its heavy library at module import: ``handles`` looks
only at libraries the caller has already imported (``sys.modules``), and ``save`` and
``load`` import through ``plinth.errors.require`` so a missing extra is named.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from plinth.errors import InvalidInput
from plinth.registry.signature import Signature


@runtime_checkable
class Predictor(Protocol):
    def predict(self, inputs: Any) -> Any:
        """Inputs as ``Signature.coerce`` gives them -> an array, a DataFrame or a list."""
        ...


class Flavor(Protocol):
    name: str
    needs_pickle: bool

    def handles(self, model: Any) -> bool: ...

    def save(self, model: Any, directory: Path, **options: Any) -> tuple[list[str], dict[str, Any]]:
        """Write the model's files; return their paths (relative) and the flavor_options."""
        ...

    def load(self, directory: Path, options: dict[str, Any]) -> Predictor: ...

    def signature(self, directory: Path, options: dict[str, Any]) -> Signature | None:
        """The signature the saved files declare themselves (an ONNX graph's inputs), if any."""
        ...


@runtime_checkable
class Placed(Protocol):
    """What a flavor that can run its model on an accelerator declares besides
    ``Flavor``: ``load_on`` a device (``auto``, ``cpu``, ``cuda``, ``cuda:N``), refused in
    words when that device is not there. Flavors without it always run where they run."""

    def load_on(self, directory: Path, options: dict[str, Any], device: str) -> Predictor: ...


def imported(module: str) -> Any:
    """The module if the caller already imported it, else None: a cheap ``handles`` test."""
    return sys.modules.get(module)


def model_file(directory: Path, name: str) -> Path:
    """A flavor's file, refused in words when it is missing or empty."""
    path = directory / name
    if not path.is_file():
        raise InvalidInput(f"the model file '{name}' is missing")
    if path.stat().st_size == 0:
        raise InvalidInput(f"the model file '{name}' is empty")
    return path


def no_options(flavor: str, options: dict[str, Any]) -> None:
    if options:
        unknown = ", ".join(sorted(options))
        raise InvalidInput(f"the {flavor} flavor takes no option {unknown}")
