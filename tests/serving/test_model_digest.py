"""A replica loads a version only if its files are still, byte for byte, the
registered version's: the digest is recomputed from the files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from plinth.errors import DigestMismatch
from plinth.registry.manifest import directory_files, manifest_digest
from plinth.serving.model import load
from tests.serving.fakes import Adder


def test_files_changed_after_registration_are_refused(tmp_path: Path) -> None:
    from plinth.registry.flavors import save_model

    directory = tmp_path / "adder"
    save_model(Adder(), directory, flavor="python")
    digest = manifest_digest(directory_files(directory))
    served = load(directory, name="adder", version="1", allow_pickle=True, digest=digest)
    assert served.version == "1"

    [pickled] = [p for p in directory.iterdir() if p.name != "MLmodel.json"]
    pickled.write_bytes(pickled.read_bytes() + b"\x00")  # one byte more
    with pytest.raises(DigestMismatch, match="do not match the registered digest"):
        load(directory, name="adder", version="1", allow_pickle=True, digest=digest)
    (directory / "extra.py").write_text("print('hi')")  # or one file more
    pickled.write_bytes(pickled.read_bytes()[:-1])
    with pytest.raises(DigestMismatch):
        load(directory, name="adder", version="1", allow_pickle=True, digest=digest)
