"""How a dataset version is named: ``churn@3`` (a version), ``churn`` or
``churn@latest`` (the newest). Light to import: the CLI and the SDK check names here."""

from __future__ import annotations

import re
from dataclasses import dataclass

from plinth.errors import InvalidInput

DATASET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
_DATASET_NAME = re.compile(DATASET_NAME)
LATEST = "latest"


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        raise InvalidInput(
            "a dataset name is 1-200 letters, digits, '_', '.', '-', starting with a letter "
            f"or digit; got {name!r}"
        )
    return name


@dataclass(frozen=True)
class DatasetRef:
    name: str
    version: int | None = None  # None: the newest

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else LATEST}"

    @property
    def selector(self) -> str:
        """The version as a URL names it: a number, or ``latest``."""
        return LATEST if self.version is None else str(self.version)


def parse_ref(text: str) -> DatasetRef:
    """``NAME``, ``NAME@VERSION`` or ``NAME@latest``, checked."""
    if not isinstance(text, str):
        raise InvalidInput(f"not a dataset version: {text!r}")
    name, at, version = text.partition("@")
    check_dataset_name(name)
    if not at or version == LATEST:
        return DatasetRef(name)
    return DatasetRef(name, parse_version(version, text))


def parse_version(version: str, where: str | None = None) -> int:
    if not version.isascii() or not version.isdecimal() or not 0 < int(version) < 2**31:
        raise InvalidInput(
            f"a dataset version is a positive whole number or {LATEST!r}; got {version!r}"
            + (f" in {where!r}" if where else "")
        )
    return int(version)
