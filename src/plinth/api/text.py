"""Text that can be stored and shown again, or a 422 naming the field.

Any Unicode string is welcome except two kinds of character that no store can keep:
NUL (Postgres text cannot hold it) and lone UTF-16 surrogates (UTF-8 cannot encode
them, so the page or JSON that shows one fails for every reader, long after the
request that stored it). JSON brings both through escapes (``"\\ud800"``,
``"\\u0000"``) and through bytes (``json.loads`` decodes UTF-8 with
``surrogatepass``, and accepts UTF-16 and UTF-32); URLs and forms bring NUL through
``%00``. A JSON body must be UTF-8, as RFC 8259 asks: one in UTF-16 or UTF-32 (whose
ASCII characters all carry a NUL byte, so each is scanned) is refused whole, so that
no check made on a body's bytes is read past.

``StorableText`` guards every route at once. The path, query string and headers are
checked before the app sees the request. JSON and form bodies are checked as the
app reads them: each chunk is scanned for bytes that could decode to such a
character (cheap), and only a body where some turn up is parsed again, as the app
parses it, and walked to name the field. The app never receives the last chunk of a
refused body, so it cannot store any of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from plinth.api.errors import error_for
from plinth.errors import Unprocessable

Scope = dict[str, Any]
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Bytes that may decode to NUL or a surrogate: a JSON escape of either, the lead byte
# of a surrogate in UTF-8, a raw NUL (also in every UTF-16 or UTF-32 body) and a form's
# ``%00``. Fixed strings: ``in`` scans them several times faster than one regex would,
# and a false alarm (Hangul, which shares those lead bytes) costs one more parse.
_SUSPECT = (b"\\ud", b"\\uD", b"\\u0000", b"\xed", b"\x00", b"%00")
_OVERLAP = 5  # a suspect sequence split between two chunks is still found
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _suspect(data: bytes) -> bool:
    return any(sequence in data for sequence in _SUSPECT)


def refusal(where: str, text: str) -> str:
    """Why ``text``, found at ``where``, is refused (without repeating it)."""
    found = _UNSTORABLE.search(text)
    assert found is not None
    code = ord(found.group())
    if code == 0:
        return f"{where}: text may not contain NUL (U+0000)"
    return (
        f"{where}: text may not contain a lone surrogate (U+{code:04X}); "
        "characters beyond U+FFFF are sent as a pair, or as UTF-8"
    )


def find_unstorable(value: Any) -> str | None:
    """The refusal for the first unstorable string in a parsed body, naming its field
    (``params.alpha``, ``metrics[0].key``); None when every string can be stored."""
    for where, text in _strings(value):
        if _UNSTORABLE.search(text):
            return refusal(where, text)
    return None


def _strings(value: Any) -> Iterator[tuple[str, str]]:
    """Every string in ``value`` (keys too) with its location; iterative, so a deeply
    nested body cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("body", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, inner in reversed(item.items()):
                if _UNSTORABLE.search(key):
                    yield f"a key in {where}", key
                stack.append((_field(where, key), inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", inner) for i, inner in reversed(list(enumerate(item))))


def _field(where: str, key: str) -> str:
    shown = key if not _UNSTORABLE.search(key) else ascii(key)
    return shown if where == "body" else f"{where}.{shown}"


def _utf8(data: bytes) -> bool:
    """Whether ``json.loads`` reads ``data`` as UTF-8 (it guesses UTF-16 and UTF-32 from
    where the first bytes hold NULs, as RFC 4627 said; such bytes may be UTF-8 too)."""
    return json.detect_encoding(data) in ("utf-8", "utf-8-sig")


def _content_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


def _parsed_body(content_type: str) -> bool:
    json_type = content_type.startswith("application/") and (
        content_type == "application/json" or content_type.endswith("+json")
    )
    return json_type or content_type in _FORMS


def check_url_and_headers(scope: Scope) -> str | None:
    """The refusal for the first unstorable path, query parameter or header."""
    if _UNSTORABLE.search(scope["path"]):
        return refusal("path", scope["path"])
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:  # parse only when it may hold a NUL
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if _UNSTORABLE.search(name):
                return refusal("a query parameter's name", name)
            if _UNSTORABLE.search(value):
                return refusal(f"query.{name}", value)
    for name, value in scope["headers"]:
        if b"\x00" in value:
            return refusal(f"header.{name.decode('latin-1')}", value.decode("latin-1"))
    return None


async def _check_body(scope: Scope, content_type: str, body: bytes) -> str | None:
    """Parse ``body`` as the app will and walk it; a body the app cannot parse is left
    to the app to refuse."""
    if content_type not in _FORMS:
        try:
            refused = find_unstorable(json.loads(body))
        except (ValueError, RecursionError):
            return None
        if refused is None and not _utf8(body):  # a UTF-16 or UTF-32 body: every one
            return "body: JSON must be sent as UTF-8 (RFC 8259), not UTF-16 or UTF-32"
        return refused
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, replay).form()
    except Exception:  # malformed: the app answers it as it would any bad form
        return None
    try:
        fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
        return find_unstorable(fields)
    finally:
        await form.close()


class StorableText:
    """ASGI middleware: a 422 for a request carrying text that cannot be stored."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = check_url_and_headers(scope)
        if refused is not None:
            await error_for(scope["path"], Unprocessable.__name__, refused, 422)(
                scope, receive, send
            )
            return
        content_type = _content_type(scope)
        if not _parsed_body(content_type):  # uploads stream through untouched
            await self.app(scope, receive, send)
            return
        await self.app(scope, _BodyScan(scope, content_type, receive), send)


class _BodyScan:
    """``receive`` for the app that scans the body as it passes, and raises a 422 in
    place of the last chunk of a body that holds unstorable text."""

    def __init__(self, scope: Scope, content_type: str, receive: Any) -> None:
        self.scope, self.content_type, self.receive = scope, content_type, receive
        self.chunks: list[bytes] = []
        self.suspect = False
        self.done = False

    async def __call__(self) -> Any:
        message = await self.receive()
        if self.done or message["type"] != "http.request":
            return message
        chunk = message.get("body", b"")
        if not self.suspect:
            seam = self.chunks[-1][-_OVERLAP:] + chunk[:_OVERLAP] if self.chunks else b""
            self.suspect = _suspect(chunk) or _suspect(seam)
        self.chunks.append(chunk)  # the app keeps these same bytes: no copy
        if message.get("more_body", False):
            return message
        self.done = True
        chunks, self.chunks = self.chunks, []
        if self.suspect:
            refused = await _check_body(self.scope, self.content_type, b"".join(chunks))
            if refused is not None:
                # FastAPI lets an HTTPException from reading the body through unchanged.
                raise HTTPException(422, refused)
        return message
