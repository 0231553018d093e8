"""The inference server's ASGI app: one loaded model version behind the v1 predict
protocol, the Open Inference Protocol v2, health and readiness, and Prometheus
metrics. Every answer names the version that produced it (``X-Plinth-Model-Version``).

The app serves a ``Split`` (see split.py): one version for ``plinth serve``, or a
deployment replica's versions, each with its own batcher. A replica also answers
``/admin/config`` (GET, POST), for its control plane only (a secret it was given).

Every prediction answer carries a prediction id (``X-Plinth-Prediction-Id``, and the
v2 body's ``id`` when the request gave none); with a ``Recorder`` (records.py) a
sample of answers, the shadow's included, is recorded under that id.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from plinth.errors import InvalidInput, NotFound, PlinthError, ServiceUnavailable
from plinth.serving import asgi, frames, protocol
from plinth.serving.asgi import Receive, Scope, Send
from plinth.serving.batching import Batcher, BatchLimits
from plinth.serving.metrics import ServingMetrics
from plinth.serving.model import ServedModel
from plinth.serving.records import Recorder
from plinth.serving.split import Split, apply_config, authorized

log = logging.getLogger("plinth.serving")
RETRY_AFTER_SECONDS = 1  # shed load clears as fast as a batch runs


@dataclass(frozen=True)
class AppLimits:
    batching: BatchLimits = field(default_factory=BatchLimits)
    max_body_bytes: int = 8 << 20
    body_idle_seconds: float = 30.0  # a body that stops arriving this long gets 408
    # Host headers answered on the TCP port (DNS-rebinding defence: a web page whose
    # name leads to 127.0.0.1 may not call a model on this machine); ``*.name`` takes
    # subdomains, ``*`` any; None: every one (a server listening beyond loopback)
    allowed_hosts: tuple[str, ...] | None = None


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class MethodNotAllowed(PlinthError):
    status_code = 405


class ServingApp:
    """``ServingApp(model, limits)`` is an ASGI application."""

    def __init__(
        self,
        model: ServedModel | Split,
        limits: AppLimits = AppLimits(),
        *,
        admin_secret: str | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.split = model if isinstance(model, Split) else Split.single(model)
        self.limits = limits
        self.metrics = ServingMetrics(queue_depth=self._depth)
        self._batchers: dict[str, Batcher] = {}
        self._admin_secret = admin_secret
        self._pid = os.getpid()
        self._background: set[asyncio.Task[None]] = set()
        self.recorder = recorder
        if recorder is not None:
            recorder.attach(self.metrics.registry)

    @property
    def model(self) -> ServedModel:
        """The version most traffic goes to: it names the server."""
        return self.split.primary

    @property
    def _version_header(self) -> tuple[bytes, bytes]:
        return _header(self.model)

    def batcher(self, model: ServedModel) -> Batcher:
        found = self._batchers.get(model.version)
        if found is None:
            observe = self.metrics.observe_batch
            found = Batcher(model.predictor.predict, self.limits.batching, observe)
            self._batchers[model.version] = found
        return found

    def _depth(self) -> int:
        return sum(b.depth for b in self._batchers.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                settle_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for batcher in self._batchers.values():
                    await batcher.close()
                if self.recorder is not None:  # what was answered is written before exit
                    await asyncio.get_running_loop().run_in_executor(None, self.recorder.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        try:
            hosts = self.limits.allowed_hosts
            if hosts is not None and not _local(scope) and not _host_allowed(scope, hosts):
                raise InvalidInput("this model server does not answer for that Host header")
            if path.endswith(":predict") and path.startswith("/v1/models/"):
                await self._predict(scope, receive, send, "v1", path[11:-8])
            elif path.startswith("/v2/models/") and path.endswith("/infer"):
                await self._predict(scope, receive, send, "v2", path[11:-6])
            elif path == "/admin/config" and self._admin_secret is not None and _local(scope):
                await self._admin(scope, receive, send)
            else:
                await self._read(method, path, send)
        except Exception as exc:
            await self._error(send, _failure(exc, scope))

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
        started, at = time.perf_counter(), time.time()
        model = self.split.pick()  # first: every request counts for the version it went to
        self.metrics.in_flight.inc()
        status, body, answer, error = 500, None, None, None
        try:
            self._check_name(name)
            asgi.check_content_type(scope)
            body = await asgi.read_json(
                scope, receive, self.limits.max_body_bytes, self.limits.body_idle_seconds
            )
            answer = await self._answer(model, kind, body)
            status = 200
        except Exception as exc:
            error = _failure(exc, scope)
            status = error.status_code
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.in_flight.dec()
            self.metrics.answered(kind, model.version, status, elapsed)
            prediction_id = _prediction_id(kind, body, answer)
            recorded = self.recorder is not None and self.recorder.sampled()
            if recorded:
                self._record(scope, prediction_id, at, model, body, answer, status, elapsed)
        if error is not None:
            await self._error(send, error, model)
            return
        if self.split.shadow is not None:
            linked = prediction_id if recorded else None  # the shadow is recorded alike
            self._in_background(self._shadow(self.split.shadow, kind, body, linked))
        headers = [_header(model), (b"x-plinth-prediction-id", prediction_id.encode())]
        await asgi.send_json(send, 200, answer, headers)

    async def _answer(self, model: ServedModel, kind: str, body: Any) -> dict[str, Any]:
        batcher = self.batcher(model)
        if kind == "v1":
            inputs = model.coerce(protocol.v1_instances(body))
            return protocol.v1_answer(await batcher.submit(inputs, frames.rows(inputs)))
        payload, request_id = protocol.v2_instances(body, model)
        inputs = model.coerce(payload)
        predictions = await batcher.submit(inputs, frames.rows(inputs))
        return protocol.v2_answer(model, predictions, request_id)

    async def _shadow(
        self, shadow: ServedModel, kind: str, body: Any, prediction_id: str | None
    ) -> None:
        """The shadow's answer to a copy of the request: recorded, never returned (in
        the prediction records too, under the answer's id, when that was sampled)."""
        started, at = time.perf_counter(), time.time()
        answer, status = None, 200
        try:
            answer = await self._answer(shadow, kind, body)
        except Exception as exc:  # the shadow's failure is the shadow's alone
            status = exc.status_code if isinstance(exc, PlinthError) else 500
            self.split.record_shadow(False, str(exc))
        else:
            self.split.record_shadow(True, answer)
        if prediction_id is not None and self.recorder is not None:
            elapsed = time.perf_counter() - started
            record = _record(prediction_id, at, shadow, body, answer, status, elapsed)
            self.recorder.submit({**record, "shadow": True})

    def _record(
        self,
        scope: Scope,
        prediction_id: str,
        at: float,
        model: ServedModel,
        body: Any,
        answer: dict[str, Any] | None,
        status: int,
        elapsed: float,
    ) -> None:
        assert self.recorder is not None
        record = _record(prediction_id, at, model, body, answer, status, elapsed)
        size = asgi.header(scope, b"content-length") or ""
        if size.isdecimal() and int(size) > self.recorder.settings.max_field_bytes:
            # never hold a large body in the queue: the writer would drop it anyway
            record["inputs"], record["inputs_truncated"] = None, True
        self.recorder.submit(record)

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)  # held until done: the loop keeps weak references
        task.add_done_callback(self._background.discard)

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The control plane reads or changes the split (weights, shadow, versions)."""
        headers = dict(scope["headers"])
        if not authorized(self._admin_secret, headers.get(b"authorization")):
            raise NotFound(f"no such endpoint: {scope['path']}")  # no hint it exists
        if scope["method"] == "POST":
            body = await asgi.read_json(
                scope, receive, self.limits.max_body_bytes, self.limits.body_idle_seconds
            )
            if self.recorder is not None and isinstance(body, dict) and "record_sample" in body:
                self.recorder.sample = _share(body["record_sample"])
            loop = asyncio.get_running_loop()  # loading a version must not stall answers
            described = await loop.run_in_executor(None, apply_config, self.split, body)
            settle_heap()  # the versions it loaded
        else:
            described = self.split.describe()
        await self._json(send, 200, {**described, "pid": self._pid})

    def _check_name(self, name: str) -> None:
        if name != self.model.name:
            raise NotFound(f"no model named {name!r} here: this server serves {self.model.name!r}")

    async def _json(self, send: Send, status: int, content: Any) -> None:
        await asgi.send_json(send, status, content, [self._version_header])

    async def _error(
        self, send: Send, error: PlinthError, model: ServedModel | None = None
    ) -> None:
        """An error answer; ``model``: the version a prediction request went to."""
        headers = [self._version_header if model is None else _header(model)]
        if isinstance(error, ServiceUnavailable):
            headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
        self.metrics.failed(error.status_code, "" if model is None else model.version)
        await asgi.send_json(send, error.status_code, asgi.error_body(error), headers)


def _failure(exc: Exception, scope: Scope) -> PlinthError:
    """The error to answer with: a Plinth error as it is; anything else, logged, a 500."""
    if isinstance(exc, PlinthError):
        return exc
    log.error("serving %s %s failed", scope["method"], scope["path"], exc_info=exc)
    return PlinthError("the server failed to answer: see its log")


def _prediction_id(kind: str, body: Any, answer: dict[str, Any] | None) -> str:
    """The v2 answer's own id when the request gave none (protocol.py made one);
    otherwise a new one."""
    if kind == "v2" and answer is not None and isinstance(body, dict) and body.get("id") is None:
        return str(answer["id"])
    return uuid.uuid4().hex


def _record(
    prediction_id: str,
    at: float,
    model: ServedModel,
    body: Any,
    answer: dict[str, Any] | None,
    status: int,
    elapsed: float,
) -> dict[str, Any]:
    """A prediction record as the writer takes it (records.line serializes it)."""
    inputs = body.get("instances", body.get("inputs")) if isinstance(body, dict) else body
    outputs = None
    if answer is not None:
        outputs = answer.get("predictions", answer.get("outputs"))
    record = {
        "prediction_id": prediction_id,
        "at": at,
        "model": model.name,
        "version": model.version,
        "status": status,
        "latency_ms": round(elapsed * 1000, 3),
        "inputs": inputs,
        "outputs": outputs,
    }
    if isinstance(body, dict) and body.get("id") is not None:
        record["request_id"] = str(body["id"])
    return record


def _share(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidInput(f"record_sample must be a number from 0 to 1, not {value!r}")
    return float(value)


def _header(model: ServedModel) -> tuple[bytes, bytes]:
    return (b"x-plinth-model-version", model.label.encode())


_READS = frozenset(("/healthz", "/ready", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready"))


def _version() -> str:
    from plinth import __version__

    return __version__


def _local(scope: Scope) -> bool:
    """Whether the request came over the replica's own Unix socket (its address has no
    port), the only way the control plane talks to it: on the deployment's public port
    the admin path does not exist."""
    server = scope.get("server")
    return server is not None and server[1] is None


def _host_allowed(scope: Scope, allowed: tuple[str, ...]) -> bool:
    """Whether the request's Host header (its name, without a port) is allowed."""
    raw = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
    if raw.startswith("["):  # [IPv6]:port
        name = raw[1 : raw.find("]")]
    elif raw.count(":") == 1:  # name:port
        name = raw.partition(":")[0]
    else:  # a name, or a bare IPv6 address
        name = raw
    name = name.lower()
    return any(
        pattern == "*"
        or name == pattern
        or (pattern.startswith("*.") and name.endswith(pattern[1:]))
        for pattern in allowed
    )


def settle_heap() -> None:
    """Take what is loaded (models, libraries) out of the garbage collector's sight:
    its full collections then walk only what requests make, not the hundreds of
    thousands of objects a model and its libraries hold, so they pause answers less."""
    gc.collect()
    gc.freeze()
