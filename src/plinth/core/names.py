"""Names users choose that the kernel checks: light enough for the SDK to import."""

from __future__ import annotations

import re

from plinth.errors import InvalidInput

PROJECT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
_PROJECT_NAME = re.compile(PROJECT_NAME)


def is_project_name(name: object) -> bool:
    return isinstance(name, str) and _PROJECT_NAME.fullmatch(name) is not None


def check_project_name(name: str) -> str:
    if not is_project_name(name):
        raise InvalidInput(
            "a project name is 1-200 letters, digits, '_', '.', '-', starting with a letter "
            f"or digit; got {name!r}"
        )
    return name
