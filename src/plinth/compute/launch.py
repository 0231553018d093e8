"""What a started job's workers get: their environment, working directory, log files
and share of the placement. Plain functions the dispatcher calls; no database.

The environment is built, never inherited whole: the server's own settings and
credentials (``PLINTH_*``, cloud keys) stay out of a job. A job sees a short list of
the server's variables (``PATH``, locale, ``HOME`` …), its own ``env``, its secrets,
and what ties it to Plinth: ``PLINTH_RUN_ID`` (its tracked run), and either
``PLINTH_URL`` with a token scoped to its project (auth on) or ``PLINTH_HOME`` (a
single-user home, embedded).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plinth.compute.executors import Launch
from plinth.compute.scheduler import Allocation
from plinth.settings import Settings

# The server's variables a job inherits: enough to find programs, a locale and a home.
INHERITED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PYTHONPATH",
    "LD_LIBRARY_PATH",
    "SYSTEMROOT",
)
RESERVED_PREFIXES = ("PLINTH_",)
RESERVED = {"CUDA_VISIBLE_DEVICES"}  # the executor isolates GPUs with it


def reserved(name: str) -> bool:
    """A name a job's env may not set: Plinth's own, and the GPU isolation."""
    return name in RESERVED or name.startswith(RESERVED_PREFIXES)


@dataclass(frozen=True)
class Connection:
    """How a job reaches Plinth: a URL and a token, or the home itself."""

    url: str | None = None
    token: str | None = None


def job_dir(settings: Settings, job_id: str, attempt: int) -> Path:
    """Where an attempt keeps its logs and working directory (built from ids only)."""
    return settings.home / "compute" / "jobs" / job_id / str(attempt)


def log_path(settings: Settings, job_id: str, attempt: int, rank: int) -> Path:
    return job_dir(settings, job_id, attempt) / f"rank-{rank}.log"


def base_env(settings: Settings, job: Any, attempt: int, reach: Connection) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.update(json.loads(job.env))
    env.update(
        PYTHONUNBUFFERED="1",  # logs stream as they are written
        PLINTH_JOB_ID=job.id,
        PLINTH_JOB_ATTEMPT=str(attempt),
        PLINTH_PROJECT=job.project,
        PLINTH_COMPUTE__DISPATCH="false",  # a job's own embedded client only queues
    )
    if job.run_id:
        env["PLINTH_RUN_ID"] = job.run_id
    if reach.url is not None:
        env["PLINTH_URL"] = reach.url
        if reach.token is not None:
            env["PLINTH_TOKEN"] = reach.token
    else:
        env.update(home_env(settings))
    return env


def home_env(settings: Settings) -> dict[str, str]:
    """The home a single-user job opens embedded, as the server opened it."""
    env = {"PLINTH_HOME": str(settings.home)}
    if settings.database_url:
        env["PLINTH_DATABASE_URL"] = settings.database_url
    if settings.artifacts_url:
        env["PLINTH_ARTIFACTS_URL"] = settings.artifacts_url
    if settings.master_key_file:
        env["PLINTH_MASTER_KEY_FILE"] = str(settings.master_key_file)
    elif settings.master_key:
        env["PLINTH_MASTER_KEY"] = settings.master_key.get_secret_value()
    return env


def workers(
    job: Any,
    attempt: int,
    allocations: tuple[Allocation, ...],
    env: dict[str, str],
    cwd: Path,
    settings: Settings,
) -> list[Launch]:
    """One Launch per process: ``procs_per_node`` on each unit's node, each with its
    share of the unit's CPUs and GPUs and the rendezvous variables of a gang."""
    procs, world = job.procs_per_node, job.units * job.procs_per_node
    rendezvous = _rendezvous(world)
    launches = []
    for unit, allocation in enumerate(allocations):
        for local in range(procs):
            rank = unit * procs + local
            own = dict(env)
            if world > 1:
                own.update(rendezvous)
                own.update(
                    RANK=str(rank),
                    LOCAL_RANK=str(local),
                    NODE_RANK=str(unit),
                    LOCAL_WORLD_SIZE=str(procs),
                )
            launches.append(
                Launch(
                    job_id=job.id,
                    attempt=attempt,
                    rank=rank,
                    argv=tuple(json.loads(job.argv)),
                    env=own,
                    cwd=cwd,
                    log_path=log_path(settings, job.id, attempt, rank),
                    node=allocation.node,
                    cpu_ids=_share(allocation.cpu_ids, local, procs),
                    gpu_ids=_share(allocation.gpu_ids, local, procs),
                    memory_bytes=job.memory_bytes or None,
                )
            )
    return launches


def _share(ids: tuple[int, ...], index: int, parts: int) -> tuple[int, ...]:
    """The ``index``-th of ``parts`` even slices of ``ids``."""
    if not ids or parts == 1:
        return ids
    size = len(ids) // parts
    return ids[index * size : (index + 1) * size] if size else ids


def _rendezvous(world: int) -> dict[str, str]:
    if world <= 1:
        return {}
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(world)}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
