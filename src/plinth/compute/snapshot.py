"""A job's working directory as one content-addressed artifact, so a job is
reproducible and runs the same on any executor.

``collect`` walks the directory the way ``git add`` would (``.git`` left out, every
``.gitignore`` on the way honoured, with negations and directory patterns, through
``pathspec``'s gitignore semantics) and refuses a tree over the size cap with the
biggest files named, so the user knows what to ignore. ``pack`` turns it into a
deterministic tar: entries sorted, mtime, owner and group fixed, only regular files
with their executable bit, no compression (zlib versions differ; the digest must not),
so the same tree always has the same sha256. ``unpack`` extracts an archive that may
have been tampered with: regular files only, no absolute paths, no ``..``, no links or
devices, into a new or empty directory, with the size cap counted while writing.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from plinth.errors import InvalidInput, PlinthError

__all__ = ["SnapshotFile", "collect", "pack", "unpack"]

log = logging.getLogger(__name__)
_MODE_EXECUTABLE, _MODE_PLAIN = 0o755, 0o644
_BIGGEST_SHOWN = 5
HOME_MARK = "plinth.db"  # a folder holding it is a Plinth home: never part of a job


class SnapshotFile(NamedTuple):
    path: str  # relative, posix separators
    source: Path  # absolute path on this machine
    size: int
    executable: bool


# -- collecting ----------------------------------------------------------------------


def collect(root: Path, max_bytes: int, skipped: list[str] | None = None) -> list[SnapshotFile]:
    """The files a snapshot of ``root`` holds, sorted by path. Symlinks that leave
    ``root``, symlinked directories, broken links and special files are left out, each
    with a note appended to ``skipped`` (and logged). Raises InvalidInput when the files
    add up to more than ``max_bytes``."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory to snapshot")
    notes = skipped if skipped is not None else []
    files = sorted(_walk(root, root, "", [], notes), key=lambda f: f.path)
    for note in notes:
        log.info("snapshot of %s: %s", root, note)
    total = sum(f.size for f in files)
    if total > max_bytes:
        biggest = sorted(files, key=lambda f: (-f.size, f.path))[:_BIGGEST_SHOWN]
        listed = ", ".join(f"{f.path} ({_size(f.size)})" for f in biggest)
        raise InvalidInput(
            f"the working directory {root} holds {_size(total)} ({total} bytes), over the "
            f"snapshot cap of {_size(max_bytes)} ({max_bytes} bytes); biggest files: "
            f"{listed}. Add what the job does not need to .gitignore, or raise the cap "
            "(compute.snapshot_max_bytes)."
        )
    return files


def _walk(
    root: Path, directory: Path, prefix: str, specs: list[tuple[str, Any]], notes: list[str]
) -> Iterator[SnapshotFile]:
    """Files under ``directory`` (``prefix`` is its path in the snapshot, with a
    trailing slash) that no ``.gitignore`` from ``specs`` (outermost first) excludes."""
    ignore_file = directory / ".gitignore"
    if ignore_file.is_file() and not ignore_file.is_symlink():
        specs = [*specs, (prefix, _spec(ignore_file))]
    with os.scandir(directory) as entries:
        ordered = sorted(entries, key=lambda e: e.name)
    for entry in ordered:
        rel = prefix + entry.name
        if entry.name == ".git":
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        if _ignored(specs, rel, is_dir):
            continue
        if is_dir:
            if (Path(entry.path) / HOME_MARK).exists():
                notes.append(f"{rel}/: a Plinth home (its database and stores), left out")
                continue
            yield from _walk(root, Path(entry.path), rel + "/", specs, notes)
            continue
        found = _regular_file(root, Path(entry.path), rel, notes)
        if found is not None:
            yield found


def _regular_file(root: Path, path: Path, rel: str, notes: list[str]) -> SnapshotFile | None:
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root):
            notes.append(f"{rel}: a symlink out of the directory (to {target}), left out")
            return None
        if not target.exists():
            notes.append(f"{rel}: a broken symlink, left out")
            return None
        if target.is_dir():
            notes.append(f"{rel}: a symlinked directory, not followed")
            return None
        path = target  # inside the tree: stored as the file it names
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        notes.append(f"{rel}: not a regular file, left out")
        return None
    return SnapshotFile(rel, path, info.st_size, bool(info.st_mode & 0o111))


def _spec(ignore_file: Path) -> Any:
    try:
        import pathspec
    except ImportError as error:  # a core dependency; this only guards a broken install
        raise PlinthError(
            "pathspec is not installed (plinth needs it to read .gitignore): pip install pathspec"
        ) from error
    lines = ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ignored(specs: list[tuple[str, Any]], rel: str, is_dir: bool) -> bool:
    """Git's rule: the deepest ``.gitignore`` with a matching pattern decides, and
    within a file the last matching pattern (``!`` re-includes)."""
    for base, spec in reversed(specs):
        local = rel[len(base) :] + ("/" if is_dir else "")
        decision = spec.check_file(local).include
        if decision is not None:
            return bool(decision)
    return False


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# -- packing -------------------------------------------------------------------------


def pack(root: Path, max_bytes: int, skipped: list[str] | None = None) -> bytes:
    """A deterministic tar of ``collect(root, max_bytes)``: the same tree always gives
    the same bytes, whatever the files' times, owners or the order the OS lists them."""
    buffer = io.BytesIO()
    written = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for file in collect(root, max_bytes, skipped):
            content = file.source.read_bytes()  # read once: its size is what we store
            written += len(content)
            if written > max_bytes:
                raise InvalidInput(
                    f"the working directory grew past the snapshot cap of {_size(max_bytes)} "
                    f"while it was packed ({file.path} is now {_size(len(content))})"
                )
            archive.addfile(_member(file.path, len(content), file.executable), io.BytesIO(content))
    return buffer.getvalue()


def _member(path: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = _MODE_EXECUTABLE if executable else _MODE_PLAIN
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


# -- unpacking -----------------------------------------------------------------------


def unpack(data: bytes | Path, dest: Path, max_bytes: int | None = None) -> list[str]:
    """Extract a snapshot (its bytes, or the file holding them) into ``dest`` (created,
    or an empty directory) and return the paths written. Anything but plain relative
    regular files is refused with InvalidInput before it is written, and so is more
    than ``max_bytes`` in all (default: the archive's own length, which an honest plain
    tar never exceeds); on refusal whatever was written is removed again."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise InvalidInput(f"{dest} is not empty: a snapshot unpacks into an empty directory")
    if isinstance(data, bytes | bytearray):
        source: io.BufferedIOBase = io.BytesIO(data)
        limit = len(data) if max_bytes is None else max_bytes
    else:
        source = open(data, "rb")  # noqa: SIM115 (closed below, after the archive)
        limit = os.fstat(source.fileno()).st_size if max_bytes is None else max_bytes
    try:
        with source:
            return _extract(source, dest, limit)
    except (tarfile.TarError, InvalidInput, OSError, ValueError) as error:  # ValueError:
        _empty(dest)  # a header tarfile cannot parse (a malformed PAX sparse map)
        if isinstance(error, InvalidInput):
            raise
        # an OSError's own words only: its file name is a path on the server
        why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InvalidInput(f"not a readable snapshot archive: {why[:200]}") from error


def _extract(source: io.BufferedIOBase, dest: Path, limit: int) -> list[str]:
    written: list[str] = []
    seen: set[str] = set()
    total = 0
    with tarfile.open(fileobj=source, mode="r:") as archive:  # plain tar: nothing to inflate
        for member in archive:
            relative = _safe_name(member, seen)
            total += member.size
            if total > limit:
                raise InvalidInput(f"the snapshot holds more than its cap of {limit} bytes")
            _write(archive, member, dest, relative)
            written.append(relative.as_posix())
            seen.add(relative.as_posix())
    return written


def _safe_name(member: tarfile.TarInfo, seen: set[str]) -> PurePosixPath:
    name = member.name
    shown = repr(name) if len(name) <= 200 else repr(name[:200]) + "…"
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse is not None:
        raise InvalidInput(f"snapshot entry {shown} is not a regular file: refused")
    path = PurePosixPath(name)
    if not name or path.is_absolute() or "\\" in name:
        raise InvalidInput(f"snapshot entry {shown} is not a relative path: refused")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise InvalidInput(f"snapshot entry {shown} is not a plain relative path: refused")
    if path.as_posix() in seen:
        raise InvalidInput(f"snapshot entry {shown} appears twice: refused")
    return path


def _write(
    archive: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, rel: PurePosixPath
) -> None:
    target = dest.joinpath(*rel.parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise InvalidInput(f"snapshot entry {member.name!r} would land outside {dest}: refused")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = archive.extractfile(member)
    if source is None:
        raise InvalidInput(f"snapshot entry {member.name!r} has no content")
    mode = _MODE_EXECUTABLE if member.mode & 0o111 else _MODE_PLAIN
    with source, open(target, "xb") as out:  # x: never through an existing file or link
        remaining = member.size
        while remaining:
            chunk = source.read(min(remaining, 1 << 20))
            if not chunk:
                raise InvalidInput(f"snapshot entry {member.name!r} is truncated")
            out.write(chunk)
            remaining -= len(chunk)
    os.chmod(target, mode)


def _empty(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
