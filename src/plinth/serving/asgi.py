"""The few HTTP mechanics the serving app needs, on raw ASGI: reading a bounded JSON
body, refusing what it will never parse (or could not keep: json_limits), and
answering JSON.

Raw ASGI because a prediction is a small request on the hot path: no framework
request or response objects are built for it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from plinth.api.media import media_type, refuse_pickle
from plinth.errors import (
    InvalidInput,
    PayloadTooLarge,
    PlinthError,
    RequestTimeout,
    UnsupportedMediaType,
)
from plinth.serving.json_limits import MAX_DEPTH, lone_surrogate, too_deep

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def check_content_type(scope: Scope) -> None:
    """Only JSON is parsed. Pickle is refused outright: unpickling a request runs any
    code the caller put in it."""
    content_type = header(scope, b"content-type")
    refuse_pickle(content_type)
    kind = media_type(content_type)
    if kind.startswith(("multipart/", "image/", "audio/", "video/")) or kind in (
        "application/octet-stream",
        "application/x-npy",
        "application/msgpack",
    ):
        raise UnsupportedMediaType(f"{kind} is not accepted: send JSON")


async def read_json(scope: Scope, receive: Receive, limit: int, idle: float = 30.0) -> Any:
    """The request's JSON body, refused past ``limit`` bytes before it is all read, or
    when it stops arriving for ``idle`` seconds (a stalled client holds no slot); and
    refused when it nests deeper than ``MAX_DEPTH`` or holds a lone surrogate (a
    ``\\ud800`` escape alone), which no model input needs and no record could keep."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdecimal() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    while True:
        try:
            async with asyncio.timeout(idle):
                message = await receive()
        except TimeoutError:
            raise RequestTimeout(f"no request bytes for {idle:g} s; send faster or retry") from None
        if message["type"] == "http.disconnect":
            raise InvalidInput("the client went away before sending its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if not size:
        raise InvalidInput("the body is empty: send a JSON object")
    body = b"".join(chunks)
    if too_deep(body):  # before parsing: deep enough, it would exhaust the parser
        raise InvalidInput(f"the body nests arrays and objects more than {MAX_DEPTH} deep")
    try:  # UTF-8 only (JSON's own rule): json.loads would take UTF-16 and UTF-32 bytes
        # too, which the depth and surrogate checks above, reading bytes, do not see
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON in UTF-8: {exc}") from None
    if lone_surrogate(value, body):
        raise InvalidInput("the body holds a lone surrogate (\\ud800 to \\udfff): not text")
    return value


async def send_json(
    send: Send, status: int, content: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(content, separators=(",", ":")).encode()
    await send_bytes(send, status, body, b"application/json", headers)


async def send_bytes(
    send: Send, status: int, body: bytes, kind: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_body(error: PlinthError) -> dict[str, Any]:
    return {"error": {"type": type(error).__name__, "message": error.message}}
