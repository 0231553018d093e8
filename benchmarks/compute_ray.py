"""Ray executor overhead: N short workers through Plinth's RayExecutor (launch, then
poll until all ended) against N raw Ray tasks running the same subprocess.

    .venv/bin/python benchmarks/compute_ray.py --count 100

The cluster is the tests' (``tests/compute/ray_cluster.py``: two nodes on loopback in a
network namespace, token auth); both measurements run in one driver inside it, one
after the other, each from a warm connection. The program is ``python -c pass``. The
figure is wall time from the first submit to the last end; the ratio is Plinth / raw.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

INNER = r"""
import json, subprocess, sys, tempfile, time
from pathlib import Path
import ray
from plinth.compute.executors import Launch
from plinth.compute.executors.ray import RayExecutor

address, ip, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
argv = [sys.executable, "-c", "pass"]
executor = RayExecutor(address, node_ip_address=ip)
executor._connect()

@ray.remote(num_cpus=1)
def raw(argv, log):
    with open(log, "ab") as out:
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode

tmp = Path(tempfile.mkdtemp(prefix="plinth-bench-ray-"))
ray.get([raw.remote(argv, str(tmp / "warm.log")) for _ in range(4)])  # warm workers
began = time.perf_counter()
codes = ray.get([raw.remote(argv, str(tmp / f"raw-{i}.log")) for i in range(count)])
raw_s = time.perf_counter() - began
assert codes == [0] * count

began = time.perf_counter()
handles = [
    executor.launch(Launch(f"b{i}", 1, 0, tuple(argv), {}, tmp, tmp / f"p-{i}.log", "ray"))
    for i in range(count)
]
pending = list(handles)
while pending:
    pending = [h for h in pending if executor.poll(h).state == "running"]
    time.sleep(0.01)
plinth_s = time.perf_counter() - began
assert all(executor.poll(h).exit_code == 0 for h in handles)
executor.close()
print(json.dumps({"count": count, "raw_s": raw_s, "plinth_s": plinth_s}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    from tests.compute.ray_cluster import HEAD_IP, client_env, ray_cluster

    with ray_cluster() as cluster:
        env = {**os.environ, **client_env(cluster.token), "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(
            [
                *cluster.enter(),
                sys.executable,
                "-c",
                INNER,
                cluster.address,
                HEAD_IP,
                str(args.count),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ratio = result["plinth_s"] / result["raw_s"]
    print(
        f"{result['count']} short workers: raw Ray tasks {result['raw_s']:.2f} s, "
        f"Plinth RayExecutor {result['plinth_s']:.2f} s, ratio {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
