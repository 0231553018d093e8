"""How many replicas a deployment wants, from what its replicas say they are doing.

``decide`` is a pure function of observations (the in-flight requests each replica
reports on its ``/metrics``): up at once to what the load needs, down one replica at a
time (so a lull between bursts does not empty the deployment), always between the
deployment's ``min_replicas`` and ``max_replicas``. ``in_flight`` reads the gauge from
a replica's Prometheus text; the supervisor calls both on every tick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

IN_FLIGHT_METRIC = "plinth_serving_in_flight"


@dataclass(frozen=True)
class Policy:
    target_in_flight: float = 4.0  # requests in flight per replica the autoscaler aims at


def decide(
    current: int,
    in_flight: Sequence[float],
    low: int,
    high: int,
    policy: Policy = Policy(),
) -> int:
    """The replica count to run next, given each ready replica's in-flight requests."""
    if not in_flight:  # nothing observed: no reason to move, only to respect the bounds
        return _clamp(current, low, high)
    needed = math.ceil(sum(in_flight) / policy.target_in_flight)
    if needed > current:
        wanted = needed
    elif needed < current:
        wanted = current - 1
    else:
        wanted = current
    return _clamp(wanted, low, high)


def in_flight(metrics_text: str) -> float | None:
    """The in-flight gauge of one replica's ``/metrics`` text (None if absent)."""
    for line in metrics_text.splitlines():
        if line.startswith(IN_FLIGHT_METRIC + " "):
            return float(line.split()[-1])
    return None


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
