"""The one transport and the ``Client`` that gathers every capability's calls.

With ``PLINTH_URL`` set, requests go over HTTP to that server; without it, to the same
ASGI app running in this process over the local home. Either way the same routes,
validation and services answer, so embedded and remote behave alike.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from plinth import errors
from plinth.capabilities import declared
from plinth.core.capability import load
from plinth.settings import Settings

_RETRY_STATUSES = {502, 503, 504}


class Transport:
    """Sends requests, retries what is safe to retry, raises Plinth errors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        headers = {"User-Agent": "plinth-sdk"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        if settings.url:
            self.http = httpx.Client(
                base_url=settings.url.rstrip("/"),
                headers=headers,
                timeout=httpx.Timeout(60.0, connect=10.0),
            )
        else:
            from plinth.server.app import EMBEDDED_HOST, create_app
            from plinth.transport import InProcessTransport

            app = create_app(settings, embedded=True)
            self.http = httpx.Client(
                base_url=f"http://{EMBEDDED_HOST}",
                headers=headers,
                transport=InProcessTransport(app),
                timeout=None,
            )

    def request(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> Any:
        """JSON in, JSON out. ``retry`` is for requests that are idempotent."""
        if "json" in kwargs:  # NaN and infinities are legitimate metric values
            kwargs["content"] = json.dumps(
                kwargs.pop("json"), separators=(",", ":"), default=_plain
            )
            kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": "application/json"}
        response = self._send(method, path, retry=retry, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _send(self, method: str, path: str, *, retry: bool, **kwargs: Any) -> httpx.Response:
        attempts = 8 if retry else 1
        for attempt in range(attempts):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == attempts - 1:
                    raise errors.ServiceUnavailable(f"cannot reach Plinth: {exc}") from exc
            else:
                if response.status_code not in _RETRY_STATUSES or attempt == attempts - 1:
                    raise_for_error(response)
                    return response
            time.sleep(min(0.1 * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for_error(response)
                yield response
        except httpx.TransportError as exc:
            raise errors.ServiceUnavailable(f"connection to Plinth lost: {exc}") from exc

    def close(self) -> None:
        self.http.close()


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (and the like) as plain JSON values."""
    for method in ("item", "tolist"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise errors.InvalidInput(f"cannot send a {type(value).__name__} as JSON")


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        err = response.json()["error"]
        kind, message = err["type"], err["message"]
    except Exception:
        kind, message = "PlinthError", response.text[:500] or response.reason_phrase
    raise errors.from_response(kind, message, response.status_code)


def _calls() -> tuple[type, ...]:
    """Every capability's SDK calls, mixed into ``Client``; a test checks no two
    capabilities define the same method name."""
    return tuple(load(path) for capability in declared() for path in capability.calls)


class Client(*_calls()):  # type: ignore[misc]
    """Plinth's SDK in one flat API: ``Client().search_runs(...)``.

    Reads ``PLINTH_*`` settings unless given some; ``url``/``token``/``home`` override.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        home: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings()
        overrides: dict[str, Any] = {k: v for k, v in {"url": url, "token": token}.items() if v}
        if home:
            overrides["home"] = Path(home)
        if overrides:
            settings = settings.model_copy(update=overrides)
        self.settings = settings
        self._transport = Transport(settings)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: dict[tuple[Any, ...], Client] = {}
_default_lock = threading.Lock()


def default_client() -> Client:
    """One client per process and settings, for ``plinth.start_run`` without a client."""
    settings = Settings()
    key = (
        settings.url,
        settings.token,
        str(settings.home),
        settings.database_url,
        settings.artifacts_url,
    )
    with _default_lock:
        if key not in _default:
            _default[key] = Client(settings=settings)
        return _default[key]
