"""What a started job's workers get: their environment, working directory, log files
and share of the placement. Plain functions the dispatcher calls; no database.

The environment is built, never inherited whole: the server's own settings and
credentials (``PLINTH_*``, cloud keys) stay out of a job. A job sees a short list of
the server's variables (``PATH``, locale, ``HOME`` …), its own ``env``, its secrets,
and what ties it to Plinth: ``PLINTH_RUN_ID`` (its tracked run), and either
``PLINTH_URL`` with a token scoped to its project (auth on) or ``PLINTH_HOME`` (a
single-user home, embedded).

Every process also gets what ``torchrun`` would set (``MASTER_ADDR``, ``MASTER_PORT``,
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``NODE_RANK``,
``GROUP_RANK``), so ``init_process_group()`` just works: a job of ``nodes`` x
``procs_per_node`` processes is one PyTorch world, with a fresh port per attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plinth.compute import rendezvous
from plinth.compute.executors import Launch, sandbox_setup
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


# The server's user's credentials that a job must not read (its home is otherwise left
# readable: the interpreter and packages may live there): cloud, cluster, database.
CREDENTIALS = (
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".ssh",
    ".docker",
    ".gnupg",
    ".pgpass",
    ".my.cnf",
    ".netrc",
    ".git-credentials",
    ".s3cfg",
)


def server_paths(settings: Settings) -> tuple[Path, ...]:
    """What the server keeps on this machine that no job may read: its home, the
    folder of a SQLite database outside it (its ``-wal`` and ``-shm`` come and go), a
    local artifact store outside it (made now if need be: a sandbox covers what exists
    when it starts), the master key file, and its user's credentials
    (``CREDENTIALS``)."""
    paths = [settings.home]
    with contextlib.suppress(RuntimeError):  # no home to find them in: none to hide
        paths += [Path.home() / name for name in CREDENTIALS]
    url = settings.resolved_database_url()
    if url.startswith("sqlite:///"):
        paths.append(Path(url.removeprefix("sqlite:///").split("?")[0]).parent)
    artifacts = settings.resolved_artifacts_url()
    if "://" not in artifacts or artifacts.startswith("file://"):
        store = Path(artifacts.removeprefix("file://"))
        store.mkdir(parents=True, exist_ok=True)
        paths.append(store)
    if settings.master_key_file is not None:
        paths.append(settings.master_key_file)
    home = settings.home.resolve()
    kept = [p.resolve() for p in paths]
    return tuple(dict.fromkeys(p for p in kept if p == home or not p.is_relative_to(home)))


def workers(
    job: Any,
    attempt: int,
    allocations: tuple[Allocation, ...],
    env: dict[str, str],
    cwd: Path,
    settings: Settings,
    hidden: tuple[Path, ...] = (),
) -> list[Launch]:
    """One Launch per process: ``procs_per_node`` on each unit's node, each with its
    share of the unit's CPUs and GPUs and the rendezvous variables torchrun would set;
    ``hidden``: what a local worker's sandbox hides (``server_paths``)."""
    procs, world = job.procs_per_node, job.units * job.procs_per_node
    local = executor_of(settings, job.pool) == "local"
    gang = rendezvous_env(allocations, world, local)
    threads = str(max(1, int(job.cpus)))  # torch and numpy: as many threads as CPUs
    argv = tuple(json.loads(job.argv))
    # a sandboxed job's temporary folder is its own /tmp, unless its env names one; the
    # server's is out of its reach
    own_tmp = bool(hidden) and local and "TMPDIR" not in json.loads(job.env)
    launches = []
    for unit, allocation in enumerate(allocations):
        for local_rank in range(procs):
            rank = unit * procs + local_rank
            own = {"OMP_NUM_THREADS": threads, **env, **gang}
            if own_tmp:
                own["TMPDIR"] = sandbox_setup.TMPS[0]
            own.update(
                RANK=str(rank),
                LOCAL_RANK=str(local_rank),
                NODE_RANK=str(unit),
                GROUP_RANK=str(unit),
                LOCAL_WORLD_SIZE=str(procs),
            )
            hosts_store = local and world > 1 and rank == 0
            launches.append(
                Launch(
                    job_id=job.id,
                    attempt=attempt,
                    rank=rank,
                    argv=rendezvous.hosted(argv) if hosts_store else argv,
                    env=own,
                    cwd=cwd,
                    log_path=log_path(settings, job.id, attempt, rank),
                    node=allocation.node,
                    cpu_ids=_share(allocation.cpu_ids, local_rank, procs),
                    gpu_ids=_share(allocation.gpu_ids, local_rank, procs),
                    memory_bytes=job.memory_bytes or None,
                    snapshot=(
                        f"{job.project}/{job.snapshot_digest}" if job.snapshot_digest else None
                    ),
                    hidden=hidden if local else (),
                )
            )
    return launches


def executor_of(settings: Settings, pool: str) -> str:
    found = [p.executor for p in settings.compute.pools if p.name == pool]
    return found[0] if found else "local"


def rendezvous_env(allocations: tuple[Allocation, ...], world: int, local: bool) -> dict[str, str]:
    """What every process of a job shares: where rank 0's rendezvous store is, and how
    many processes meet there. Set for a single process too (as torchrun does), so a
    DDP program runs unchanged at any size.

    On the local executor everything stays on loopback: the store is hosted bound to
    127.0.0.1 by ``rendezvous.py`` around rank 0's command (torch's own would listen on
    every interface) and every rank joins it as a client; gloo and NCCL are told to use
    the loopback interface. Elsewhere ``MASTER_ADDR`` is the first worker's node (an
    executor that knows its address better, a pod's DNS name or a Ray node's IP, sets
    it before starting the workers); the store is then rank 0's own."""
    env = {
        "MASTER_ADDR": "127.0.0.1" if local else allocations[0].node,
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(world),
    }
    if local and world > 1:
        env[rendezvous.AGENT_STORE] = "True"
        loopback = _loopback_interface()
        if loopback is not None:
            env.update(GLOO_SOCKET_IFNAME=loopback, NCCL_SOCKET_IFNAME=loopback)
    return env


def _share(ids: tuple[int, ...], index: int, parts: int) -> tuple[int, ...]:
    """The ``index``-th of ``parts`` even slices of ``ids``."""
    if not ids or parts == 1:
        return ids
    size = len(ids) // parts
    return ids[index * size : (index + 1) * size] if size else ids


def _loopback_interface() -> str | None:
    """``lo`` on Linux, ``lo0`` on macOS; None where the OS names none."""
    try:
        names = {name for _, name in socket.if_nameindex()}
    except OSError:
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)


# Ports handed out lately and maybe not bound yet: a port is free when probed, and
# stays free until rank 0 binds it, so two jobs started in one round (or a retry
# started before its predecessor's port is reused) must not be handed the same one.
_HANDED_SECONDS = 120.0
_handed: dict[int, float] = {}
_handed_lock = threading.Lock()


def free_port() -> int:
    """A loopback port no process holds now and none was handed lately."""
    now = time.monotonic()
    with _handed_lock:
        for port, at in list(_handed.items()):
            if now - at > _HANDED_SECONDS:
                del _handed[port]
        for _ in range(64):
            port = _probe()
            if port not in _handed:
                _handed[port] = now
                return port
    raise OSError("no free loopback port for a job's rendezvous")


def _probe() -> int:
    # No SO_REUSEADDR: a port some connection still holds (TIME_WAIT) is not offered.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
