"""Adaptive micro-batching: requests wait in a bounded queue; one batcher joins what
is waiting into a single ``predict`` call, run off the event loop, and hands each
request its own rows of the answer.

Adaptive: when the queue is empty after a batch, the next request runs at once (no
wait at low load); only while requests keep arriving together does the batcher wait
for a batch to fill, and only while more keep arriving (turns of the event loop, not
timers), for ``max_wait_ms`` at most. A model whose predict is fast (under
``inline_below_ms``, measured) runs on the event loop itself when nothing is waiting
and nothing is running: the hop to the predict thread would cost more than the
predict, as the bare floor shows. Past ``max_queue`` waiting requests the
server sheds load (503 with Retry-After) rather than letting every answer grow late.
A batch whose predict raises is retried request by request, so one bad request fails
alone, with a 422 that says the model failed on its input.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from plinth.errors import PlinthError, ServiceUnavailable, Unprocessable
from plinth.serving import frames

log = logging.getLogger("plinth.serving")
_QUIET_TURNS = 2  # loop turns without an arrival after which a filling batch runs


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int = 64  # rows per predict call (a bigger request runs alone)
    max_wait_ms: float = 2.0  # longest a batch waits to fill, and only under load
    max_queue: int = 256  # waiting requests beyond which new ones get 503
    # a predict faster than this (moving average) runs on the event loop when idle:
    # blocking the loop that briefly costs less than the hop to the predict thread
    inline_below_ms: float = 0.5


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
        self._running = False  # a batch is being filled or predicted
        self._predict_seconds = float("inf")  # moving average, per call; unknown at first
        self._inline_this_turn = False  # reset by the loop's next turn
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
        loop = asyncio.get_running_loop()
        if self._may_run_inline(rows):
            return self._run_inline(loop, inputs, rows)
        if self._task is None:
            self._task = loop.create_task(self._run())
        job = _Job(inputs, rows, loop.create_future())
        self._waiting.append(job)
        self._arrived.set()
        return await job.future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _may_run_inline(self, rows: int) -> bool:
        """Idle, fast, and not already done this loop turn: several requests read in
        one turn would otherwise each run alone and never be batched."""
        return (
            self._predict_seconds * 1000 < self._limits.inline_below_ms
            and not self._waiting
            and not self._running
            and rows <= self._limits.max_batch_size
            and not self._inline_this_turn
        )

    def _run_inline(self, loop: asyncio.AbstractEventLoop, inputs: Any, rows: int) -> Any:
        self._inline_this_turn = True
        loop.call_soon(self._next_turn)  # runs after every callback already ready
        self._observe(1, rows)
        try:
            return self._predict_parts([inputs], [rows])[0]
        except Exception as exc:
            raise _model_failed(exc) from None

    def _next_turn(self) -> None:
        self._inline_this_turn = False

    async def _run(self) -> None:
        under_load = False
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            self._running = True  # from here no request runs inline
            batch = self._take([])
            try:
                if under_load and self._limits.max_wait_ms > 0:
                    await self._fill(batch)
                under_load = len(batch) > 1 or bool(self._waiting)
                await self._execute(batch)
            except Exception:  # a bug here must not stop every later request
                log.exception("the batcher failed")
                for job in batch:
                    _fail(job, PlinthError("the server failed to run this batch"))
            finally:
                self._running = False

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
        """Let more requests join a batch not yet full while they keep arriving, for
        max_wait_ms at most. Turns of the loop rather than a timer: a timer waits its
        whole span (at millisecond grain) even when no one else is coming."""
        deadline = time.perf_counter() + self._limits.max_wait_ms / 1000
        quiet = 0
        while quiet < _QUIET_TURNS and time.perf_counter() < deadline:
            before = len(batch)
            await asyncio.sleep(0)
            self._take(batch)
            if self._waiting or sum(job.rows for job in batch) >= self._limits.max_batch_size:
                return  # full
            quiet = quiet + 1 if len(batch) == before else 0

    async def _execute(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]  # callers who left
        if not batch:
            return
        loop = asyncio.get_running_loop()
        self._observe(len(batch), sum(job.rows for job in batch))
        inputs, counts = [job.inputs for job in batch], [job.rows for job in batch]
        try:
            parts = await loop.run_in_executor(self._executor, self._predict_parts, inputs, counts)
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

    def _predict_parts(self, inputs: list[Any], counts: list[int]) -> list[Any]:
        joined = frames.join(inputs)
        started = time.perf_counter()
        try:
            predictions = self._predict(joined)
        finally:
            self._timed(time.perf_counter() - started)
        return frames.split(predictions, counts)

    def _timed(self, seconds: float) -> None:
        """Keep a moving average of predict's time (one slow call soon counts)."""
        if self._predict_seconds == float("inf"):
            self._predict_seconds = seconds
        else:
            self._predict_seconds += (seconds - self._predict_seconds) / 8


def _model_failed(exc: Exception) -> PlinthError:
    if isinstance(exc, PlinthError):
        return exc
    return Unprocessable(f"the model failed on this input: {type(exc).__name__}: {exc}")


def _fail(job: _Job, error: PlinthError) -> None:
    if not job.future.done():
        job.future.set_exception(error)
