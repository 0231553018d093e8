"""Run the ASGI app in-process behind httpx, streaming both ways.

httpx's own ASGITransport is async-only and buffers whole responses; the SDK is
synchronous and moves multi-GB artifacts, so this transport runs the app on an event
loop in a background thread and hands bytes across with back-pressure: at most
``WINDOW`` response chunks wait for the caller at any time.

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

import httpx

log = logging.getLogger(__name__)
WINDOW = 8
_END = object()


class InProcessTransport(httpx.BaseTransport):
    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="plinth-app", daemon=True)
        self.thread.start()
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

    def close(self) -> None:
        if self.loop.is_running():
            self.lifespan.stop()
        self._stop_loop()

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


class _Exchange(httpx.SyncByteStream):
    """One request/response between the caller's thread and the app's loop."""

    def __init__(self, request: httpx.Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.items: queue.Queue[Any] = queue.Queue()
        self.window = threading.Semaphore(WINDOW)
        self.closed = threading.Event()
        self.finished: asyncio.Event | None = None

    def scope(self) -> dict[str, Any]:
        url = self.request.url
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in self.request.headers.raw],
            "client": ("127.0.0.1", 0),
            "server": (url.host, url.port or 80),
        }

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
            chunk = next(body, None)
            while chunk == b"":
                chunk = next(body, None)
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

        try:
            await app(self.scope(), receive, send)
        except BaseException as exc:
            if started:  # the response already began: the caller sees it end early
                log.exception("error while streaming a response")
                self.items.put(exc)
            else:
                self.items.put(exc)
        finally:
            self.finished.set()

    def wait_start(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        item = self.items.get()
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
