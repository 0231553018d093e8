"""Where the served version comes from: a local directory holding a saved model, or a
``models:/PROJECT/NAME@ALIAS`` / ``models:/PROJECT/NAME/VERSION`` URI downloaded from
the registry into a cache under the Plinth home (verified against the version's
digest by ``Client.download_model``).

Pickle is a decision made here, once: a registry version may load with pickle only
when an admin marked it ``unsafe_pickle``; a local directory only when the caller
passed ``--unsafe-pickle``. A registry version is served only if a deployment could
serve it (``registry/servable.py``): never an archived one, by number or by alias.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plinth.errors import InvalidInput, NotFound
from plinth.serving.model import refuse_pickle

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.registry.schemas import ModelVersion

URI_PREFIX = "models:/"


@dataclass(frozen=True)
class Resolved:
    directory: Path
    name: str
    version: str
    allow_pickle: bool
    digest: str | None = None  # a registry version's: checked again when it loads


def resolve(
    source: str, *, home: Path, name: str | None = None, unsafe_pickle: bool = False
) -> Resolved:
    """The directory to load, the name and version to answer as, and whether pickle
    may run; refuses early (one clear line) what the workers would refuse later."""
    if source.startswith(URI_PREFIX):
        if unsafe_pickle:
            raise InvalidInput(
                "--unsafe-pickle is for a local directory only: a registry version loads "
                "with pickle only when a project admin marked it unsafe_pickle"
            )
        return _download(source, home, name)
    return _local(Path(source), name, unsafe_pickle)


def _local(directory: Path, name: str | None, unsafe_pickle: bool) -> Resolved:
    from plinth.registry.flavors import read_meta

    if not (directory / "MLmodel.json").is_file():
        if not directory.exists():
            raise NotFound(f"no such directory: {directory}")
        raise InvalidInput(
            f"{directory} holds no saved model (no MLmodel.json): pass a directory written "
            "by save_model, or a models:/PROJECT/NAME@ALIAS URI"
        )
    meta = read_meta(directory)
    refuse_pickle(meta, unsafe_pickle, "Pass --unsafe-pickle only if you trust its files.")
    model_name = name or directory.resolve().name
    return Resolved(directory, model_name, "local", allow_pickle=unsafe_pickle)


def _download(uri: str, home: Path, name: str | None) -> Resolved:
    from plinth.client import Client
    from plinth.registry.flavors import read_meta
    from plinth.registry.servable import check_servable

    with Client() as client:
        found = client.get_model_version(uri)
        check_servable(found, uri)  # the check a deployment makes, before any download
        # By number: an alias that moves meanwhile does not change what was checked.
        version, directory = _fetch(client, found.uri, home)
    meta = read_meta(directory)
    refuse_pickle(
        meta,
        version.unsafe_pickle,
        f"A platform admin must mark version {version.version} of {version.name!r} "
        "unsafe_pickle before it can be served.",
    )
    return Resolved(
        directory,
        name or version.name,
        str(version.version),
        allow_pickle=version.unsafe_pickle,
        digest=version.digest,
    )


def _fetch(client: Client, uri: str, home: Path) -> tuple[ModelVersion, Path]:
    """The version's files in the cache, kept by the version's digest: no name from the
    server reaches the filesystem, and a copy another process is loading is never
    replaced (the same digest, the same bytes: whoever renames first wins and the
    other uses theirs)."""
    from plinth.tracking.schemas import DIGEST

    cache = home / "serving" / "models" / "by-digest"
    cache.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=cache))
    try:
        version = client.download_model(uri, incoming)
        if not re.fullmatch(DIGEST, version.digest):
            raise InvalidInput(f"the server named {uri} by a digest that is not one")
        directory = cache / version.digest
        try:
            incoming.rename(directory)
        except OSError:
            if not (directory / "MLmodel.json").is_file():
                raise
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return version, directory
