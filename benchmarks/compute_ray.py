"""Ray executor overhead: N short workers through Plinth's RayExecutor (launch, then
poll until all ended) against N raw Ray tasks running the same subprocess.

    .venv/bin/python benchmarks/compute_ray.py --count 100 --repeats 3

The cluster is the tests' (``tests/compute/ray_cluster.py``: two nodes on loopback in a
network namespace, token auth); both measurements run in one driver inside it, from a
warm connection, after warm-up work of each kind (Ray's worker processes started,
Plinth's launcher made), alternating raw and Plinth rounds so that neither gains from
going second. The program is ``python -c pass``. Each figure is wall time from the
first submit to the last end; the ratio is of the medians, Plinth / raw.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

address, ip, count, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
argv = (sys.executable, "-c", "pass")
executor = RayExecutor(address, node_ip_address=ip)
executor._connect()

@ray.remote(num_cpus=1)
def raw(argv, log):
    with open(log, "ab") as out:
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode

tmp = Path(tempfile.mkdtemp(prefix="plinth-bench-ray-"))


def raws(prefix, n):
    codes = ray.get([raw.remote(argv, str(tmp / f"{prefix}-{i}.log")) for i in range(n)])
    assert codes == [0] * n


def plinth(prefix, n):
    handles = [
        executor.launch(Launch(f"{prefix}{i}", 1, 0, argv, {}, tmp, tmp / f"{prefix}{i}", "ray"))
        for i in range(n)
    ]
    pending = list(handles)
    while pending:
        pending = [h for h in pending if executor.poll(h).state == "running"]
        time.sleep(0.02)
    assert all(executor.poll(h).exit_code == 0 for h in handles)


raws("warm", 16)
plinth("warm", 16)
raw_s, plinth_s = [], []
for round in range(repeats):
    for kind, run, times in (("raw", raws, raw_s), ("plinth", plinth, plinth_s)):
        began = time.perf_counter()
        run(f"{kind}{round}-", count)
        times.append(time.perf_counter() - began)
executor.close()
print(json.dumps({"count": count, "raw_s": raw_s, "plinth_s": plinth_s}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
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
                str(args.repeats),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        sys.exit(f"the benchmark's driver failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    raw, plinth = statistics.median(result["raw_s"]), statistics.median(result["plinth_s"])
    print(f"{result['count']} short workers, medians of {len(result['raw_s'])} rounds:")
    for label, median, times in (
        ("raw Ray tasks     ", raw, result["raw_s"]),
        ("Plinth RayExecutor", plinth, result["plinth_s"]),
    ):
        print(f"  {label} {median:.2f} s  ({', '.join(f'{t:.2f}' for t in times)})")
    print(f"  ratio {plinth / raw:.2f}x (Plinth / raw; goal: at most 1.10x)")


if __name__ == "__main__":
    main()
