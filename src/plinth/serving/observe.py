"""What a deployment's replicas report about their traffic, read through the control
plane: each replica's Prometheus ``/metrics`` (as the autoscaler reads it, over the
replica's own admin socket), summed into one ``Totals`` for the deployment.

Counters only grow while a replica lives, so two ``Totals`` taken a few seconds apart
give a rate, an error rate and latency percentiles over that interval (``between``),
for the whole deployment and for each model version of its split (``by_version``).
A replica that restarted starts its counters again from zero: an interval in which a
total went down counts what is there now, as Prometheus's ``rate`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sqlalchemy as sa

from plinth.core.access import Need, Principal
from plinth.errors import NotFound
from plinth.serving import tables as t
from plinth.serving.supervisor import DeploymentSupervisor

REQUESTS = "plinth_serving_requests_total"
ERRORS = "plinth_serving_errors_total"
LATENCY_BUCKET = "plinth_serving_request_duration_seconds_bucket"


@dataclass(frozen=True)
class Counts:
    """Requests, errors, and the latency histogram's cumulative bucket counts by upper
    bound (seconds; ``inf`` last)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.requests + other.requests,
            self.errors + other.errors,
            _merged(self.buckets, other.buckets),
        )


@dataclass(frozen=True)
class Totals(Counts):
    """Counts summed over replicas, in all and by the model version that answered
    (``versions``: requests a replica counted without one are only in the whole)."""

    replicas: int = 0  # replicas whose metrics were read
    versions: dict[str, Counts] = field(default_factory=dict)

    def __add__(self, other: Counts) -> Totals:
        whole = Counts.__add__(self, other)
        theirs = other.versions if isinstance(other, Totals) else {}
        versions = {
            v: self.versions.get(v, Counts()) + theirs.get(v, Counts())
            for v in self.versions.keys() | theirs.keys()
        }
        replicas = self.replicas + (other.replicas if isinstance(other, Totals) else 0)
        return Totals(whole.requests, whole.errors, whole.buckets, replicas, versions)


@dataclass(frozen=True)
class Interval:
    """Traffic between two readings."""

    seconds: float
    requests_per_second: float
    errors_per_second: float
    latency_ms: dict[float, float | None]  # quantile -> milliseconds (None: no requests)


def parse(text: str) -> Totals:
    """One replica's ``/metrics`` text as ``Totals`` (unknown lines ignored)."""
    from prometheus_client.parser import text_string_to_metric_families

    by_version: dict[str, Counts] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            version = sample.labels.get("version", "")
            if sample.name == REQUESTS:
                seen = Counts(requests=sample.value)
            elif sample.name == ERRORS:
                seen = Counts(errors=sample.value)
            elif sample.name == LATENCY_BUCKET:  # one histogram per protocol: summed
                seen = Counts(buckets={float(sample.labels["le"]): sample.value})
            else:
                continue
            by_version[version] = by_version.get(version, Counts()) + seen
    whole = sum(by_version.values(), Counts())
    versions = {v: counts for v, counts in by_version.items() if v}
    return Totals(whole.requests, whole.errors, whole.buckets, replicas=1, versions=versions)


def between(
    earlier: Counts, later: Counts, seconds: float, quantiles: tuple[float, ...]
) -> Interval:
    """Rates and latency percentiles of the requests answered between two readings."""
    span = max(seconds, 1e-9)
    requests = _delta(earlier.requests, later.requests)
    errors = _delta(earlier.errors, later.errors)
    reset = later.requests < earlier.requests
    counts = {
        b: later.buckets[b] if reset else _delta(earlier.buckets.get(b, 0.0), later.buckets[b])
        for b in later.buckets
    }
    latency = {q: _quantile(q, counts) for q in quantiles}
    return Interval(span, requests / span, errors / span, latency)


def by_version(
    earlier: Totals, later: Totals, seconds: float, quantiles: tuple[float, ...]
) -> dict[str, Interval]:
    """``between`` for each version the later reading counted."""
    return {
        version: between(earlier.versions.get(version, Counts()), counts, seconds, quantiles)
        for version, counts in later.versions.items()
    }


def _merged(a: dict[float, float], b: dict[float, float]) -> dict[float, float]:
    return {bound: a.get(bound, 0.0) + b.get(bound, 0.0) for bound in a.keys() | b.keys()}


def _delta(before: float, after: float) -> float:
    return after if after < before else after - before


def _quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Milliseconds below which ``q`` of the requests fell, interpolated within its
    bucket (as Prometheus's ``histogram_quantile``); past the last finite bound, that
    bound."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower * 1000
            inside = count - below
            share = (rank - below) / inside if inside > 0 else 1.0
            return (lower + (bound - lower) * share) * 1000
        lower, below = bound, count
    return lower * 1000


def replica_metrics(
    supervisor: DeploymentSupervisor, project: str, name: str, *, principal: Principal
) -> list[str | None]:
    """Each ready replica's Prometheus text (None where one did not answer), read by
    the deployment's runtime; the principal must be able to read the project."""
    d = t.deployments
    with supervisor.db.read() as conn:
        pid = supervisor.projects.require(conn, project, principal, Need.READ)
        row = conn.execute(sa.select(d).where(d.c.project_id == pid, d.c.name == name)).first()
    if row is None:
        raise NotFound(f"no deployment {name!r} in project {project!r}")
    return supervisor.replica_metrics(row.id)


def deployment_totals(
    supervisor: DeploymentSupervisor, project: str, name: str, *, principal: Principal
) -> Totals:
    """The deployment's counters now, summed over the replicas that answered."""
    total = Totals()
    for text in replica_metrics(supervisor, project, name, principal=principal):
        if text is not None:
            total = total + parse(text)
    return total
