"""Resources: reading this machine (CPUs, memory, GPUs through NVML), nodes from the
configured pools, and the sizes and durations users type."""

from __future__ import annotations

import os
import socket
import sys
import types
from typing import Any

import pytest

from plinth.compute.resources import (
    Gpu,
    Node,
    Resources,
    detect_gpus,
    detect_local_node,
    nodes_from_settings,
    parse_duration,
    parse_memory,
)
from plinth.errors import InvalidInput
from plinth.settings import ComputeSettings, NodeSettings, PoolSettings

GiB = 1 << 30


# -- parse_memory ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16Gi", 16 * GiB),
        ("512Mi", 512 << 20),
        ("1Ki", 1024),
        ("2Ti", 2 << 40),
        ("2G", 2_000_000_000),
        ("1500K", 1_500_000),
        ("3M", 3_000_000),
        ("1T", 10**12),
        ("1500000", 1_500_000),
        ("1.5Gi", 3 * GiB // 2),
        ("16GiB", 16 * GiB),
        (" 64gi ", 64 * GiB),
    ],
)
def test_parse_memory_reads_binary_decimal_and_plain_bytes(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        *("", "lots", "16 Gigs", "Gi", "-1Gi", "0", "0Gi", "1e9", "nan", "12Xi", "1.2.3M"),
        *("\u0661\u0662Gi", "1\u00a0Gi", "\uff11Gi"),  # other scripts' digits and spaces
    ],
)
def test_parse_memory_refuses_junk_zero_and_negative(text: str) -> None:
    with pytest.raises(InvalidInput, match="memory"):
        parse_memory(text)


# -- parse_duration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", 7200.0),
        ("90m", 5400.0),
        ("30s", 30.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("45", 45.0),
        ("0.5", 0.5),
        ("1.5h", 5400.0),
        ("1h 30m", 5400.0),
    ],
)
def test_parse_duration_reads_units_and_plain_seconds(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        *("", "soon", "2x", "h", "-5", "0", "0s", "30m2h", "2hh"),
        *("\u0661\u0662s", "\u0661\u0662", "3651d", "9" * 31),  # other digits; too long
    ],
)
def test_parse_duration_refuses_junk_and_zero(text: str) -> None:
    with pytest.raises(InvalidInput, match="duration"):
        parse_duration(text)


# -- this machine ----------------------------------------------------------------


def test_detect_local_node_reads_this_machines_cpus_and_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were absent
    node = detect_local_node(pool="cpu")
    assert node.name == socket.gethostname()
    assert (node.pool, node.executor) == ("cpu", "local")
    if hasattr(os, "sched_getaffinity"):
        assert set(node.cpu_ids) == os.sched_getaffinity(0)
        assert node.capacity.cpus == len(os.sched_getaffinity(0))
    assert node.capacity.memory_bytes > 0
    assert node.gpus == () and node.capacity.gpus == 0
    assert detect_local_node(name="box-1").name == "box-1"


class _NVMLError(Exception):
    pass


def _fake_nvml(devices: list[dict[str, Any]], init_error: bool = False) -> types.ModuleType:
    """A stand-in for ``pynvml`` answering from ``devices`` (what a driver would say)."""
    nvml = types.ModuleType("pynvml")
    state = {"shutdown": 0}

    def init() -> None:
        if init_error:
            raise _NVMLError("Driver Not Loaded")

    def utilization(i: int) -> Any:
        if devices[i].get("util") is None:
            raise _NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=devices[i]["util"], memory=0)

    nvml.__dict__.update(
        NVMLError=_NVMLError,
        nvmlInit=init,
        nvmlShutdown=lambda: state.__setitem__("shutdown", state["shutdown"] + 1),
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda i: devices[i]["name"],
        nvmlDeviceGetUUID=lambda i: devices[i]["uuid"],
        nvmlDeviceGetMemoryInfo=lambda i: types.SimpleNamespace(total=devices[i]["mem"]),
        nvmlDeviceGetUtilizationRates=utilization,
        state=state,
    )
    return nvml


def test_gpus_come_from_nvml_with_model_uuid_memory_and_utilization(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = _fake_nvml(
        [
            {"name": "NVIDIA H200", "uuid": "GPU-aaa", "mem": 141 * GiB, "util": 37},
            {"name": b"NVIDIA A100", "uuid": b"GPU-bbb", "mem": 80 * GiB, "util": None},
        ]
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert detect_gpus() == (
        Gpu(0, "GPU-aaa", "NVIDIA H200", 141 * GiB, 37.0),
        Gpu(1, "GPU-bbb", "NVIDIA A100", 80 * GiB, None),
    )
    assert nvml.state["shutdown"] == 1  # NVML is released after reading
    node = detect_local_node()
    assert node.capacity.gpus == 2 and [g.index for g in node.gpus] == [0, 1]


def test_an_nvml_error_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([], init_error=True))
    assert detect_gpus() == ()
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert detect_gpus() == ()


# -- nodes from settings -----------------------------------------------------------


MACHINE = Node(
    "host-a",
    "local",
    "local",
    Resources(cpus=4.0, memory_bytes=8 * GiB, gpus=1),
    cpu_ids=(0, 1, 2, 3),
    gpus=(Gpu(0, "GPU-real", "NVIDIA T4", 16 * GiB, 5.0),),
)


def _machine_counting() -> tuple[list[int], Any]:
    calls: list[int] = []

    def machine() -> Node:
        calls.append(1)
        return MACHINE

    return calls, machine


def test_a_local_pool_without_nodes_is_this_machine() -> None:
    calls, machine = _machine_counting()
    nodes = nodes_from_settings(ComputeSettings(), machine)
    assert nodes == [MACHINE]
    assert len(calls) == 1


def test_declared_local_nodes_take_unset_figures_from_the_machine() -> None:
    calls, machine = _machine_counting()
    compute = ComputeSettings(
        pools=[
            PoolSettings(
                name="local",
                nodes=[
                    NodeSettings(name="n1"),
                    NodeSettings(name="n2", cpus=2, memory="2Gi", gpus=0),
                ],
            )
        ]
    )
    n1, n2 = nodes_from_settings(compute, machine)
    assert n1 == Node("n1", "local", "local", MACHINE.capacity, MACHINE.cpu_ids, MACHINE.gpus)
    assert n2.capacity == Resources(cpus=2.0, memory_bytes=2 * GiB, gpus=0)
    assert n2.cpu_ids == (0, 1)  # pinned to CPUs that exist
    assert n2.gpus == ()
    assert len(calls) == 1  # the machine is read once for all pools


def test_gpu_slots_are_declared_even_on_a_cpu_machine() -> None:
    cpu_machine = Node("host-b", "local", "local", Resources(2.0, 4 * GiB, 0), (0, 1))
    compute = ComputeSettings(
        pools=[PoolSettings(name="local", nodes=[NodeSettings(name="gpu-box", gpus=2, cpus=8)])]
    )
    (node,) = nodes_from_settings(compute, lambda: cpu_machine)
    assert node.capacity.gpus == 2
    assert node.gpus == (Gpu(0), Gpu(1))
    assert node.cpu_ids == ()  # 8 declared CPUs on a 2-CPU machine: no pinning
    # On a machine with a real GPU 0, slot 0 is described by it.
    (node,) = nodes_from_settings(compute, lambda: MACHINE)
    assert node.gpus == (MACHINE.gpus[0], Gpu(1))


def test_remote_pools_use_declared_figures_and_never_read_the_machine() -> None:
    def machine() -> Node:
        raise AssertionError("a ray pool's nodes are not this machine")

    compute = ComputeSettings(
        pools=[
            PoolSettings(
                name="onprem",
                executor="ray",
                nodes=[NodeSettings(name="r1", cpus=16, memory="64Gi", gpus=4)],
            ),
            PoolSettings(name="cloud", executor="kubernetes"),
        ]
    )
    (node,) = nodes_from_settings(compute, machine)
    assert (node.name, node.pool, node.executor) == ("r1", "onprem", "ray")
    assert node.capacity == Resources(16.0, 64 * GiB, 4)
    assert [g.index for g in node.gpus] == [0, 1, 2, 3]

    compute = ComputeSettings(
        pools=[PoolSettings(name="onprem", executor="ray", nodes=[NodeSettings(name="r1")])]
    )
    with pytest.raises(InvalidInput, match=r"r1.*set its cpus and memory"):
        nodes_from_settings(compute, machine)


def test_clashing_pools_and_nodes_and_bad_memory_are_refused() -> None:
    twice = ComputeSettings(pools=[PoolSettings(name="a"), PoolSettings(name="a")])
    with pytest.raises(InvalidInput, match="configured twice"):
        nodes_from_settings(twice, lambda: MACHINE)
    same_host = ComputeSettings(pools=[PoolSettings(name="a"), PoolSettings(name="b")])
    with pytest.raises(InvalidInput, match=r"host-a.*own name"):
        nodes_from_settings(same_host, lambda: MACHINE)
    bad = ComputeSettings(
        pools=[PoolSettings(name="a", nodes=[NodeSettings(name="n", memory="much")])]
    )
    with pytest.raises(InvalidInput, match="memory 'much'"):
        nodes_from_settings(bad, lambda: MACHINE)
