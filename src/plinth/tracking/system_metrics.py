"""Optional system metrics sampled into a run: CPU, memory, and GPUs when present."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from plinth.tracking.run import Run


def sample() -> dict[str, float]:
    values = {
        "system/cpu_percent": psutil.cpu_percent(interval=None),
        "system/memory_percent": psutil.virtual_memory().percent,
        "system/memory_used_gb": psutil.virtual_memory().used / 1e9,
    }
    values.update(_gpu_sample())
    return values


GPU_QUERY = "index,utilization.gpu,memory.used,memory.total"


def _gpu_sample() -> dict[str, float]:
    """GPU readings from ``nvidia-smi``, which ships with the driver: no Python package
    to install, and nothing at all where there is no NVIDIA GPU."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return {}
    try:
        out = subprocess.run(
            [nvidia_smi, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_nvidia_smi(out)


def parse_nvidia_smi(out: str) -> dict[str, float]:
    values = {}
    for line in out.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4 or not fields[0].isdecimal():
            continue
        index, util, used_mib, total_mib = fields
        with contextlib.suppress(ValueError):  # "[N/A]" on some boards
            values[f"system/gpu{index}/utilization_percent"] = float(util)
        with contextlib.suppress(ValueError):
            values[f"system/gpu{index}/memory_used_gb"] = float(used_mib) * 2**20 / 1e9
            values[f"system/gpu{index}/memory_percent"] = 100 * float(used_mib) / float(total_mib)
    return values


class SystemSampler:
    def __init__(self, run: Run, interval: float) -> None:
        self.run, self.interval = run, interval
        self.stopped = threading.Event()
        self.step = 0
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless
        self.thread = threading.Thread(target=self._loop, name="plinth-sysmetrics", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval):
            ts = time.time()
            points = [(key, value, self.step, ts) for key, value in sample().items()]
            self.run._logger.add(points)  # own step counter, apart from the run's
            self.step += 1

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=self.interval + 1)
