"""A model version's digest: sha256 over the manifest of its files, one
``DIGEST  SIZE  PATH`` line per file, sorted by path. The registry computes it from the
digests it stores; a server about to load a version computes it from the files on its
disk, so files changed after registration are never served. Light to import."""

from __future__ import annotations

from pathlib import Path

from plinth.core import blobs
from plinth.core.blobs import file_digest
from plinth.errors import DigestMismatch
from plinth.registry.schemas import ModelFile


def manifest_digest(files: list[ModelFile]) -> str:
    return blobs.manifest_digest((f.path, f.digest, f.size) for f in files)


def directory_files(directory: Path) -> list[ModelFile]:
    """Every file under ``directory`` as a version's manifest names it."""
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            info = file_digest(path)
            relative = path.relative_to(directory).as_posix()
            found.append(ModelFile(path=relative, digest=info.digest, size=info.size))
    return found


def check_directory(directory: Path, digest: str, what: str) -> None:
    """Refuse files that are not, byte for byte, the registered version's."""
    if manifest_digest(directory_files(directory)) != digest:
        raise DigestMismatch(
            f"{what}: the files in {directory} do not match the registered digest "
            f"sha256:{digest}; refusing to serve them"
        )
