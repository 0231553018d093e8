"""Wire types of compute, shared by the server, the SDK and the CLI.

A job is an argv list (never a shell line) run with the resources it asked for, in a
snapshot of the submitter's working directory (content-addressed, uploaded before the
submit). Resources are per process: a job of ``nodes`` times ``procs_per_node`` processes
is placed as ``nodes`` units of ``procs_per_node`` processes' worth each, all together
or not at all.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from plinth.core.names import PROJECT_NAME as PROJECT

DIGEST = r"^[0-9a-f]{64}$"
POOL = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"  # as governance's secrets
JOB_ID = r"^[0-9a-f]{32}$"
Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "preempted", "lost"]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
MAX_ARGS = 1000
# what an argv and environment may hold together: half of Linux's usual ARG_MAX (2 MiB),
# the rest left for the environment Plinth adds and the wrapper's own argv
MAX_EXEC_BYTES = 1 << 20
MAX_PRIORITY = 1000
Arg = Annotated[str, StringConstraints(max_length=16_384)]
EnvValue = Annotated[str, StringConstraints(max_length=32_768)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME)]
SecretName = Annotated[str, StringConstraints(pattern=SECRET_NAME)]


class Snapshot(BaseModel):
    """A working directory uploaded as one archive (compute/snapshot.py packs it)."""

    model_config = ConfigDict(extra="forbid")
    digest: str = Field(pattern=DIGEST)
    size: int = Field(ge=0)


class JobSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    argv: list[Arg] = Field(min_length=1, max_length=MAX_ARGS, description="never a shell line")
    cpus: float = Field(1.0, ge=0.001, le=4096, description="per process (counted in thousandths)")
    memory: str | None = Field(
        None, max_length=32, description="per process, e.g. 16Gi; over it the job is stopped"
    )
    gpus: int = Field(0, ge=0, le=64, description="per process")
    nodes: int = Field(1, ge=1, le=256, description="units of a gang, started together")
    procs_per_node: int = Field(1, ge=1, le=64)
    pool: str | None = Field(None, pattern=POOL, description="unset: the default pool")
    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="higher first")
    retries: int = Field(0, ge=0, le=20, description="failures retried, with back-off")
    timeout: str | None = Field(None, max_length=32, description="e.g. 2h, 90m, 30s")
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=200)
    secrets: list[SecretName] = Field(
        default_factory=list, max_length=50, description="the project's secrets, by name"
    )
    snapshot: Snapshot | None = Field(None, description="the working directory, uploaded")

    @model_validator(mode="after")
    def _fits_an_exec(self) -> JobSubmit:
        """Refused now, not when the job starts: more than the system passes to a
        program (``E2BIG``)."""
        held = sum(len(arg.encode()) + 1 for arg in self.argv)
        held += sum(len(k) + len(v.encode()) + 2 for k, v in self.env.items())
        if held > MAX_EXEC_BYTES:
            raise ValueError(
                f"argv and env hold {held:,} bytes together; at most {MAX_EXEC_BYTES:,} "
                "reach a program (put long inputs in a file in the working directory)"
            )
        return self


class Job(BaseModel):
    id: str
    project: str
    user: str
    argv: list[str]
    env: dict[str, str]
    secrets: list[str]
    cpus: float
    memory_bytes: int
    gpus: int
    nodes: int
    procs_per_node: int
    pool: str
    priority: int
    retries: int
    retries_used: int
    disruptions: int = Field(description="times it was preempted (not failures)")
    timeout_seconds: float | None
    status: Status
    exit_code: int | None
    reason: str | None
    attempt: int = Field(description="0 until it first starts; +1 at every start")
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    retry_at: float | None
    snapshot: Snapshot | None
    run_id: str | None = Field(description="the tracked run its metrics land in")
    node: str | None

    @property
    def ended(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled", "lost")


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(None, description="pass as cursor for the next page")


class JobsQuery(BaseModel):
    """Which jobs to list, newest first, as query parameters."""

    status: Status | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, max_length=40, description="a page's next_cursor")


class JobLogs(BaseModel):
    """A piece of a worker's log, from byte ``offset``; ask again from ``next_offset``
    to follow it. While the job runs only whole lines are sent."""

    text: str
    offset: int
    next_offset: int
    ended: bool = Field(description="the job has ended: no more will come after the end")
    attempt: int
    rank: int


class JobLogsQuery(BaseModel):
    offset: int = Field(0, ge=0, le=1 << 60)
    limit: int = Field(1 << 20, ge=1, le=8 << 20, description="bytes at most")
    attempt: int | None = Field(None, ge=1, description="unset: the latest")
    rank: int = Field(0, ge=0, le=16_384)


class WaitQuery(BaseModel):
    timeout: float = Field(30.0, ge=0, le=60, description="seconds to wait for it to end")


class NodeUse(BaseModel):
    name: str
    pool: str
    executor: str
    cpus: float
    memory_bytes: int
    gpus: int
    cpus_used: float
    memory_bytes_used: int
    gpus_used: int
    gpu_models: list[str] = Field(default_factory=list)


class PoolUse(BaseModel):
    name: str
    executor: str
    nodes: int
    cpus: float
    memory_bytes: int
    gpus: int
    cpus_used: float
    memory_bytes_used: int
    gpus_used: int
    running: int
    queued: int


UsageBy = Literal["project", "user", "pool", "job"]


class UsageQuery(BaseModel):
    """Whose usage, over which window (seconds since the epoch), as query parameters."""

    by: UsageBy = "project"
    since: float | None = Field(None, ge=0, description="unset: from the first job")
    until: float | None = Field(None, ge=0, description="unset: now")
    project: str | None = Field(
        None, pattern=PROJECT, max_length=200, description="only this project's jobs"
    )
    limit: int = Field(1000, ge=1, le=10_000, description="rows at most, largest cost first")


class UsageRow(BaseModel):
    """One group's resource-hours: what its jobs' attempts were granted, times how long
    each ran inside the window (a running one: until now)."""

    key: str = Field(description="the project, user, pool or job id")
    project: str | None = Field(None, description="by job: the job's project")
    jobs: int
    attempts: int
    hours: float = Field(description="wall-clock hours of its attempts")
    cpu_hours: float
    gpu_hours: float
    gib_hours: float = Field(description="memory granted, GiB x hours")
    cost: float


class Prices(BaseModel):
    cpu_hour: float
    gpu_hour: float
    gib_hour: float


class Usage(BaseModel):
    by: UsageBy
    since: float | None
    until: float
    prices: Prices
    rows: list[UsageRow]
    total: UsageRow = Field(description="every row's sum (all of them, past the limit too)")
