"""The inference server's ASGI app: one loaded model version behind the v1 predict
protocol, the Open Inference Protocol v2, health and readiness, and Prometheus
metrics. Every answer names the version that produced it (``X-Plinth-Model-Version``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from plinth.errors import NotFound, PlinthError, ServiceUnavailable
from plinth.serving import asgi, frames, protocol
from plinth.serving.asgi import Receive, Scope, Send
from plinth.serving.batching import Batcher, BatchLimits
from plinth.serving.metrics import ServingMetrics
from plinth.serving.model import ServedModel

log = logging.getLogger("plinth.serving")
RETRY_AFTER_SECONDS = 1  # shed load clears as fast as a batch runs


@dataclass(frozen=True)
class AppLimits:
    batching: BatchLimits = field(default_factory=BatchLimits)
    max_body_bytes: int = 8 << 20


class MethodNotAllowed(PlinthError):
    status_code = 405


class ServingApp:
    """``ServingApp(model, limits)`` is an ASGI application."""

    def __init__(self, model: ServedModel, limits: AppLimits = AppLimits()) -> None:
        self.model = model
        self.limits = limits
        self.metrics = ServingMetrics(queue_depth=lambda: self.batcher.depth)
        self.batcher = Batcher(model.predictor.predict, limits.batching, self.metrics.observe_batch)
        self._version_header = (b"x-plinth-model-version", model.label.encode())
        self._pid = os.getpid()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.batcher.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        try:
            if path.endswith(":predict") and path.startswith("/v1/models/"):
                await self._predict(scope, receive, send, "v1", path[11:-8])
            elif path.startswith("/v2/models/") and path.endswith("/infer"):
                await self._predict(scope, receive, send, "v2", path[11:-6])
            else:
                await self._read(method, path, send)
        except PlinthError as exc:
            await self._error(send, exc)
        except Exception:
            log.exception("serving %s %s failed", method, path)
            await self._error(send, PlinthError("the server failed to answer: see its log"))

    async def _read(self, method: str, path: str, send: Send) -> None:
        """The GET endpoints: health, readiness, metadata and metrics."""
        if method not in ("GET", "HEAD"):
            if path in _READS or path.startswith("/v2/models/"):
                raise MethodNotAllowed(f"{method} {path} is not allowed: use GET")
            raise NotFound(f"no such endpoint: {path}")
        if path in ("/healthz", "/v2/health/live"):
            await self._json(send, 200, {"status": "ok", "pid": self._pid})
        elif path in ("/ready", "/v2/health/ready"):
            await self._json(send, 200, {"status": "ready", "model": self.model.label})
        elif path == "/metrics":
            body = self.metrics.exposition()
            kind = b"text/plain; version=0.0.4; charset=utf-8"
            await asgi.send_bytes(send, 200, body, kind, [self._version_header])
        elif path == "/v2":
            await self._json(send, 200, {"name": "plinth", "version": _version(), "extensions": []})
        elif path.startswith("/v2/models/") and path.endswith("/ready"):
            self._check_name(path[11:-6])
            await self._json(send, 200, {"name": self.model.name, "ready": True})
        elif path.startswith("/v2/models/") and "/" not in path[11:]:
            self._check_name(path[11:])
            await self._json(send, 200, protocol.v2_metadata(self.model))
        else:
            raise NotFound(f"no such endpoint: {path}")

    async def _predict(
        self, scope: Scope, receive: Receive, send: Send, kind: str, name: str
    ) -> None:
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{scope['method']} {scope['path']} is not allowed: use POST")
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        status = 500
        try:
            self._check_name(name)
            asgi.check_content_type(scope)
            body = await asgi.read_json(scope, receive, self.limits.max_body_bytes)
            answer = await self._answer(kind, body)
            status = 200
        except PlinthError as exc:
            status = exc.status_code
            raise
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(kind, str(status)).inc()
            self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
        await self._json(send, 200, answer)

    async def _answer(self, kind: str, body: Any) -> dict[str, Any]:
        if kind == "v1":
            inputs = self.model.coerce(protocol.v1_instances(body))
            return protocol.v1_answer(await self.batcher.submit(inputs, frames.rows(inputs)))
        payload, request_id = protocol.v2_instances(body, self.model)
        inputs = self.model.coerce(payload)
        predictions = await self.batcher.submit(inputs, frames.rows(inputs))
        return protocol.v2_answer(self.model, predictions, request_id)

    def _check_name(self, name: str) -> None:
        if name != self.model.name:
            raise NotFound(f"no model named {name!r} here: this server serves {self.model.name!r}")

    async def _json(self, send: Send, status: int, content: Any) -> None:
        await asgi.send_json(send, status, content, [self._version_header])

    async def _error(self, send: Send, error: PlinthError) -> None:
        headers = [self._version_header]
        if isinstance(error, ServiceUnavailable):
            headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
        self.metrics.errors.labels(str(error.status_code)).inc()
        await asgi.send_json(send, error.status_code, asgi.error_body(error), headers)


_READS = frozenset(("/healthz", "/ready", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready"))


def _version() -> str:
    from plinth import __version__

    return __version__
