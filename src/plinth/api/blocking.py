"""Run the services' blocking calls from async routes.

FastAPI would send a sync route (and each sync dependency) to anyio's thread pool, a
hand-off that costs several hundred microseconds on a small machine — more than the
work of most requests. Routes are ``async`` instead and call services through
``Blocking.run``: on a server, in a thread pool of the app's own; in the embedded
in-process app, inline, since its one event loop serves a single process whose
requests the database would serialise anyway.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Blocking:
    def __init__(self, *, inline: bool, workers: int = 16) -> None:
        self.inline = inline
        self.pool = None if inline else ThreadPoolExecutor(workers, "plinth-worker")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.pool is None:
            return fn(*args, **kwargs)
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def iterate(self, iterator: Iterator[T]) -> AsyncIterator[T]:
        sentinel: Any = object()
        while (item := await self.run(next, iterator, sentinel)) is not sentinel:
            yield item

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
