"""SecurityHeaders: the content security policy goes on every HTML response, whatever
its charset or the case of its media type, and on nothing else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from plinth.api.middleware import SecurityHeaders


def _headers(
    content_type: bytes,
    request: list[tuple[bytes, bytes]] | None = None,
    path: str = "/page",
    response: list[tuple[bytes, bytes]] | None = None,
) -> dict[bytes, bytes]:
    """The headers SecurityHeaders sends for a response of ``content_type`` (and
    ``response``'s headers) to a request of ``path`` with ``request``'s headers."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", content_type), *(response or [])]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<p>hi</p>"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": path, "method": "GET", "headers": request or []}
    asyncio.run(SecurityHeaders(app)(scope, receive, send))
    return dict(sent[0]["headers"])


@pytest.mark.parametrize(
    "content_type",
    [
        b"text/html; charset=utf-8",
        b"text/html",
        b"text/html; charset=iso-8859-1",
        b"text/html;charset=windows-1252",
        b"Text/HTML; Charset=UTF-8",
        b" text/html ; charset=utf-8",
    ],
)
def test_every_html_response_gets_the_policy(content_type: bytes) -> None:
    policy = _headers(content_type)[b"content-security-policy"]
    assert b"style-src 'self';" in policy
    assert b"unsafe-inline" not in policy
    assert b"frame-ancestors 'none'" in policy


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"text/plain; charset=utf-8", b"text/html-fragment", b"text/css"],
)
def test_other_responses_get_no_policy(content_type: bytes) -> None:
    headers = _headers(content_type)
    assert b"content-security-policy" not in headers
    assert headers[b"x-content-type-options"] == b"nosniff"


@pytest.mark.parametrize(
    "request_headers",
    [[(b"authorization", b"Bearer plt_x")], [(b"cookie", b"plinth_session=abc")]],
)
def test_an_answer_to_a_signed_request_is_not_cached(
    request_headers: list[tuple[bytes, bytes]],
) -> None:
    for kind in (b"application/json", b"text/html; charset=utf-8", b"text/plain"):
        assert _headers(kind, request_headers)[b"cache-control"] == b"no-store"
    static = _headers(b"text/css", request_headers, path="/ui/static/style.css")
    assert b"cache-control" not in static  # the same for everyone: may be kept
    own = _headers(
        b"application/json", request_headers, response=[(b"cache-control", b"max-age=9")]
    )
    assert own[b"cache-control"] == b"max-age=9"  # a route's own choice stands


def test_an_anonymous_answer_keeps_its_caching() -> None:
    assert b"cache-control" not in _headers(b"application/json")
