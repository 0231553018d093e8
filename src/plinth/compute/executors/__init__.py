"""Executors: where a job's workers run. One small interface, one contract suite
(``tests/compute/contract/``) that each executor passes.

The dispatcher (``compute/dispatcher.py``) decides *what* runs *where*; an executor only
starts a worker it is told to start, says whether it still runs, and stops it. A
``Handle`` is plain JSON kept in the database, so a restarted server can ask about a
worker it did not start (adoption). Executors are chosen by name (``by_name``) and
imported lazily, so Ray and the Kubernetes client load only when a pool uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class Launch:
    """One worker of one attempt of a job, placed."""

    job_id: str
    attempt: int  # the fencing token: a stale attempt's handle is never trusted
    rank: int  # 0 … workers-1 (a gang's members)
    argv: tuple[str, ...]  # never a shell string
    env: dict[str, str]  # the whole environment the worker sees, secrets included
    cwd: Path  # the job's unpacked working-directory snapshot
    log_path: Path  # stdout and stderr, appended, readable while it runs
    node: str
    cpu_ids: tuple[int, ...] = ()  # affinity where the OS allows; empty: no pinning
    gpu_ids: tuple[int, ...] = ()  # CUDA_VISIBLE_DEVICES; empty: "" (no GPU visible)
    memory_bytes: int | None = None  # over it, the worker is stopped with that reason
    # PROJECT/DIGEST of the job's snapshot, for a worker that cannot see ``cwd`` (a
    # Kubernetes pod fetches it from the server: ``compute/fetch.py``); None: none
    snapshot: str | None = None
    # What the worker must not see (the server's home, database, store, key): a local
    # worker with any runs in a sandbox hiding them but for ``cwd`` (``sandbox.py``)
    hidden: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Handle:
    executor: str
    ident: str  # pid, Ray task id, Kubernetes Job name …
    data: dict[str, Any] = field(default_factory=dict)  # JSON-safe, executor's own


@dataclass(frozen=True)
class Status:
    state: Literal["running", "exited", "lost"]
    exit_code: int | None = None  # exited: the code (128+N for a signal N)
    reason: str | None = None  # "memory limit exceeded", "process vanished" …


class Executor(Protocol):
    name: str

    def launch(self, spec: Launch) -> Handle:
        """Start the worker; return once the OS (or cluster) has accepted it."""

    def poll(self, handle: Handle) -> Status:
        """Running, exited with a code, or lost (gone without a recorded exit)."""

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        """SIGTERM (or the cluster's equivalent), then kill after the grace period.
        Returns without waiting for the grace to pass; idempotent."""

    def close(self) -> None:
        """Release what the executor holds (connections), leaving workers running."""


def by_name(name: str, **options: Any) -> Executor:
    if name == "local":
        from plinth.compute.executors.local import LocalExecutor

        return LocalExecutor(**options)
    if name == "kubernetes":
        from plinth.compute.executors.kubernetes import KubernetesExecutor

        return KubernetesExecutor(**options)
    if name == "ray":
        from plinth.compute.executors.ray import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"unknown executor {name!r}")
