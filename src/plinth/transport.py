"""Run the ASGI app in-process behind httpx, streaming both ways.

httpx's own ASGITransport is async-only and buffers whole responses; the SDK is
synchronous and moves multi-GB artifacts, so this transport runs the app on an event
loop in a background thread and hands bytes across with back-pressure: at most
``WINDOW`` response chunks wait for the caller at any time.

A request whose body is at hand and whose answer the caller reads whole (every JSON
call of the SDK: ``call``) skips httpx and runs on the caller's own thread, on an event
loop borrowed from a small pool: the hand-off to the app's thread and back, and httpx's
own machinery, cost more than most requests' work. A caller already inside a running
event loop (a notebook) is sent the other way.

The app's lifespan runs as under a server, as Starlette's TestClient runs it: start-up
recovery and background work (the stale-run reaper, later schedulers and monitors)
happen embedded exactly as served, and stop when the transport closes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx

log = logging.getLogger(__name__)
WINDOW = 8
_END = object()


class InProcessTransport(httpx.BaseTransport):
    def __init__(self, app: Any, host: str) -> None:
        self.app, self.host = app, host
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="plinth-app", daemon=True)
        self.thread.start()
        self._loops: list[asyncio.AbstractEventLoop] = []  # for inline requests
        self._pool_lock = threading.Lock()
        self.lifespan = _Lifespan(app, self.loop)
        try:
            self.lifespan.start()
        except BaseException:
            self._stop_loop()
            raise

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        exchange = _Exchange(request, self.loop)
        asyncio.run_coroutine_threadsafe(exchange.run(self.app), self.loop)
        status, headers = exchange.wait_start()
        return httpx.Response(status, headers=headers, stream=exchange, request=request)

    def call(
        self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> httpx.Response | None:
        """One request, whole, on the caller's thread; None from inside a running event
        loop, where the caller must use ``handle_request`` (through httpx) instead."""
        if asyncio._get_running_loop() is not None:
            return None
        scope = _scope(method, "http", self.host, unquote(path), path.encode(), query, headers)
        with self._pool_lock:
            loop = self._loops.pop() if self._loops else asyncio.new_event_loop()
        try:
            status, raw, content = loop.run_until_complete(_whole(self.app, scope, body))
        finally:
            with self._pool_lock:
                self._loops.append(loop)
        return httpx.Response(status, headers=raw, content=content)

    def close(self) -> None:
        if self.loop.is_running():
            self.lifespan.stop()
        self._stop_loop()
        with self._pool_lock:
            loops, self._loops = self._loops, []
        for loop in loops:
            loop.close()

    def _stop_loop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)


class _Lifespan:
    """The ASGI lifespan protocol, driven from the caller's thread."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.loop = app, loop
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.shutdown: asyncio.Event | None = None

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._run(), self.loop)
        self._expect("lifespan.startup")

    def stop(self, timeout: float = 30.0) -> None:
        if self.shutdown is not None:
            self.loop.call_soon_threadsafe(self.shutdown.set)
            self._expect("lifespan.shutdown", timeout)

    def _expect(self, phase: str, timeout: float | None = None) -> None:
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            log.warning("the app's %s did not finish within %s s", phase, timeout)
            return
        if message["type"] == f"{phase}.failed":
            raise RuntimeError(f"{phase} failed: {message.get('message', '')}")
        if "error" in message:
            raise message["error"]

    async def _run(self) -> None:
        self.shutdown = asyncio.Event()
        started = False
        # A client never closed lives until the interpreter exits: that is no leak.
        task: Any = asyncio.current_task()
        task._log_destroy_pending = False

        async def receive() -> dict[str, Any]:
            nonlocal started
            if not started:
                started = True
                return {"type": "lifespan.startup"}
            await self.shutdown.wait()  # type: ignore[union-attr]
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            self.messages.put(message)

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:  # the app's start-up raised: the caller sees it
            self.messages.put({"type": "error", "error": exc})


async def _whole(app: Any, scope: dict[str, Any], body: bytes) -> tuple[int, Any, bytes]:
    """One request whose body is at hand; its response gathered in memory."""
    start: dict[str, Any] = {}
    chunks: list[bytes] = []
    done = asyncio.Event()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await done.wait()
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    if not start:
        raise RuntimeError("the app returned no response")
    return start["status"], start.get("headers", []), b"".join(chunks)


def _scope(
    method: str,
    scheme: str,
    host: str,
    path: str,
    raw_path: bytes,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": (host, 80),
    }


class _Exchange(httpx.SyncByteStream):
    """One request/response between the caller's thread and the app's loop."""

    def __init__(self, request: httpx.Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.items: queue.Queue[Any] = queue.Queue()
        self.window = threading.Semaphore(WINDOW)
        self.closed = threading.Event()
        self.finished: asyncio.Event | None = None
        self.body_error: Exception | None = None  # the caller's body failed while sent

    async def run(self, app: Any) -> None:
        self.finished = asyncio.Event()
        body: Iterator[bytes] = iter(self.request.stream)  # type: ignore[arg-type]
        body_done = False
        started = False

        async def receive() -> dict[str, Any]:
            nonlocal body_done
            if body_done:
                await self.finished.wait()  # type: ignore[union-attr]
                return {"type": "http.disconnect"}
            try:
                chunk = next(body, None)
                while chunk == b"":
                    chunk = next(body, None)
            except Exception as exc:  # the caller's side broke: to the app, a disconnect
                self.body_error, body_done = exc, True
                return {"type": "http.disconnect"}
            if chunk is None:
                body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.items.put((message["status"], message.get("headers", [])))
            elif message["type"] == "http.response.body":
                if message.get("body") and not self.closed.is_set():
                    if not self.window.acquire(blocking=False):
                        await asyncio.to_thread(self.window.acquire)
                    self.items.put(message["body"])
                if not message.get("more_body", False):
                    self.items.put(_END)
                    self.finished.set()  # type: ignore[union-attr]

        url = self.request.url
        headers = [(k.lower(), v) for k, v in self.request.headers.raw]
        raw_path = url.raw_path.split(b"?")[0]
        scope = _scope(
            self.request.method, url.scheme, url.host, url.path, raw_path, url.query, headers
        )
        try:
            await app(scope, receive, send)
        except BaseException as exc:
            if started:  # the response already began: the caller sees it end early
                log.exception("error while streaming a response")
            self.items.put(exc)
        finally:
            if not started and self.body_error is not None:
                self.items.put(self.body_error)
            self.finished.set()

    def wait_start(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        item = self.items.get()
        if self.body_error is not None:  # the caller's own error, as over a network
            raise self.body_error
        if isinstance(item, BaseException):
            raise item
        return item

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self.items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise httpx.ReadError(f"response ended early: {item}") from item
            self.window.release()
            yield item

    def close(self) -> None:
        self.closed.set()
        for _ in range(WINDOW):
            self.window.release()
