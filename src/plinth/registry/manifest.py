"""A model version's digest: sha256 over the manifest of its files, one
``DIGEST  SIZE  PATH`` line per file, sorted by path. The registry computes it from the
digests it stores; a server about to load a version computes it from the files on its
disk, so files changed after registration are never served. Light to import."""

from __future__ import annotations

from pathlib import Path

from plinth.core import blobs
from plinth.core.blobs import file_digest
from plinth.errors import DigestMismatch, Unprocessable
from plinth.registry.schemas import ModelFile


def manifest_digest(files: list[ModelFile]) -> str:
    return blobs.manifest_digest((f.path, f.digest, f.size) for f in files)


NAME_MAX = 255  # bytes in one file name on Linux filesystems (ext4, xfs, btrfs)


def check_layout(paths: list[str]) -> None:
    """Refuse files that cannot all be written as one directory tree, as every server
    and download materializes them: a path that is a file and also the folder of
    another (``a`` and ``a/b``), or a name too long for the filesystem. Empty, ``.``
    and ``..`` segments never get here (artifact paths refuse them). Names differing in
    case only are two files on Linux, so they are kept."""
    files = set(paths)
    for path in paths:
        segments = path.split("/")
        for depth in range(1, len(segments)):
            folder = "/".join(segments[:depth])
            if folder in files:
                raise Unprocessable(
                    f"the files '{folder}' and '{path}' clash: '{folder}' would be both a "
                    "file and a folder, so the version could never be written out to serve; "
                    "rename one and log the files again"
                )
        for segment in segments:
            if len(segment.encode()) > NAME_MAX:
                raise Unprocessable(
                    f"the file '{path}' has a name over {NAME_MAX} bytes "
                    f"('{segment[:40]}…'): no filesystem a server runs on can write it"
                )


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
