"""A step's return value as files, and back, in safe formats only.

Each output is a folder holding one kind of file, which says how to read it back:

=================  =============================================================
``value.json``     JSON values (None, numbers, text, lists, dicts)
``array.npy``      a NumPy array (saved and loaded without pickle)
``frame.parquet``  a pandas DataFrame
``table.parquet``  a pyarrow Table
``bytes.bin``      bytes
``file/NAME``      a file the step returned as a ``pathlib.Path``
``dir/…``          a folder the step returned as a ``pathlib.Path`` (``empty-dir``: an
                   empty one)
``model.skops``    a scikit-learn model (skops; only scikit-learn, NumPy and SciPy
                   types are built back, as the registry's sklearn flavor does)
=================  =============================================================

Nothing is ever pickled: a value of any other type is a clear error naming these.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from plinth.errors import InvalidInput

KINDS = ("value.json", "array.npy", "frame.parquet", "table.parquet", "bytes.bin", "file", "dir")
SKOPS = "model.skops"
TRUSTED = "trusted.json"
EMPTY_DIR = "empty-dir"  # a folder output with nothing in it


def save(value: Any, folder: Path, what: str) -> None:
    """Write ``value`` into the empty ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(value, Path):
        if value.is_dir() and not any(value.iterdir()):
            (folder / EMPTY_DIR).write_bytes(b"")  # no file to store: say so instead
        elif value.is_dir():
            shutil.copytree(value, folder / "dir")
        elif value.is_file():
            (folder / "file").mkdir()
            shutil.copyfile(value, folder / "file" / value.name)
        else:
            raise InvalidInput(f"{what} is {value}, which does not exist")
        return
    if isinstance(value, bytes | bytearray | memoryview):
        (folder / "bytes.bin").write_bytes(bytes(value))
        return
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if _is(value, "numpy", "ndarray"):
        import numpy as np

        if value.dtype.hasobject:
            raise InvalidInput(f"{what}: an array of Python objects cannot be saved safely")
        np.save(folder / "array.npy", value, allow_pickle=False)
        return
    if _is(value, "pandas", "DataFrame"):
        value.to_parquet(folder / "frame.parquet")
        return
    if _is(value, "pyarrow", "Table"):
        import pyarrow.parquet as pq

        pq.write_table(value, folder / "table.parquet")
        return
    if _is_estimator(value):
        from plinth.registry.flavors.sklearn import SklearnFlavor

        _files, options = SklearnFlavor().save(value, folder)
        (folder / TRUSTED).write_text(json.dumps(options))
        return
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"{what} is a {kind}, which a step cannot return: return JSON values, NumPy "
            "arrays, pandas DataFrames, Arrow tables, bytes, scikit-learn models, or write "
            "a file and return its pathlib.Path"
        ) from None
    (folder / "value.json").write_text(text)


def load(folder: Path) -> Any:
    """The value ``save`` wrote into ``folder``."""
    if (folder / "value.json").is_file():
        return json.loads((folder / "value.json").read_text())
    if (folder / "array.npy").is_file():
        import numpy as np

        return np.load(folder / "array.npy", allow_pickle=False)
    if (folder / "frame.parquet").is_file():
        import pandas as pd

        return pd.read_parquet(folder / "frame.parquet")
    if (folder / "table.parquet").is_file():
        import pyarrow.parquet as pq

        return pq.read_table(folder / "table.parquet")
    if (folder / "bytes.bin").is_file():
        return (folder / "bytes.bin").read_bytes()
    if (folder / "file").is_dir():
        [only] = list((folder / "file").iterdir())
        return only
    if (folder / "dir").is_dir():
        return folder / "dir"
    if (folder / EMPTY_DIR).is_file():
        (folder / "dir").mkdir()
        return folder / "dir"
    if (folder / SKOPS).is_file():
        from plinth.registry.flavors.sklearn import SklearnFlavor

        options = json.loads((folder / TRUSTED).read_text())
        return SklearnFlavor().load(folder, options).model  # type: ignore[attr-defined]
    if not folder.exists() or not any(folder.iterdir()):
        return None  # an empty folder: nothing was written (an empty dir output)
    raise InvalidInput(f"{folder} holds no output Plinth knows how to read")


def _is(value: Any, module: str, name: str) -> bool:
    """Whether ``value`` is a ``module.name``, without importing a module not loaded."""
    import sys

    found = getattr(sys.modules.get(module), name, None)
    return isinstance(found, type) and isinstance(value, found)


def _is_estimator(value: Any) -> bool:
    import sys

    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(value, base.BaseEstimator)
