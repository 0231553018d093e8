"""Adaptive micro-batching: requests wait in a bounded queue; one batcher joins what
is waiting into a single ``predict`` call, run off the event loop, and hands each
request its own rows of the answer.

Adaptive: when the queue is empty after a batch, the next request runs at once (no
wait at low load); only while requests keep arriving together does the batcher wait
up to ``max_wait_ms`` for a batch to fill. Past ``max_queue`` waiting requests the
server sheds load (503 with Retry-After) rather than letting every answer grow late.
A batch whose predict raises is retried request by request, so one bad request fails
alone, with a 422 that says the model failed on its input.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from plinth.errors import PlinthError, ServiceUnavailable, Unprocessable
from plinth.serving import frames

log = logging.getLogger("plinth.serving")


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int = 64  # rows per predict call (a bigger request runs alone)
    max_wait_ms: float = 2.0  # longest a batch waits to fill, and only under load
    max_queue: int = 256  # waiting requests beyond which new ones get 503


@dataclass
class _Job:
    inputs: Any
    rows: int
    future: asyncio.Future[Any]


class Batcher:
    """Runs ``predict`` over batches of submitted inputs; ``observe(requests, rows)``
    hears of each batch run (for the metrics)."""

    def __init__(
        self,
        predict: Callable[[Any], Any],
        limits: BatchLimits,
        observe: Callable[[int, int], None] = lambda requests, rows: None,
    ) -> None:
        self._predict = predict
        self._limits = limits
        self._observe = observe
        self._waiting: collections.deque[_Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # one thread: predicts run one at a time, while the loop parses the next requests
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="plinth-predict")

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._waiting)

    async def submit(self, inputs: Any, rows: int) -> Any:
        """This request's predictions, once its batch ran."""
        if len(self._waiting) >= self._limits.max_queue:
            raise ServiceUnavailable(
                f"the server is at capacity ({self._limits.max_queue} requests waiting): "
                "try again shortly"
            )
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        job = _Job(inputs, rows, asyncio.get_running_loop().create_future())
        self._waiting.append(job)
        self._arrived.set()
        return await job.future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        under_load = False
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            batch = self._take([])
            if under_load and self._limits.max_wait_ms > 0:
                await self._fill(batch)
            under_load = len(batch) > 1 or bool(self._waiting)
            try:
                await self._execute(batch)
            except Exception:  # a bug here must not stop every later request
                log.exception("the batcher failed")
                for job in batch:
                    _fail(job, PlinthError("the server failed to run this batch"))

    def _take(self, batch: list[_Job]) -> list[_Job]:
        """Move waiting jobs into ``batch`` while they fit (a first job always does)."""
        rows = sum(job.rows for job in batch)
        while self._waiting:
            job = self._waiting[0]
            if batch and rows + job.rows > self._limits.max_batch_size:
                break
            batch.append(self._waiting.popleft())
            rows += job.rows
        return batch

    async def _fill(self, batch: list[_Job]) -> None:
        """Wait up to max_wait_ms for more requests to join a batch not yet full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.max_wait_ms / 1000
        while sum(job.rows for job in batch) < self._limits.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return
            self._take(batch)
            if self._waiting:
                return  # the next one does not fit: the batch is full

    async def _execute(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]  # callers who left
        if not batch:
            return
        loop = asyncio.get_running_loop()
        self._observe(len(batch), sum(job.rows for job in batch))
        try:
            parts = await loop.run_in_executor(self._executor, self._predict_parts, batch)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], _model_failed(exc))
                return
            for job in batch:  # so that one bad request does not fail its neighbours
                await self._execute([job])
            return
        for job, part in zip(batch, parts, strict=True):
            if not job.future.done():
                job.future.set_result(part)

    def _predict_parts(self, batch: list[_Job]) -> list[Any]:
        inputs = frames.join([job.inputs for job in batch])
        return frames.split(self._predict(inputs), [job.rows for job in batch])


def _model_failed(exc: Exception) -> PlinthError:
    if isinstance(exc, PlinthError):
        return exc
    return Unprocessable(f"the model failed on this input: {type(exc).__name__}: {exc}")


def _fail(job: _Job, error: PlinthError) -> None:
    if not job.future.done():
        job.future.set_exception(error)
