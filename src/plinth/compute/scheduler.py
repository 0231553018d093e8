"""The scheduler: which queued jobs start now, on which node, with which CPUs and GPUs,
and which running jobs to preempt. Pure logic over memory, no database, no clock of
its own: the dispatcher feeds it what the database says and carries out its answers.

Rules (see the tests for each): higher priority first; among equal priority, fair share
between projects by dominant-resource fairness (the project whose largest share of any
resource is smallest goes next), first-in-first-out within a project; per-project
quotas (CPUs, memory, GPUs, concurrent jobs) hold a job back without blocking others;
a gang (``units`` > 1) is placed whole or not at all; a queued job that cannot fit may
preempt strictly lower-priority preemptible work when stopping it would make room.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from plinth.compute.resources import Node, Resources


@dataclass(frozen=True)
class Request:
    """A queued job as the scheduler sees it: ``units`` placements of ``per_unit``
    each (a DDP job with 2 nodes × 2 processes is 2 units of 2 processes' worth)."""

    job_id: str
    project: str
    priority: int = 0  # higher first
    seq: int = 0  # submission order, for first-in-first-out
    pool: str | None = None  # None: the default pool
    units: int = 1
    per_unit: Resources = Resources()
    preemptible: bool = True


@dataclass(frozen=True)
class Quota:
    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int | None = None
    jobs: int | None = None  # concurrent running jobs


@dataclass(frozen=True)
class Allocation:
    node: str
    resources: Resources
    cpu_ids: tuple[int, ...] = ()
    gpu_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Placement:
    job_id: str
    allocations: tuple[Allocation, ...]  # one per unit, in unit order


@dataclass(frozen=True)
class Preemption:
    job_id: str  # the running job to stop
    for_job: str  # the queued job it makes room for


class Scheduler:
    def __init__(
        self, nodes: Iterable[Node], quotas: Mapping[str, Quota] | None = None, *,
        default_pool: str = "local",
    ) -> None:
        raise NotImplementedError  # helper S

    def set_quota(self, project: str, quota: Quota | None) -> None: ...
    def submit(self, request: Request) -> None: ...
    def withdraw(self, job_id: str) -> None:
        """A queued job cancelled (no-op when unknown)."""
    def adopt(self, request: Request, allocations: tuple[Allocation, ...]) -> None:
        """A job already running (a restarted server re-adopting it): its resources
        are in use."""
    def release(self, job_id: str) -> None:
        """A running job ended: its resources are free again (no-op when unknown)."""
    def place(self) -> list[Placement]:
        """Every queued job that can start now, in the order they should start; each
        placed job counts as running from here on."""
    def preemptions(self) -> list[Preemption]:
        """Running jobs to stop so that higher-priority queued jobs fit. A job is
        named once (until released or adopted again)."""
    def queued(self) -> list[str]:
        """Queued job ids in the order they would be considered."""
    def unplaceable(self, request: Request) -> str | None:
        """Why a request can never fit (bigger than any node, unknown pool), else None."""
