"""One line per request, for ``plinth server``: method, path, status and milliseconds.

The path is the raw one as sent, without the query string (which may carry values a
log should not keep), and with anything unprintable escaped so that a request cannot
forge lines of its own. Headers (and so tokens and cookies) are never logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

log = logging.getLogger("plinth.access")


class AccessLog:
    """ASGI middleware: logs each HTTP request to ``plinth.access`` when it ends."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app fails before responding

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ms = (time.perf_counter() - started) * 1000
            log.info("%s %s %d %.1f ms", scope["method"], request_path(scope), status, ms)


def request_path(scope: dict[str, Any]) -> str:
    """The path as the client sent it (percent-encoded, so printable), no query."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    path = path.partition("?")[0]
    return "".join(c if c.isprintable() and c.isascii() else quote(c) for c in path)
