"""What a job asks for and what a node has: CPUs, memory, GPUs.

``Resources`` is the unit the scheduler adds and compares; ``Node`` is one machine of a
pool with its capacity and the ids of its CPUs and GPU slots, so that a placement can
name exactly which ones a worker gets. ``detect_local_node`` reads this machine (GPUs
through NVML when ``nvidia-ml-py`` and a driver are present, none otherwise);
``parse_memory`` and ``parse_duration`` read what users type (``16Gi``, ``2h``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    raise NotImplementedError  # helper E


def parse_memory(text: str) -> int:
    """``16Gi``, ``512Mi``, ``2G``, ``1500000`` → bytes. Raises InvalidInput."""
    raise NotImplementedError  # helper E


def parse_duration(text: str) -> float:
    """``2h``, ``90m``, ``30s``, ``1h30m``, ``45`` → seconds. Raises InvalidInput."""
    raise NotImplementedError  # helper E
