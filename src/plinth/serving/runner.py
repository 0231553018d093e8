"""Running the app: a socket bound once, uvicorn (httptools, uvloop) on it, in this
process or in N worker processes that share it; each worker loads the model itself.

A model that needs pickle is only ever loaded in a worker process, never in the
process that parsed the command line.
"""

from __future__ import annotations

import errno
import http.client
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plinth.errors import InvalidInput, PlinthError
from plinth.serving.app import AppLimits, ServingApp
from plinth.serving.records import RecordSettings

STARTUP_FAILURE = 3  # uvicorn's exit code for "the app could not start": not restarted


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to load its model: plain values, so that it pickles
    into a spawned worker (the spec, never the model, crosses processes)."""

    directory: Path
    name: str
    version: str
    allow_pickle: bool = False
    load_timeout: float | None = 120.0
    limits: AppLimits = field(default_factory=AppLimits)
    records: RecordSettings | None = None  # each worker records to files of its own
    digest: str | None = None  # the files must still be this registry version's
    device: str | None = None  # where a pytorch model runs: auto, cpu, cuda, cuda:N


def build_app(spec: WorkerSpec) -> ServingApp:
    """The app factory each worker calls: load the model, or say why not and exit."""
    from plinth.serving.model import load
    from plinth.serving.records import Recorder

    try:
        model = load(
            spec.directory,
            name=spec.name,
            version=spec.version,
            allow_pickle=spec.allow_pickle,
            timeout=spec.load_timeout,
            digest=spec.digest,
            device=spec.device,
        )
    except PlinthError as exc:
        print(f"error: cannot load the model: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    try:
        recorder = None if spec.records is None else Recorder(spec.records)
    except PlinthError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    return ServingApp(model, spec.limits, recorder=recorder)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a failure is one line naming the port."""
    if not 0 <= port <= 65535:
        raise InvalidInput(f"port {port} is out of range: use 1 to 65535 (or 0 for any free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise InvalidInput(f"cannot serve on host {host!r}: {exc.strerror}") from None
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise InvalidInput(f"port {port} is in use (on {host}): pass another --port") from None
        raise InvalidInput(f"cannot serve on {host} port {port}: {exc.strerror}") from None
    listener.set_inheritable(True)
    return listener


def serve(
    factory: Callable[[], Any],
    listener: socket.socket,
    *,
    workers: int = 1,
    isolate: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve ``factory()``'s app on ``listener`` until interrupted. ``isolate`` loads
    the app in a worker process even when there is one worker."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        factory,
        factory=True,
        http="httptools",
        loop="uvloop",
        workers=workers,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    if on_ready is not None:
        _watch_ready(listener, on_ready)
    if workers > 1 or isolate:
        Multiprocess(config, sockets=[listener]).run()
    else:
        uvicorn.Server(config).run(sockets=[listener])


def _watch_ready(listener: socket.socket, on_ready: Callable[[], None]) -> None:
    """Call ``on_ready`` once the server answers ``/ready`` (from a daemon thread)."""
    host, port = listener.getsockname()[:2]
    if host in ("0.0.0.0", "::"):  # listening everywhere: ask over loopback
        host = "::1" if listener.family == socket.AF_INET6 else "127.0.0.1"

    def watch() -> None:
        while True:
            try:
                conn = http.client.HTTPConnection(host, port, timeout=2)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    on_ready()
                    return
            except OSError:
                pass
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True, name="plinth-ready").start()
