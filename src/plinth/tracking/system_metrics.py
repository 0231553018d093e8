"""Optional system metrics sampled into a run: CPU, memory, and GPUs when present."""

from __future__ import annotations

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


def _gpu_sample() -> dict[str, float]:
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:
        return {}
    values = {}
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        values[f"system/gpu{i}/utilization_percent"] = float(util.gpu)
        values[f"system/gpu{i}/memory_used_gb"] = mem.used / 1e9
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
