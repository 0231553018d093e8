"""Request bodies no Plinth server parses: pickle above all, since unpickling a
request runs any code its sender put in it. The API server and the model server
refuse them alike, with 415, before any route sees the body."""

from __future__ import annotations

from plinth.errors import UnsupportedMediaType

_PICKLE_LIKE = ("application/python-serialize", "application/x-python")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def refuse_pickle(content_type: str | None) -> None:
    kind = media_type(content_type)
    if "pickle" in kind or kind in _PICKLE_LIKE:
        raise UnsupportedMediaType(
            f"{kind} is refused: request bodies are never unpickled; send JSON "
            "(Content-Type: application/json)"
        )
