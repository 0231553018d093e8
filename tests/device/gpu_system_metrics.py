"""Device check, run by hand on a machine with an NVIDIA GPU (not collected by pytest).

A run with system metrics on, while PyTorch keeps the GPU busy, must record the GPU's
utilisation and memory as metrics of the run.

    PYTHONPATH=src python3 tests/device/gpu_system_metrics.py
"""

from __future__ import annotations

import tempfile
import time

import torch

import plinth
from plinth.settings import Settings


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    settings = Settings(home=tempfile.mkdtemp(), url=None, token=None)
    settings.tracking.system_metrics_seconds = 0.25
    with plinth.Client(settings=settings) as client:
        with plinth.start_run("gpu", name="matmul", client=client) as run:
            a = torch.randn(8192, 8192, device="cuda")
            held = torch.empty(4 << 30, dtype=torch.uint8, device="cuda")  # 4 GiB
            deadline, step = time.time() + 4, 0
            while time.time() < deadline:
                b = a @ a
                torch.cuda.synchronize()
                run.log({"norm": float(b.norm())}, step=step)
                step += 1
            del held
        util = [p.value for p in client.metric_history(run.id, "system/gpu0/utilization_percent")]
        used = [p.value for p in client.metric_history(run.id, "system/gpu0/memory_used_gb")]
        print(
            f"samples {len(util)}; utilisation max {max(util):.0f}%; "
            f"memory used max {max(used):.2f} GB; {step} matmuls logged"
        )
        assert len(util) >= 8 and max(util) > 50, util
        assert max(used) > 4.0, used
        assert len(client.metric_history(run.id, "norm")) == step
    print("GPU system metrics: OK")


if __name__ == "__main__":
    main()
