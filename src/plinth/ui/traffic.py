"""A deployment's traffic over time, as the deployment page draws it.

Replicas expose counters, not histories; so this process reads each deployment's
counters (``serving.observe``) whenever its page or the page's poll asks, and keeps
the last ``KEEP`` readings per deployment in memory. Between two readings there is a
request rate, an error rate and latency percentiles: the points of the page's charts,
for the whole deployment and for each model version that answered.
The readings live as long as the server process and are a view, not a record: a
restarted server starts its charts again.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from markupsafe import Markup

from plinth.core.access import Principal
from plinth.core.platform import Platform
from plinth.serving import observe
from plinth.serving.supervisor import DeploymentSupervisor
from plinth.ui.charts import Line, line_chart
from plinth.ui.views import color_of, version_color

KEEP = 120  # readings per deployment (ten minutes at the page's five-second poll)
DEPLOYMENTS = 256  # deployments followed at once; the least recently viewed is dropped
MIN_SPACING = 1.0  # seconds: readings closer than this (two viewers) are not kept twice
QUANTILES = (0.5, 0.9, 0.99)
X_LABEL = "seconds (0 = now)"
WINDOW = 60.0  # seconds of readings the per-version table's rates and latency cover

Reading = tuple[float, observe.Totals]


@dataclass(frozen=True)
class VersionTraffic:
    """One version's row on the page: what the replicas counted for it since they
    started, and its rates and latency over the last minute of readings (None: one
    reading yet)."""

    version: str
    requests: float
    share: float  # of the requests counted for any version
    last: observe.Interval | None


@dataclass(frozen=True)
class Traffic:
    """What the page shows: the charts, how many replicas answered the last read, and
    each version's traffic."""

    charts: list[Markup]
    replicas_read: int
    intervals: list[tuple[float, observe.Interval]]  # (seconds before now, interval)
    versions: list[VersionTraffic] = field(default_factory=list)
    window: float = 0.0  # seconds the versions' rates and latency cover (0: none yet)


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
        pairs = list(itertools.pairwise(readings))
        intervals = [
            (b_at - now, observe.between(a, b, b_at - a_at, QUANTILES))
            for (a_at, a), (b_at, b) in pairs
        ]
        per_version = [
            (b_at - now, observe.by_version(a, b, b_at - a_at, QUANTILES))
            for (a_at, a), (b_at, b) in pairs
        ]
        charts = _charts(intervals)
        if per_version:
            charts.append(_version_chart(per_version))
        versions, window = _versions(readings)
        return Traffic(charts, totals.replicas, intervals, versions, window)

    def _keep(self, key: tuple[str, str], at: float, totals: observe.Totals) -> list[Reading]:
        with self._lock:
            kept = self._readings.pop(key, None) or deque(maxlen=KEEP)
            self._readings[key] = kept  # now the most recently viewed
            while len(self._readings) > DEPLOYMENTS:
                self._readings.popitem(last=False)
            if not kept or at - kept[-1][0] >= MIN_SPACING:
                kept.append((at, totals))
            return list(kept)


def _versions(readings: list[Reading]) -> tuple[list[VersionTraffic], float]:
    """Each version's row: its counts now, and its rates and latency over the last
    ``WINDOW`` seconds of readings (at least the last interval); and that span."""
    (at, totals), earlier = readings[-1], readings[:-1]
    recent = [r for r in earlier if at - r[0] <= WINDOW] or earlier[-1:]
    last: dict[str, observe.Interval] = {}
    if recent:
        since, before = recent[0]
        last = observe.by_version(before, totals, at - since, QUANTILES)
    counted = sum(c.requests for c in totals.versions.values())
    rows = [
        VersionTraffic(v, c.requests, c.requests / counted if counted else 0.0, last.get(v))
        for v, c in sorted(totals.versions.items(), key=lambda item: version_order(item[0]))
    ]
    return rows, at - recent[0][0] if recent else 0.0


def version_order(version: str) -> tuple[int, str]:
    """Versions by number (labels are strings: "10" after "9")."""
    numeric = version.isascii() and version.isdecimal()
    return (int(version), "") if numeric else (2**63, version)


def _version_chart(per_version: list[tuple[float, dict[str, observe.Interval]]]) -> Markup:
    versions = sorted({v for _, found in per_version for v in found}, key=version_order)
    lines = [
        Line(
            f"v{v}",
            [(x, found[v].requests_per_second) for x, found in per_version if v in found],
            version_color(v),
        )
        for v in versions
    ]
    return line_chart(lines, title="Requests per second by version", x_label=X_LABEL)


def _charts(intervals: list[tuple[float, observe.Interval]]) -> list[Markup]:
    x_label = X_LABEL
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
