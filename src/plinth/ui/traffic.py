"""A deployment's traffic over time, as the deployment page draws it.

Replicas expose counters, not histories; so this process reads each deployment's
counters (``serving.observe``) whenever its page or the page's poll asks, and keeps
the last ``KEEP`` readings per deployment in memory. Between two readings there is a
request rate, an error rate and latency percentiles: the points of the page's charts.
The readings live as long as the server process and are a view, not a record: a
restarted server starts its charts again.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from markupsafe import Markup

from plinth.core.access import Principal
from plinth.core.platform import Platform
from plinth.serving import observe
from plinth.serving.supervisor import DeploymentSupervisor
from plinth.ui.charts import Line, line_chart
from plinth.ui.views import color_of

KEEP = 120  # readings per deployment (ten minutes at the page's five-second poll)
DEPLOYMENTS = 256  # deployments followed at once; the least recently viewed is dropped
MIN_SPACING = 1.0  # seconds: readings closer than this (two viewers) are not kept twice
QUANTILES = (0.5, 0.9, 0.99)

Reading = tuple[float, observe.Totals]


@dataclass(frozen=True)
class Traffic:
    """What the page shows: the charts, and how many replicas answered the last read."""

    charts: list[Markup]
    replicas_read: int
    intervals: list[tuple[float, observe.Interval]]  # (seconds before now, interval)


class TrafficHistory:
    def __init__(self, platform: Platform, *, supervisor: DeploymentSupervisor) -> None:
        self.supervisor = supervisor
        self._readings: OrderedDict[tuple[str, str], deque[Reading]] = OrderedDict()
        self._lock = threading.Lock()

    def traffic(self, project: str, name: str, *, principal: Principal) -> Traffic:
        """Read the deployment's counters now, keep them, and chart the readings."""
        totals = observe.deployment_totals(self.supervisor, project, name, principal=principal)
        if totals.replicas == 0:  # nothing answered (or a runtime that keeps no metrics)
            return Traffic([], 0, [])
        readings = self._keep((project, name), time.time(), totals)
        now = readings[-1][0]
        intervals = [
            (b_at - now, observe.between(a, b, b_at - a_at, QUANTILES))
            for (a_at, a), (b_at, b) in itertools.pairwise(readings)
        ]
        return Traffic(_charts(intervals), totals.replicas, intervals)

    def _keep(self, key: tuple[str, str], at: float, totals: observe.Totals) -> list[Reading]:
        with self._lock:
            kept = self._readings.pop(key, None) or deque(maxlen=KEEP)
            self._readings[key] = kept  # now the most recently viewed
            while len(self._readings) > DEPLOYMENTS:
                self._readings.popitem(last=False)
            if not kept or at - kept[-1][0] >= MIN_SPACING:
                kept.append((at, totals))
            return list(kept)


def _charts(intervals: list[tuple[float, observe.Interval]]) -> list[Markup]:
    x_label = "seconds (0 = now)"
    rate = [Line("requests/s", [(x, i.requests_per_second) for x, i in intervals], color_of(0))]
    errors = [Line("errors/s", [(x, i.errors_per_second) for x, i in intervals], color_of(3))]
    latency = [
        Line(
            f"p{q * 100:g}",
            [(x, ms) for x, i in intervals if (ms := i.latency_ms[q]) is not None],
            color_of(n),
        )
        for n, q in enumerate(QUANTILES)
    ]
    return [
        line_chart(rate, title="Requests per second", x_label=x_label),
        line_chart(latency, title="Latency (ms): p50, p90, p99", x_label=x_label),
        line_chart(errors, title="Errors per second", x_label=x_label),
    ]
