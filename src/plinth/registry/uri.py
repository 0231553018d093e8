"""``models:/PROJECT/NAME/VERSION`` and ``models:/PROJECT/NAME@ALIAS``: how a model
version is named wherever one is expected (SDK, CLI, serving, deployments)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from plinth.core.names import is_project_name
from plinth.errors import InvalidInput

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
ALIAS = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"  # never all digits: 3 is a version
_MODEL_NAME = re.compile(MODEL_NAME)
_ALIAS = re.compile(ALIAS)
_URI = re.compile(r"^models:/([^/@]+)/([^/@]+)(?:/([^/@]+)|@([^/@]+))\Z")


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidInput(
            "a model name is 1-200 letters, digits, '_', '.', '-', starting with a letter or "
            f"digit; got {name!r}"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidInput(
            f"an alias is 1-64 letters, digits, '_', '-', starting with a letter; got {alias!r}"
        )
    return alias


@dataclass(frozen=True)
class ModelRef:
    project: str
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        tail = f"@{self.alias}" if self.alias else f"/{self.version}"
        return f"models:/{self.project}/{self.name}{tail}"


def parse(text: str) -> ModelRef:
    """A model URI, checked: ``models:/churn/churn@champion`` or ``models:/churn/churn/3``."""
    match = _URI.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(
            f"not a model URI: {text!r}; use models:/PROJECT/NAME/VERSION or "
            "models:/PROJECT/NAME@ALIAS"
        )
    project, name, version, alias = match.groups()
    if not is_project_name(project):
        raise InvalidInput(f"not a project name in {text!r}: {project!r}")
    check_model_name(name)
    if alias is not None:
        return ModelRef(project, name, alias=check_alias(alias))
    if not version.isdecimal() or not 0 < int(version) < 2**31:
        raise InvalidInput(f"a version is a positive whole number; got {version!r} in {text!r}")
    return ModelRef(project, name, version=int(version))
