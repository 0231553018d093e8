"""Compute benchmark: how fast a job starts, Plinth's local executor side by side with a
bare process spawn (the floor) and Ray's Jobs API, plus the scheduler's placement time.

    .venv/bin/python benchmarks/compute.py               # everything (`make bench`)
    .venv/bin/python benchmarks/compute.py --quick       # small counts, a smoke run
    .venv/bin/python benchmarks/compute.py --skip ray    # no Ray Jobs (no virtualenv)

Every job is the same program: ``python -c`` writing ``time.time()`` to a file as its
first act. **Submit-to-running** is that time minus the moment just before the submit
call: the whole path a user waits for (the API, the queue, the scheduler, the spawn,
the interpreter's start), measured the same way for all three:

- ``floor``: ``subprocess.Popen`` of the program, nothing else;
- ``plinth``: ``client.submit_job`` on an embedded home (one local node, 1 CPU per job,
  no working-directory snapshot), one job at a time, each waited for to end;
- ``ray jobs``: ``JobSubmissionClient.submit_job`` against a local Ray head (started
  here on loopback, stopped by PID), from Ray's own virtualenv
  (``benchmarks/.venv-ray``, shared with the serving benchmark, made on first use).

**Throughput** submits ``--jobs`` jobs as fast as the client goes and waits for all to
succeed (the floor: the same count of spawns, as many at once as the node has CPUs).
The scheduler's figures come from ``compute_scheduler.py`` (10,000 queued across 20
projects). Every figure is a median; the machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import compute_scheduler  # beside this file
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
WORK_ROOT = HERE / ".work"
STAMP = "import sys, time; open(sys.argv[1], 'w').write(repr(time.time()))"
GOAL_MS = 20.0
GOAL_FLOOR_RATIO = 1.6
GOAL_RAY_RATIO = 100.0
console = Console() if sys.stdout.isatty() else Console(width=140)


def step(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}")


def wait_file(path: Path, timeout: float = 60.0) -> float:
    """The time the job wrote into ``path`` (its first act)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text()
            if text:
                return float(text)
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never written")
        time.sleep(0.0005)


# the floor ---------------------------------------------------------------------------


def floor_latency(n: int, work: Path) -> list[float]:
    found = []
    for i in range(n):
        stamp = work / f"floor-{i}"
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "-c", STAMP, str(stamp)])
        found.append(wait_file(stamp) - t0)
        proc.wait()
    return found


def floor_throughput(n: int, work: Path, at_once: int) -> float:
    t0, running = time.perf_counter(), []
    for i in range(n):
        while len(running) >= at_once:
            running = [p for p in running if p.poll() is None]
            time.sleep(0.0005)
        running.append(subprocess.Popen([sys.executable, "-c", STAMP, str(work / f"ft-{i}")]))
    for proc in running:
        proc.wait()
    return n / (time.perf_counter() - t0)


# Plinth ------------------------------------------------------------------------------


def plinth_client(home: Path, cpus: int) -> Any:
    import plinth
    from plinth.settings import ComputeSettings, NodeSettings, PoolSettings, Settings

    node = NodeSettings(name="bench", cpus=cpus, memory="8Gi")
    compute = ComputeSettings(pools=[PoolSettings(name="local", nodes=[node])], handoff=False)
    return plinth.Client(settings=Settings(home=home, url=None, token=None, compute=compute))


def plinth_latency(client: Any, n: int, work: Path) -> list[float]:
    found = []
    argv = [sys.executable, "-c", STAMP]
    for i in range(n):
        stamp = work / f"plinth-{i}"
        t0 = time.time()
        job = client.submit_job("bench-compute", [*argv, str(stamp)], workdir=None)
        found.append(wait_file(stamp) - t0)
        if client.wait_job("bench-compute", job.id, timeout=60).status != "succeeded":
            raise AssertionError(f"job {job.id} did not succeed")
    return found


def plinth_throughput(client: Any, n: int, work: Path) -> float:
    argv = [sys.executable, "-c", STAMP]
    t0 = time.perf_counter()
    ids = [
        client.submit_job("bench-compute", [*argv, str(work / f"pt-{i}")], workdir=None).id
        for i in range(n)
    ]
    for job_id in ids:
        job = client.wait_job("bench-compute", job_id, timeout=600)
        if job.status != "succeeded":
            raise AssertionError(f"job {job_id} ended {job.status}: {job.reason}")
    return n / (time.perf_counter() - t0)


# Ray Jobs ----------------------------------------------------------------------------

RAY_WORKER = r"""
import json, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

cfg = json.loads(sys.argv[1])
work = Path(cfg["work"])
env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
ray = str(Path(sys.executable).parent / "ray")
temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 bytes
head = subprocess.Popen(
    [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
     f"--port={cfg['gcs_port']}", "--dashboard-host=127.0.0.1",
     f"--dashboard-port={cfg['dashboard_port']}", "--include-dashboard=true",
     f"--num-cpus={cfg['cpus']}", f"--temp-dir={temp}"],
    env=env, stdout=open(work / "ray-head.log", "wb"), stderr=subprocess.STDOUT,
)
try:
    from ray.job_submission import JobSubmissionClient, JobStatus
    deadline = time.monotonic() + 120
    while True:
        try:
            client = JobSubmissionClient(f"http://127.0.0.1:{cfg['dashboard_port']}")
            client.list_jobs()
            break
        except Exception:
            if time.monotonic() > deadline or head.poll() is not None:
                raise
            time.sleep(0.5)
    found = []
    for i in range(cfg["n"]):
        stamp = work / f"ray-{i}"
        entry = f"{sys.executable} -c {json.dumps(cfg['stamp'])} {stamp}"
        t0 = time.time()
        job = client.submit_job(entrypoint=entry)
        while not stamp.exists() or not stamp.read_text():
            time.sleep(0.001)
        found.append(float(stamp.read_text()) - t0)
        while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            time.sleep(0.05)
    print(json.dumps({"latency": found}))
finally:
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
    shutil.rmtree(temp, ignore_errors=True)
"""


def free_port() -> int:
    """A free port outside Ray's worker range (10002-19999), which aborts its start."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not 10002 <= port <= 19999:
            return port


def ray_jobs_latency(n: int, work: Path, cpus: int) -> list[float]:
    import serving  # beside this file: Ray's virtualenv is shared with it

    python = serving.peer_python("ray", work / "install.log")
    cfg = {
        "work": str(work),
        "n": n,
        "cpus": cpus,
        "gcs_port": free_port(),
        "dashboard_port": free_port(),
        "stamp": STAMP,
    }
    script = work / "ray_jobs.py"
    script.write_text(RAY_WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "RAY_"))}
    done = subprocess.run(
        [str(python), str(script), json.dumps(cfg)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"Ray Jobs run failed: {done.stderr[-2000:]}")
    return list(json.loads(done.stdout.strip().splitlines()[-1])["latency"])


# the report --------------------------------------------------------------------------


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def timed(label: str, fn: Callable[[], Any]) -> Any:
    step(f"{label} …")
    t0 = time.perf_counter()
    found = fn()
    step(f"{label} done in {time.perf_counter() - t0:.1f} s")
    return found


def report(figures: dict[str, Any], args: argparse.Namespace) -> int:
    table = Table(title="Plinth compute: submit-to-running (median) and throughput")
    for column in ("measure", "floor", "Plinth", "Plinth ÷ floor", "Ray Jobs", "Ray ÷ Plinth"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    table.add_column("goal")
    table.add_column("met")
    missed = 0
    floor, mine = ms(figures["floor_latency"]), ms(figures["plinth_latency"])
    ray = ms(figures["ray_latency"]) if figures.get("ray_latency") else None
    met = mine <= GOAL_MS and mine / floor <= GOAL_FLOOR_RATIO
    met = met and (ray is None or ray / mine >= GOAL_RAY_RATIO)
    missed += not met
    table.add_row(
        f"submit-to-running, ms (n={args.latency_jobs})",
        f"{floor:.1f}",
        f"{mine:.1f}",
        f"{mine / floor:.2f}x",
        f"{ray:.0f}" if ray is not None else "-",
        f"{ray / mine:.0f}x" if ray is not None else "-",
        f"≤ {GOAL_MS:g} ms, ≤ {GOAL_FLOOR_RATIO}x floor, ≥ {GOAL_RAY_RATIO:g}x Ray",
        "yes" if met else "NO",
    )
    ft, pt = figures["floor_throughput"], figures["plinth_throughput"]
    table.add_row(
        f"throughput, jobs/s ({args.jobs:,} short jobs)",
        f"{ft:.1f}",
        f"{pt:.1f}",
        f"{ft / pt:.2f}x",
        "-",
        "-",
        "-",
        "",
    )
    place = figures["scheduler"]
    place_ms = place["cpu_median_s"] * 1e3
    place_met = place["cpu_p99_s"] < 1e-3 or place["p99_s"] < 1e-3
    missed += not place_met
    table.add_row(
        "scheduler: place one job, 10,000 queued / 20 projects (CPU median)",
        "-",
        f"{place_ms:.3f} ms",
        "-",
        "-",
        "-",
        "p99 < 1 ms",
        "yes" if place_met else "NO",
    )
    console.print(table)
    load = os.getloadavg()
    console.print(
        f"Python {platform.python_version()}, {os.cpu_count()} cores, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; the floor is a bare Popen "
        "of the same program; Plinth ÷ floor for throughput is floor jobs/s over Plinth's."
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--ray-jobs", type=int, default=20, help="Ray Jobs are slow: fewer")
    parser.add_argument("--jobs", type=int, default=1_000, help="for throughput")
    parser.add_argument("--skip", default="", help="comma list: ray")
    parser.add_argument("--quick", action="store_true", help="20 / 5 / 100 jobs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.latency_jobs, args.ray_jobs, args.jobs = 20, 5, 100
    skip = set(filter(None, args.skip.split(",")))
    cpus = os.cpu_count() or 1
    WORK_ROOT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compute-", dir=WORK_ROOT))
    figures: dict[str, Any] = {}
    try:
        for name in ("floor", "plinth", "ray"):
            (work / name).mkdir()
        figures["floor_latency"] = timed(
            "floor: spawn latency", lambda: floor_latency(args.latency_jobs, work / "floor")
        )
        figures["floor_throughput"] = timed(
            "floor: throughput", lambda: floor_throughput(args.jobs, work / "floor", cpus)
        )
        client = plinth_client(work / "home", cpus)
        try:
            plinth_latency(client, 5, work / "plinth")  # warm: the project, the imports
            figures["plinth_latency"] = timed(
                "plinth: submit-to-running",
                lambda: plinth_latency(client, args.latency_jobs, work / "plinth"),
            )
            figures["plinth_throughput"] = timed(
                "plinth: throughput", lambda: plinth_throughput(client, args.jobs, work / "plinth")
            )
        finally:
            client.close()
        scheduler = compute_scheduler.run(10_000, 20, 16, 1_000, 7)
        figures["scheduler"] = next(f.row() for f in scheduler if f.name.startswith("place()"))
        if "ray" not in skip:
            figures["ray_latency"] = timed(
                "ray jobs: submit-to-running",
                lambda: ray_jobs_latency(args.ray_jobs, work / "ray", cpus),
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(figures, args)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
