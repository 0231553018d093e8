"""Batching, model failures and load shedding, shown on a real server process over a
fake model that is slow or fails on purpose (see fakes.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plinth.errors import Unprocessable
from plinth.serving.batching import Batcher, BatchLimits
from tests.serving.conftest import Served, fake_server, served
from tests.serving.fakes import POISON

pytestmark = pytest.mark.slow
PREDICT = "/v1/models/adder:predict"


@pytest.fixture(scope="module")
def adder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # each predict takes 20 ms, so concurrent requests find the batcher busy and queue
    args = fake_server("--delay", "0.02", "--max-wait-ms", "5")
    with served(args, tmp_path_factory.mktemp("adder")) as server:
        yield server


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    args = fake_server("--delay", "0.5", "--max-batch-size", "1", "--max-queue", "2")
    with served(args, tmp_path_factory.mktemp("slow")) as server:
        yield server


def test_concurrent_requests_are_batched_each_getting_its_own_rows(adder: Served) -> None:
    before = adder.metric("plinth_serving_batch_size_count")
    singles = adder.metric('plinth_serving_batch_size_bucket{le="1.0"}')
    bodies = [{"instances": [{"a": i, "b": 1000}]} for i in range(32)]
    answers = adder.concurrently(PREDICT, bodies)
    assert [status for status, _, _ in answers] == [200] * 32
    assert [body["predictions"] for _, _, body in answers] == [[i + 1000.0] for i in range(32)]
    batches = adder.metric("plinth_serving_batch_size_count") - before
    grouped = batches - (adder.metric('plinth_serving_batch_size_bucket{le="1.0"}') - singles)
    assert batches < 32 and grouped >= 1  # some predict calls served several requests


def test_a_model_failure_fails_only_its_own_request(adder: Served) -> None:
    bodies = [{"instances": [{"a": POISON if i == 7 else i, "b": 0}]} for i in range(24)]
    answers = adder.concurrently(PREDICT, bodies)
    for i, (status, headers, body) in enumerate(answers):
        if i == 7:
            assert status == 422
            assert body["error"]["type"] == "Unprocessable"
            assert "the model failed on this input" in body["error"]["message"]
            assert "poisoned row" in body["error"]["message"]
        else:
            assert (status, body) == (200, {"predictions": [float(i)]})
        assert headers["x-plinth-model-version"] == "adder/3"


def test_past_the_queue_bound_requests_are_shed_with_retry_after(slow: Served) -> None:
    answers = slow.concurrently(PREDICT, [{"instances": [{"a": 1, "b": 2}]}] * 12)
    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) == {200, 503}
    shed = [(headers, body) for status, headers, body in answers if status == 503]
    for headers, body in shed:
        assert int(headers["retry-after"]) >= 1
        assert body["error"]["type"] == "ServiceUnavailable"
        assert "capacity" in body["error"]["message"]
    assert slow.metric('plinth_serving_errors_total{code="503"}') == len(shed)


def test_a_server_with_two_workers_answers_from_two_processes(tmp_path: Path) -> None:
    with served(fake_server("--workers", "2"), tmp_path) as server:
        pids = set()
        deadline = time.monotonic() + 60  # the second worker may still be loading
        while time.monotonic() < deadline:  # new connections land on either worker
            pids.add(server.get("/healthz")[2]["pid"])
            if len(pids) == 2:
                break
            time.sleep(0.02)
        assert len(pids) == 2
        assert server.post(PREDICT, {"instances": [{"a": 1, "b": 2}]})[2] == {"predictions": [3.0]}


def _doubling(calls: list[tuple[bool, int]], fail: bool = False) -> Any:
    def predict(inputs: Any) -> Any:
        calls.append((threading.current_thread() is threading.main_thread(), len(inputs)))
        if fail:
            raise ValueError("poisoned row")
        return np.asarray(inputs) * 2

    return predict


def test_a_fast_model_runs_on_the_loop_when_idle_and_is_batched_when_not() -> None:
    calls: list[tuple[bool, int]] = []

    async def scenario() -> tuple[Any, Any, list[Any]]:
        # inline_below_ms is huge so that "fast" never depends on this machine's speed
        batcher = Batcher(_doubling(calls), BatchLimits(inline_below_ms=1e6))
        first = await batcher.submit(np.array([[1.0]]), 1)  # speed unknown: the thread
        second = await batcher.submit(np.array([[2.0]]), 1)  # fast and idle: the loop
        rows = [np.array([[float(i)]]) for i in range(16)]
        together = await asyncio.gather(*(batcher.submit(row, 1) for row in rows))
        await batcher.close()
        return first, second, list(together)

    first, second, together = asyncio.run(scenario())
    assert first.tolist() == [[2.0]] and second.tolist() == [[4.0]]
    assert [part.tolist() for part in together] == [[[2.0 * i]] for i in range(16)]
    assert [on_loop for on_loop, _ in calls[:2]] == [False, True]
    # arriving in one turn, only the first runs on the loop; the rest join a batch
    assert calls[2] == (True, 1) and any(rows > 1 for _, rows in calls[3:])


def test_a_model_failing_on_the_loop_fails_its_request_with_a_422() -> None:
    calls: list[tuple[bool, int]] = []

    async def scenario() -> None:
        batcher = Batcher(_doubling(calls, fail=True), BatchLimits(inline_below_ms=1e6))
        for _ in range(2):  # the first on the thread, the second on the loop
            with pytest.raises(Unprocessable, match="poisoned row"):
                await batcher.submit(np.array([[1.0]]), 1)
        await batcher.close()

    asyncio.run(scenario())
    assert [on_loop for on_loop, _ in calls] == [False, True]


def test_without_inline_every_predict_runs_on_the_predict_thread() -> None:
    calls: list[tuple[bool, int]] = []

    async def scenario() -> None:
        batcher = Batcher(_doubling(calls), BatchLimits(inline_below_ms=0))
        for i in range(3):
            assert (await batcher.submit(np.array([[float(i)]]), 1)).tolist() == [[2.0 * i]]
        await batcher.close()

    asyncio.run(scenario())
    assert [on_loop for on_loop, _ in calls] == [False, False, False]
