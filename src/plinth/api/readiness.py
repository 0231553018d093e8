"""Readiness: can this replica serve now? Each dependency probed, cheaply.

``/healthz`` says the process is alive; ``/readyz`` says whether its database and blob
store answer, so a load balancer takes a replica out while they do not, and puts it
back when they do. A probe that hangs (a dependency behind a dropped network) counts
as failing after ``timeout`` seconds, and is not started again while it still runs:
a load balancer asking every few seconds must not pile up stuck threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi.responses import Response

from plinth.api.errors import RETRY_AFTER, PlinthJSONResponse, backend_fault, one_line
from plinth.errors import PlinthError

log = logging.getLogger("plinth.server")
OK = "ok"


class Readiness:
    def __init__(self, probes: dict[str, Callable[[], object]], timeout: float = 2.0) -> None:
        self.probes = probes
        self.timeout = timeout
        self._running: dict[str, asyncio.Future[object]] = {}

    async def answer(self) -> Response:
        """200 while every dependency answers, else 503 naming the failing ones."""
        checks = await self.report()
        if all(result == OK for result in checks.values()):
            return PlinthJSONResponse({"status": OK, "checks": checks})
        headers = {"Retry-After": str(RETRY_AFTER[503])}
        return PlinthJSONResponse({"status": "failing", "checks": checks}, 503, headers=headers)

    async def report(self) -> dict[str, str]:
        """``{dependency: "ok" | "failing: why"}``, the probes run side by side."""
        names = list(self.probes)
        results = await asyncio.gather(*(self._check(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def _check(self, name: str) -> str:
        probe = self._running.get(name)
        if probe is None or probe.done():
            probe = asyncio.ensure_future(asyncio.to_thread(self.probes[name]))
            probe.add_done_callback(_retrieved)  # a probe given up on may fail later
            self._running[name] = probe
        try:
            await asyncio.wait_for(asyncio.shield(probe), self.timeout)
        except TimeoutError:
            return f"failing: no answer within {self.timeout:g} s"
        except Exception as exc:
            # The caller learns which dependency fails, the log learns why: the error
            # text may name hosts and ports, and /readyz answers anyone.
            fault = exc if isinstance(exc, PlinthError) else backend_fault(exc)
            log.warning("readiness: %s failing: %s", name, one_line(exc))
            return f"failing: {fault.message if fault else 'unexpected error; see the server log'}"
        return OK


def _retrieved(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
