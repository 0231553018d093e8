"""scikit-learn models as skops files: no pickle, and only allow-listed types are built.

skops refuses to construct a type it does not trust unless told to. At save time the
types skops does not trust by default are listed and each is checked against an
allow-list (a class, or a NumPy ufunc, from scikit-learn, NumPy or SciPy, outside their
file-reading corners); the list is stored in flavor_options. At load time the file's
own list is read again and every type must be on the stored list *and* pass the same
check, because MLmodel.json can be edited as easily as the model file.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from plinth.errors import InvalidInput, PermissionDenied, require
from plinth.registry.flavors.base import Predictor, imported, model_file, no_options
from plinth.registry.signature import Signature

FILE = "model.skops"
_ALLOWED_PACKAGES = ("sklearn", "numpy", "scipy")
# Corners of the allowed packages that read or write files or run code.
_DENIED_PARTS = {
    "load", "loads", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt",
    "fromfile", "tofile", "memmap", "io", "datasets", "ctypeslib", "f2py", "distutils",
    "testing", "_testing", "npyio", "format", "externals", "DataSource",
}  # fmt: skip


class SklearnFlavor:
    name = "sklearn"
    needs_pickle = False

    def handles(self, model: Any) -> bool:
        base = imported("sklearn.base")
        return base is not None and isinstance(model, base.BaseEstimator)

    def save(self, model: Any, directory: Path, **options: Any) -> tuple[list[str], dict[str, Any]]:
        no_options(self.name, options)
        sio = _skops_io()
        path = directory / FILE
        sio.dump(model, path)
        untrusted = sorted(sio.get_untrusted_types(file=path))
        refused = [name for name in untrusted if not allowed_type(name)]
        if refused:
            path.unlink()
            raise InvalidInput(
                f"the sklearn flavor saves only scikit-learn, NumPy and SciPy types; "
                f"this model holds {', '.join(refused)}: save it with flavor='python' instead"
            )
        sklearn = require("sklearn", "sklearn")
        return [FILE], {"trusted_types": untrusted, "sklearn_version": sklearn.__version__}

    def load(self, directory: Path, options: dict[str, Any]) -> Predictor:
        sio = _skops_io()
        path = model_file(directory, FILE)
        stored = set(options.get("trusted_types") or [])
        try:
            untrusted = sio.get_untrusted_types(file=path)
        except Exception as exc:
            raise InvalidInput(f"'{FILE}' is not a readable skops file: {exc}") from exc
        refused = sorted(name for name in untrusted if name not in stored or not allowed_type(name))
        if refused:
            raise PermissionDenied(
                f"'{FILE}' holds types that are not trusted, so it is not loaded: "
                + ", ".join(refused)
            )
        model = sio.load(path, trusted=list(untrusted))
        return SklearnPredictor(model)

    def signature(self, directory: Path, options: dict[str, Any]) -> Signature | None:
        return None


class SklearnPredictor:
    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, inputs: Any) -> Any:
        return self.model.predict(inputs)


def _skops_io() -> Any:
    """``skops.io``, imported without importing torch.

    skops lists scikit-learn's estimators at import (``all_estimators``), and the
    package walk behind it imports every sub-package to look inside, among them
    ``sklearn.externals.array_api_compat.torch``, which imports torch when it is
    installed: seconds of start-up for a server that never touches it. While skops is
    imported, an empty module stands in for that one package; it is removed after, so
    a later real import of it works as usual."""
    import sys
    import types

    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    name = "sklearn.externals.array_api_compat.torch"
    stand_in = None
    if name not in sys.modules:
        stand_in = types.ModuleType(name)
        stand_in.__path__ = []  # a package with nothing inside: the walk stops here
        sys.modules[name] = stand_in
    try:
        return require("skops.io", "sklearn")
    finally:
        if stand_in is not None and sys.modules.get(name) is stand_in:
            del sys.modules[name]


def allowed_type(name: str) -> bool:
    """A class or NumPy ufunc from scikit-learn, NumPy or SciPy, outside the denied corners."""
    parts = name.split(".")
    if parts[0] not in _ALLOWED_PACKAGES or len(parts) < 2:
        return False
    if any(part in _DENIED_PARTS for part in parts[1:]) or not all(p.isidentifier() for p in parts):
        return False
    found = _resolve(parts)
    if isinstance(found, type):
        return True
    numpy = importlib.import_module("numpy")
    return isinstance(found, numpy.ufunc)


def _resolve(parts: list[str]) -> Any:
    """The object a dotted name names; only ever imports modules of the allowed packages."""
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, None)
        return found
    return None
