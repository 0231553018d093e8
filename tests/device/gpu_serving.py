"""Device check, run by hand on a machine with an NVIDIA GPU (not collected by pytest).

A PyTorch model saved with the pytorch flavor is served by ``plinth serve --device
cuda``; many concurrent one-row requests must each get the model's own answer, the
micro-batcher must have joined requests into batches of more than one (the batch-size
histogram of ``/metrics``), and the server must hold memory on the GPU (its process in
NVML's or nvidia-smi's list, or the GPU's used memory grown by more than a CUDA
context's worth while it serves).

``--device cpu`` runs the same check on the CPU, without the GPU's part: it proves the
script itself on any machine.

    PYTHONPATH=src:. python3 tests/device/gpu_serving.py                # on the GPU
    PYTHONPATH=src:. python3 tests/device/gpu_serving.py --device cpu   # anywhere
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tests.registry.flavor_models import TinyNet  # importable: the flavor needs that

from plinth.registry.flavors import save_model

FEATURES, CLASSES = 16, 5
REPO = Path(__file__).resolve().parents[2]
CONTEXT_BYTES = 64 << 20  # a CUDA context alone takes more than this


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    if on_gpu:
        assert torch.cuda.is_available(), (
            "no CUDA device (run with --device cpu to check the script)"
        )

    torch.manual_seed(0)
    net = TinyNet(FEATURES, CLASSES).eval()
    rows = np.random.default_rng(0).normal(size=(args.requests, FEATURES)).astype(np.float32)
    with torch.inference_mode():
        expected = net(torch.from_numpy(rows)).numpy()
    folder = Path(tempfile.mkdtemp(prefix="plinth-gpu-serving-"))
    try:
        save_model(
            net,
            folder / "model",
            input_example=rows[:5],
            init_kwargs={"features": FEATURES, "classes": CLASSES},
        )
        before = _gpu_used_bytes() if on_gpu else None
        with _served(folder, args.device) as (port, pid):
            answers = _send(port, rows, args.concurrency)
            metrics = _get(port, "/metrics")
            held = _gpu_memory_of(pid) if on_gpu else None
            after = _gpu_used_bytes() if on_gpu else None
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    got = np.array([a[0] for a in answers], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    batches, single = _batch_counts(metrics)
    largest = _largest_batch(metrics)
    print(
        f"{len(answers)} answers right on {args.device}; {batches} batches, "
        f"{batches - single} of more than one request (largest up to {largest})"
    )
    assert batches - single > 0, "the batcher never joined two requests"
    assert batches < len(answers), "every request ran alone"
    if on_gpu:
        assert before is not None and after is not None
        grown = after - before
        print(
            f"GPU memory: the server's process holds {held} bytes; the GPU's used grew by {grown}"
        )
        assert (held or 0) > 0 or grown > CONTEXT_BYTES, "the server did not use the GPU"
        print("GPU serving: OK")
    else:
        print(f"serving on {args.device}: OK (no GPU part)")


@contextmanager
def _served(folder: Path, device: str) -> Iterator[tuple[int, int]]:
    """``plinth serve`` of the saved model on a free port: (port, pid) until the block ends."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    command = [sys.executable, "-m", "plinth.serving", str(folder / "model"), "--name", "net"]
    command += ["--port", str(port), "--device", device, "--max-wait-ms", "5"]
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while _status(port, "/ready") != 200:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited:\n{(folder / 'server.log').read_text()}")
            if time.monotonic() > deadline:
                raise SystemExit("the server was not ready within 180 s")
            time.sleep(0.2)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def _send(port: int, rows: np.ndarray, concurrency: int) -> list[Any]:
    def one(row: np.ndarray) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            body = json.dumps({"instances": [row.tolist()]})
            conn.request(
                "POST", "/v1/models/net:predict", body, {"Content-Type": "application/json"}
            )
            answer = conn.getresponse()
            data = json.loads(answer.read())
            assert answer.status == 200, data
            return data["predictions"]
        finally:
            conn.close()

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, rows))


def _get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _status(port: int, path: str) -> int:
    """The answer's status; 0 while nothing listens yet."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def _batch_counts(metrics: str) -> tuple[int, int]:
    """Predict calls in all, and those of a single request."""
    total = re.search(r"^plinth_serving_batch_size_count (\S+)$", metrics, re.M)
    single = re.search(r'^plinth_serving_batch_size_bucket\{le="1\.0"\} (\S+)$', metrics, re.M)
    assert total and single, "no batch-size histogram in /metrics"
    return int(float(total.group(1))), int(float(single.group(1)))


def _largest_batch(metrics: str) -> str:
    """The smallest bucket that holds every batch."""
    buckets = re.findall(r'^plinth_serving_batch_size_bucket\{le="([^"]+)"\} (\S+)$', metrics, re.M)
    total = float(buckets[-1][1])
    return next(le for le, count in buckets if float(count) >= total)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _gpu_used_bytes() -> int:
    """Memory used on every GPU this process sees, whoever uses it (the first call
    makes this process's own CUDA context: call it once before the server starts)."""
    used = 0
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        used += total - free
    return used


def _gpu_memory_of(pid: int) -> int | None:
    """GPU memory held by ``pid`` (NVML, else nvidia-smi); None when neither can say
    (in a container, the GPU may list the host's pids)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            held = 0
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.pid == pid:
                        held += int(process.usedGpuMemory or 0)
            return held
        finally:
            pynvml.nvmlShutdown()
    except ImportError:
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    listed = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return sum(
        int(used) << 20
        for found_pid, used in (line.split(", ") for line in listed.splitlines() if ", " in line)
        if int(found_pid) == pid
    )


if __name__ == "__main__":
    main()
