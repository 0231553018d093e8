"""The one transport and the ``Client`` that gathers every capability's calls.

With ``PLINTH_URL`` set, requests go over HTTP to that server; without it, to the same
ASGI app running in this process over the local home. Either way the same routes,
validation and services answer, so embedded and remote behave alike.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from plinth import errors
from plinth.capabilities import declared
from plinth.core.capability import load
from plinth.settings import Settings

log = logging.getLogger("plinth.client")
_RETRY_STATUSES = frozenset({502, 503, 504})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 5.0
BUSY_MAX_S = 10.0  # a 429's Retry-After up to this is waited out (idempotent requests)


# Runs whose create the SDK holds back (``tracking/run.py``), each with the call that
# has it made: every request of the process first makes them all, so whatever it asks
# (through any client) finds them.
HELD: dict[str, Callable[[], None]] = {}
# A forked child (a data loader's worker) has no flusher to send the parent's: they are
# the parent's to make, and the child's requests must not wait for them.
os.register_at_fork(after_in_child=HELD.clear)


class Transport:
    """Sends requests, retries what is safe to retry, raises Plinth errors.

    An idempotent request (every read; a write that carries an idempotency key says
    so with ``retry=True``) is sent again on 502, 503, 504, on a 429 that names a short
    ``Retry-After`` (a principal's uploads all busy) and on connection errors, with
    jittered exponential back-off, for ``settings.client.retry_seconds``: long enough
    to ride out a server or database restart. An upload whose ``content`` is a callable
    (it makes the body anew for each try: a file opened again) is idempotent too, its
    content being named by digest. Any other request is sent again only when it
    provably never left (the connection could not be made). A server this transport
    has never reached is reported at once, naming its URL: a wrong ``PLINTH_URL``
    should not look like a hang.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = server_url(settings.url) if settings.url else None
        self.where = self.url or f"{settings.home} (embedded)"  # for messages
        self._reached = self.url is None  # embedded: the app is right here
        self._retrying = False
        self._whole: Any = None  # sends whole requests past httpx (see ``_direct``)
        headers = {"User-Agent": "plinth-sdk"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        if self.url:
            from plinth.wire import KeepAlive

            timeout = httpx.Timeout(60.0, connect=10.0)
            self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
            if KeepAlive.usable(self.http.base_url):
                self._whole = KeepAlive(self.http.base_url, timeout=60.0, connect_timeout=10.0)
        else:
            from plinth.server.app import EMBEDDED_HOST, create_app
            from plinth.transport import InProcessTransport

            app = create_app(settings, embedded=True)
            self._whole = InProcessTransport(app, EMBEDDED_HOST)
            self.http = httpx.Client(
                base_url=f"http://{EMBEDDED_HOST}",
                headers=headers,
                transport=self._whole,
                timeout=None,
            )

    def request(self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any) -> Any:
        """JSON in, JSON out. ``retry``: whether the request is idempotent (by default,
        whether it is a read)."""
        if "json" in kwargs:
            kwargs["content"] = encode_json(kwargs.pop("json"))
            kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": "application/json"}
        response = self._send(method, path, retry=retry, whole=True, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise not_plinth(response, self.where) from None

    def text(self, method: str, path: str, **kwargs: Any) -> str:
        """A text answer (a rendered page or document), read whole."""
        return self._send(method, path, retry=None, whole=True, **kwargs).text

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives; opening it retries like
        ``request``, a connection lost mid-way is ``ServiceUnavailable``."""
        response = self._send(method, path, retry=None, stream=True, **kwargs)
        try:
            yield response
        except httpx.TransportError as exc:
            raise errors.ServiceUnavailable(
                f"connection to Plinth at {self.where} lost: {_reason(exc)}"
            ) from exc
        finally:
            response.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        retry: bool | None,
        stream: bool = False,
        whole: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        for made in list(HELD.values()):
            made()
        body: Any = kwargs.get("content")
        remade = callable(body)  # a body made anew for each try
        idempotent = (remade or method in _READS) if retry is None else retry
        window = self.settings.client.retry_seconds
        deadline = time.monotonic() + window
        for attempt in itertools.count():
            if remade:
                kwargs["content"] = body()
            wait = None
            try:
                response = (whole and self._direct(method, path, **kwargs)) or self.http.send(
                    self.http.build_request(method, path, **kwargs), stream=stream
                )
            except httpx.TransportError as exc:
                unsent = isinstance(exc, httpx.ConnectError)
                again = self._reached and (idempotent or unsent)
                if not again or time.monotonic() >= deadline:
                    raise errors.ServiceUnavailable(
                        f"cannot reach Plinth at {self.where}: {_reason(exc)}"
                    ) from exc
                why = _reason(exc)
            else:
                self._reached = True
                wait = _busy_for(response)
                failed = response.status_code in _RETRY_STATUSES or wait is not None
                self._retrying = self._retrying and failed  # any other answer ends it
                if not (idempotent and failed) or time.monotonic() >= deadline:
                    return _checked(response, self.where)
                response.close()
                why = f"HTTP {response.status_code}"
            self._back_off(attempt, deadline, why, window, at_least=wait or 0.0)
        raise AssertionError("unreachable")

    def _direct(
        self,
        method: str,
        path: str,
        *,
        content: bytes | str | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        **other: Any,
    ) -> httpx.Response | None:
        """A request with its body at hand, read whole, skips httpx: embedded it goes
        straight to the app on this thread (``transport``), served over a kept-alive
        connection (``wire``). None where it must go through httpx."""
        if self._whole is None or other or not isinstance(content, bytes | str | None):
            return None
        body = content.encode() if isinstance(content, str) else content or b""
        fields = {
            **self.http.headers,
            **(headers or {}),
            "host": self._whole.host,
            "content-length": str(len(body)),
        }
        raw = [(k.lower().encode(), v.encode()) for k, v in fields.items()]
        query = urlencode(params or {}, doseq=True).encode()
        response: httpx.Response | None = self._whole.call(method, path, query, raw, body)
        return response

    def _back_off(
        self, attempt: int, deadline: float, why: str, window: float, at_least: float = 0.0
    ) -> None:
        """Sleep before trying again: exponential, capped, jittered so that clients
        that failed together do not all come back together; never less than the
        server asked for (``at_least``)."""
        if not self._retrying:  # once per outage, not once per request
            self._retrying = True
            log.warning(
                "plinth: Plinth at %s: %s; retrying for up to %g s", self.where, why, window
            )
        delay = random.uniform(0.5, 1.0) * min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)
        delay = max(delay, at_least * random.uniform(1.0, 1.5))
        time.sleep(max(0.0, min(delay, deadline - time.monotonic())))

    def close(self) -> None:
        if self.url and self._whole is not None:
            self._whole.close()
        self.http.close()


def server_url(url: str) -> str:
    """A server URL checked once, up front: ``http(s)://host[:port][/prefix]``."""
    try:
        parsed: httpx.URL | None = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if (
        parsed is None
        or parsed.scheme not in ("http", "https")
        or not parsed.host
        or not 0 < (parsed.port or 80) < 65536
    ):
        raise errors.InvalidInput(
            f"not a Plinth server URL: {url!r}; PLINTH_URL looks like http://HOST:PORT"
        )
    return url.rstrip("/")


_REASONS = (
    ("refused", "connection refused"),
    ("name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("name resolution", "unknown host"),
    ("disconnected without sending a response", "the server closed the connection"),
    ("wrong_version_number", "it does not speak TLS (try http://)"),
)


def _reason(exc: httpx.TransportError) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    text = str(exc).strip()
    for needle, reason in _REASONS:
        if needle in text.lower():
            return reason
    return text.splitlines()[0] if text else type(exc).__name__


def encode_json(value: Any) -> str:
    """A request's JSON body (NaN and the infinities are legitimate metric values)."""
    return json.dumps(value, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (and the like) as plain JSON values."""
    for method in ("item", "tolist"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise errors.InvalidInput(f"cannot send a {type(value).__name__} as JSON")


def _busy_for(response: httpx.Response) -> float | None:
    """Seconds a 429 asks the caller to wait before the same request may succeed (its
    ``Retry-After``, when short); None for any other answer, or a 429 not worth waiting
    for here (too many failed logins)."""
    if response.status_code != 429:
        return None
    try:
        after = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return after if 0 <= after <= BUSY_MAX_S else None


def _checked(response: httpx.Response, where: str) -> httpx.Response:
    if response.status_code >= 400:
        response.read()
        response.close()
        raise_for_error(response, where)
    return response


def raise_for_error(response: httpx.Response, where: str = "the server") -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        if "error_code" in body:  # Plinth's MLflow API answers in MLflow's shape
            kind, message = _MLFLOW_KINDS.get(response.status_code, ""), body["message"]
        else:
            kind, message = body["error"]["type"], body["error"]["message"]
    except Exception:
        raise not_plinth(response, where) from None
    raise errors.from_response(kind, message, response.status_code)


_MLFLOW_KINDS = {400: "InvalidInput", 403: "PermissionDenied", 404: "NotFound", 409: "Conflict"}


def not_plinth(response: httpx.Response, where: str) -> errors.PlinthError:
    """An answer without Plinth's JSON: a proxy's error page, or another server."""
    status = response.status_code
    if status in _RETRY_STATUSES:
        return errors.ServiceUnavailable(f"Plinth at {where} is unavailable (HTTP {status})")
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return errors.from_response(
        "PlinthError",
        f"{where} did not answer as a Plinth server (HTTP {status}, {kind}); check PLINTH_URL",
        status if status >= 400 else 502,
    )


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
