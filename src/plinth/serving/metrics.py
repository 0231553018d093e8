"""The server's Prometheus metrics, in a registry of its own (one per app, so that
tests and several apps in one process never share counters).

Requests, their latency and errors carry the ``version`` of the model that answered
(the one the split picked; empty for an answer that is no prediction, such as a 404 on
an unknown path), so a deployment's traffic can be read per version of its split. The
shadow's answers are not counted here: they answer no request (they are recorded).

With ``--workers N`` each worker process counts its own requests: a scrape of
``/metrics`` reads the worker that answered it.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "plinth_serving_request_duration_seconds",
            "Time from a prediction request's arrival to its answer, by protocol and version.",
            ["protocol", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "plinth_serving_batch_size",
            "Requests joined into one predict call.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "plinth_serving_batch_rows",
            "Rows in one predict call.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "plinth_serving_queue_depth",
            "Prediction requests waiting for a batch.",
            registry=self.registry,
        )
        self.queue_depth.set_function(queue_depth)
        self.in_flight = Gauge(
            "plinth_serving_in_flight",
            "Prediction requests being answered.",
            registry=self.registry,
        )
        self.requests = Counter(
            "plinth_serving_requests",
            "Prediction requests answered, by protocol, status code and version.",
            ["protocol", "code", "version"],
            registry=self.registry,
        )
        self.errors = Counter(
            "plinth_serving_errors",
            "Answers with an error status, by code and version (empty: no prediction).",
            ["code", "version"],
            registry=self.registry,
        )

    def answered(self, protocol: str, version: str, status: int, seconds: float) -> None:
        """One prediction request, answered by ``version`` with ``status``."""
        self.requests.labels(protocol, str(status), version).inc()
        self.latency.labels(protocol, version).observe(seconds)

    def failed(self, status: int, version: str = "") -> None:
        self.errors.labels(str(status), version).inc()

    def observe_batch(self, requests: int, rows: int) -> None:
        self.batch_size.observe(requests)
        self.batch_rows.observe(rows)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
