"""What a job asks for and what a node has: CPUs, memory, GPUs.

``Resources`` is the unit the scheduler adds and compares; ``Node`` is one machine of a
pool with its capacity and the ids of its CPUs and GPU slots, so that a placement can
name exactly which ones a worker gets. ``detect_local_node`` reads this machine (GPUs
through NVML when ``nvidia-ml-py`` and a driver are present, none otherwise);
``nodes_from_settings`` turns the configured pools into nodes; ``parse_memory`` and
``parse_duration`` read what users type (``16Gi``, ``2h``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import psutil

from plinth.errors import InvalidInput

if TYPE_CHECKING:
    from plinth.settings import ComputeSettings, NodeSettings, PoolSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    memory_bytes: int = 0
    gpus: int = 0


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str = ""
    name: str = ""
    memory_bytes: int = 0
    utilization: float | None = None  # percent, as NVML last saw it


@dataclass(frozen=True)
class Node:
    name: str
    pool: str
    executor: str  # "local", "ray", "kubernetes"
    capacity: Resources
    cpu_ids: tuple[int, ...] = ()  # for affinity; empty where the OS gives none
    gpus: tuple[Gpu, ...] = field(default=())


def detect_local_node(pool: str = "local", name: str | None = None) -> Node:
    """This machine as one node: the CPUs this process may run on (its affinity, so a
    container's cpuset is respected), its memory (a cgroup limit when lower) and the
    GPUs NVML sees."""
    cpu_ids = _cpu_ids()
    gpus = detect_gpus()
    cpus = float(len(cpu_ids) or os.cpu_count() or 1)
    capacity = Resources(cpus=cpus, memory_bytes=_memory_bytes(), gpus=len(gpus))
    return Node(name or socket.gethostname(), pool, "local", capacity, cpu_ids, gpus)


def _cpu_ids() -> tuple[int, ...]:
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:  # macOS, Windows: no affinity, so nothing to pin to
        return ()
    return tuple(sorted(getaffinity(0)))


def _memory_bytes() -> int:
    total = int(psutil.virtual_memory().total)
    try:  # cgroup v2: a container's limit, when it has one, is what jobs really get
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdecimal() else total


def detect_gpus() -> tuple[Gpu, ...]:
    """NVIDIA GPUs through NVML. No ``nvidia-ml-py``, no driver or any NVML error: no
    GPUs (a CPU machine is a normal case, logged at debug only)."""
    try:
        import pynvml
    except ImportError:
        log.debug("nvidia-ml-py is not installed: no GPUs detected")
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        log.debug("NVML unavailable (%s): no GPUs detected", e)
        return ()
    try:
        return tuple(_read_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount()))
    except pynvml.NVMLError as e:
        log.debug("NVML failed reading GPUs (%s): no GPUs detected", e)
        return ()
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _read_gpu(nvml: Any, index: int) -> Gpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    utilization: float | None
    try:
        utilization = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except nvml.NVMLError:  # some devices (a MIG slice) report none
        utilization = None
    return Gpu(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
        utilization=utilization,
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older bindings: bytes


def nodes_from_settings(
    compute: ComputeSettings, machine: Callable[[], Node] = detect_local_node
) -> list[Node]:
    """Every configured pool's nodes. A local pool without nodes is this machine as one
    node named after the host; a declared node's unset figures are the machine's (local
    pools only; a Ray or Kubernetes node must state its CPUs and memory). ``gpus: N``
    declares N GPU slots with ids 0…N-1, real or not, so scheduling can be exercised on
    a CPU machine. ``machine`` is read at most once."""
    seen_pools: set[str] = set()
    owners: dict[str, str] = {}
    detected: list[Node] = []

    def this_machine() -> Node:
        if not detected:
            detected.append(machine())
        return detected[0]

    nodes: list[Node] = []
    for pool in compute.pools:
        if pool.name in seen_pools:
            raise InvalidInput(f"pool {pool.name!r} is configured twice")
        seen_pools.add(pool.name)
        for node in _pool_nodes(pool, this_machine):
            if node.name in owners:
                raise InvalidInput(
                    f"node {node.name!r} is in pools {owners[node.name]!r} and "
                    f"{pool.name!r}: give each node its own name"
                )
            owners[node.name] = pool.name
            nodes.append(node)
    return nodes


def _pool_nodes(pool: PoolSettings, this_machine: Callable[[], Node]) -> list[Node]:
    if pool.executor != "local":
        return [_declared_remote(pool, n) for n in pool.nodes]
    if not pool.nodes:
        return [replace(this_machine(), pool=pool.name)]
    return [_declared_local(pool, n, this_machine()) for n in pool.nodes]


def _declared_local(pool: PoolSettings, declared: NodeSettings, machine: Node) -> Node:
    cpus = declared.cpus if declared.cpus is not None else machine.capacity.cpus
    wanted = math.ceil(cpus)
    # Pin only to CPUs that exist: more declared than the machine has means no pinning.
    cpu_ids = machine.cpu_ids[:wanted] if wanted <= len(machine.cpu_ids) else ()
    memory = (
        parse_memory(declared.memory)
        if declared.memory is not None
        else machine.capacity.memory_bytes
    )
    gpus = machine.gpus if declared.gpus is None else _gpu_slots(declared.gpus, machine.gpus)
    capacity = Resources(cpus=cpus, memory_bytes=memory, gpus=len(gpus))
    return Node(declared.name, pool.name, "local", capacity, cpu_ids, gpus)


def _gpu_slots(count: int, real: tuple[Gpu, ...]) -> tuple[Gpu, ...]:
    """``count`` slots 0…count-1, described by the real GPU of that index if any."""
    by_index = {g.index: g for g in real}
    return tuple(by_index.get(i, Gpu(index=i)) for i in range(count))


def _declared_remote(pool: PoolSettings, declared: NodeSettings) -> Node:
    if declared.cpus is None or declared.memory is None:
        raise InvalidInput(
            f"node {declared.name!r} of {pool.executor} pool {pool.name!r}: set its cpus "
            "and memory (only a local pool's nodes are read off this machine)"
        )
    gpus = _gpu_slots(declared.gpus or 0, ())
    capacity = Resources(declared.cpus, parse_memory(declared.memory), len(gpus))
    return Node(declared.name, pool.name, pool.executor, capacity, (), gpus)


# ASCII only: \d and \s also match other scripts' digits and spaces ("\u0661\u0662Gi")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(?:([KMGTP])(i)?)?B?", re.IGNORECASE | re.ASCII)
_MEMORY_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_memory(text: str) -> int:
    """``16Gi``, ``512Mi``, ``2G``, ``1500000`` → bytes. Raises InvalidInput.

    ``Ki Mi Gi Ti Pi`` are powers of 1024, ``K M G T P`` powers of 1000 (Kubernetes'
    reading); a trailing ``B`` is allowed (``16GiB``); a bare number is bytes."""
    match = _MEMORY.fullmatch(str(text).strip())
    if match is None:
        raise InvalidInput(
            f"memory {text!r}: expected a size like 512Mi, 16Gi, 2G or a number of bytes"
        )
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    value = int(float(number) * base ** _MEMORY_UNITS[(unit or "").upper()])
    if value <= 0:
        raise InvalidInput(f"memory {text!r}: must be at least one byte")
    return value


_DURATION = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?",
    re.IGNORECASE | re.ASCII,
)
_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_LONGEST = 3650 * 86400.0  # ten years: a timeout or a period longer is a typo


def parse_duration(text: str) -> float:
    """``2h``, ``90m``, ``30s``, ``1h30m``, ``1d``, ``45`` → seconds. Raises InvalidInput
    (for junk, and for zero or less: a duration here is a timeout or a period)."""
    cleaned = str(text).strip().replace(" ", "")
    seconds: float | None = None
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned, re.ASCII):
        seconds = float(cleaned)
    elif cleaned and (match := _DURATION.fullmatch(cleaned)):
        seconds = sum(float(v) * _SECONDS[k] for k, v in match.groupdict().items() if v)
    if seconds is None:
        raise InvalidInput(
            f"duration {text!r}: expected e.g. 2h, 90m, 30s, 1h30m, 1d or a number of seconds"
        )
    if seconds <= 0:
        raise InvalidInput(f"duration {text!r}: must be more than zero")
    if seconds > _LONGEST:
        raise InvalidInput(f"duration {text!r}: at most 3650d (ten years)")
    return seconds
