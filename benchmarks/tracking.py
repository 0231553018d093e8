"""Tracking benchmarks: Plinth (embedded, SQLite) side by side with MLflow (SQLite).

    .venv/bin/python benchmarks/tracking.py            # the full run (`make bench`)
    .venv/bin/python benchmarks/tracking.py --quick    # small sizes, a smoke run
    .venv/bin/python benchmarks/tracking.py --skip-mlflow --only search,search30k
    .venv/bin/python benchmarks/tracking.py --only search1m,runstable

Both run on this machine, one after the other: Plinth in this process (a temp
``PLINTH_HOME``, ``plinth.Client(home=...)``), MLflow in a subprocess of its own
virtualenv (``benchmarks/.venv-mlflow``, created and filled from PyPI on first use)
running ``benchmarks/mlflow_worker.py`` against ``sqlite:///...`` in a temp dir. Where it
makes sense a third column gives the floor: plain ``sqlite3`` (WAL, ``synchronous=FULL``)
doing the same writes or the same query, or plain Python file I/O + sha256 for
artifacts. Every figure is the median of several repeats. Temp files live under
``benchmarks/.work/`` (same disk as the repo, git-ignored) and are deleted at the end.

``search1m`` also runs on Postgres (``--postgres-url``, default the local server): each
side gets a fresh database there, populated by cloning rows in SQL (``clone.py``) and
dropped at the end. MLflow reaches Postgres through ``psycopg``, installed into its
virtualenv on first use.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import clone  # beside this file
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
WORKER = HERE / "mlflow_worker.py"
MLFLOW_VENV = HERE / ".venv-mlflow"
WORK_ROOT = HERE / ".work"
CHUNK = 1 << 20
WORKLOADS = (
    "log",
    "batch",
    "create",
    "short",
    "sweep",
    "search",
    "search30k",
    "search1m",
    "runstable",
    "artifacts",
    "history",
    "pages",
)
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

err = Console(stderr=True)


# sizes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    repeats: int = 5
    log_points: int = 10_000
    mlflow_log_points: int = 500
    batch_points: int = 100_000
    batch_size: int = 5_000
    mlflow_batch_points: int = 10_000
    mlflow_batch_size: int = 1_000  # MLflow's maximum metrics per log_batch
    create_runs: int = 1_000
    mlflow_create_runs: int = 200
    short_runs: int = 1_000
    mlflow_short_runs: int = 200
    sweep_runs: int = 10_000
    search_runs: int = 1_000
    search_repeats: int = 15
    big_search_runs: int = 30_000
    huge_search_runs: int = 1_000_000
    huge_search_repeats: int = 5
    mlflow_search_timeout: float = 1200
    table_runs: int = 10_000
    table_repeats: int = 30
    artifact_bytes: int = 1 << 30
    artifact_repeats: int = 3
    history_points: int = 100_000
    big_history_points: int = 1_000_000
    page_runs: int = 10
    page_points: int = 100_000


QUICK = Sizes(
    repeats=3,
    log_points=2_000,
    mlflow_log_points=100,
    batch_points=20_000,
    mlflow_batch_points=2_000,
    create_runs=200,
    mlflow_create_runs=50,
    short_runs=200,
    mlflow_short_runs=50,
    sweep_runs=1_000,
    search_runs=200,
    search_repeats=5,
    big_search_runs=3_000,
    huge_search_runs=10_000,
    huge_search_repeats=3,
    table_runs=1_000,
    table_repeats=10,
    artifact_bytes=64 << 20,
    artifact_repeats=2,
    history_points=10_000,
    big_history_points=100_000,
    page_runs=3,
    page_points=10_000,
)


# results ------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    measure: str
    better: str  # "lower" or "higher"
    plinth: float | None = None
    mlflow: float | None = None
    floor: float | None = None
    goal: float | None = None
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def versus_mlflow(self) -> float | None:
        """How many times better Plinth is than MLflow (> 1: Plinth is faster)."""
        if not self.plinth or not self.mlflow:
            return None
        return self.mlflow / self.plinth if self.better == "lower" else self.plinth / self.mlflow

    def versus_floor(self) -> float | None:
        """How many times the floor's cost Plinth pays (1.0: as fast as the floor)."""
        if not self.plinth or not self.floor:
            return None
        return self.plinth / self.floor if self.better == "lower" else self.floor / self.plinth

    def met(self) -> bool | None:
        if self.goal is None or self.plinth is None:
            return None
        return self.plinth <= self.goal if self.better == "lower" else self.plinth >= self.goal


def med(values: list[float]) -> float:
    return float(statistics.median(values))


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(r: float | None, *, floor: bool = False) -> str:
    if r is None:
        return "-"
    if floor:
        return f"{fmt(r)}x"
    return f"{fmt(r)}x faster" if r >= 1 else f"{fmt(1 / r)}x slower"


def spread(samples: list[float]) -> str:
    return f"{fmt(min(samples))}..{fmt(max(samples))}" if len(samples) > 1 else "-"


def fmt_goal(row: Row) -> str:
    if row.goal is None:
        return "-"
    return ("≤ " if row.better == "lower" else "≥ ") + f"{row.goal:,g}"


def step(message: str) -> None:
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


# environment --------------------------------------------------------------------------


def filesystem_of(path: Path) -> str:
    """The mount point and type of the filesystem holding ``path`` (tmpfs is RAM)."""
    best = ("", "?")
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) >= len(best[0]):
                best = (parts[1], parts[2])
    return f"{best[1]} ({best[0] or '?'})"


def git_revision() -> str:
    """The commit measured, and whether ``src/`` had changes on top of it."""
    repo = HERE.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + (" + uncommitted src/ changes" if dirty else "")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def environment(mlflow_version: str | None) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
                break
    import plinth

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "plinth": f"{plinth.__version__} @ {git_revision()}",
        "mlflow": mlflow_version or "not run",
        "workdir filesystem": filesystem_of(WORK_ROOT),
    }


# MLflow -------------------------------------------------------------------------------


def mlflow_python(spec: str) -> Path:
    """MLflow's own virtualenv, made and filled on first use."""
    python = MLFLOW_VENV / "bin" / "python"

    def has_mlflow() -> bool:
        probe = [str(python), "-c", "import mlflow"]
        return python.exists() and subprocess.run(probe, capture_output=True).returncode == 0

    if not has_mlflow():
        step(f"installing {spec} into {MLFLOW_VENV} (first run only; takes a few minutes)")
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, spec], check=True)
    return python


def mlflow_postgres_driver(python: Path) -> None:
    """psycopg in MLflow's virtualenv, for its store on Postgres (first use only)."""
    probe = [str(python), "-c", "import psycopg"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        step("installing psycopg[binary] into MLflow's virtualenv (first use only)")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "psycopg[binary]"], check=True)


def run_mlflow(python: Path, cfg: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PLINTH_"))} | {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.run(
        [str(python), str(WORKER), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cfg.get("workdir", str(WORK_ROOT)),
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return result
    tail = (proc.stderr or proc.stdout)[-3000:]
    raise RuntimeError(f"MLflow worker {cfg['workload']} failed (rc={proc.returncode}):\n{tail}")


# Plinth -------------------------------------------------------------------------------


def plinth_client(home: Path) -> Any:
    import plinth

    return plinth.Client(home=str(home))


def plinth_log(sz: Sizes, home: Path) -> dict[str, list[float]]:
    """``run.log({"loss": v}, step=i)`` per point; caller latency and durable points/s."""
    import plinth

    client = plinth_client(home)
    n = sz.log_points
    caller, p99, pps = [], [], []
    clock = time.perf_counter_ns
    try:
        for _ in range(sz.repeats):
            run = plinth.start_run("bench-log", client=client)
            per_call = [0] * n
            start = clock()
            for i in range(n):
                t0 = clock()
                run.log({"loss": 1.0 / (i + 1)}, step=i)
                per_call[i] = clock() - t0
            run.flush()
            elapsed = (clock() - start) / 1e9
            run.end()
            stored = len(client.metric_history(run.id, "loss"))
            if stored != n:
                raise AssertionError(f"run.log: {stored} of {n} points stored after flush")
            per_call.sort()
            caller.append(per_call[n // 2] / 1e3)
            p99.append(per_call[int(n * 0.99)] / 1e3)
            pps.append(n / elapsed)
    finally:
        client.close()
    return {"caller_us": caller, "caller_p99_us": p99, "points_per_s": pps}


def plinth_batch(sz: Sizes, home: Path) -> dict[str, list[float]]:
    """``client.log_batch(run_id, metrics=[...])`` in batches of ``batch_size`` points."""
    client = plinth_client(home)
    n, size = sz.batch_points, sz.batch_size
    us = []
    try:
        for _ in range(sz.repeats):
            run_id = client.create_run("bench-batch").id
            ts = time.time()
            points = [
                {"key": "loss", "value": 1.0 / (i + 1), "step": i, "timestamp": ts}
                for i in range(n)
            ]
            batches = [points[b : b + size] for b in range(0, n, size)]
            start = time.perf_counter()
            for metrics in batches:
                client.log_batch(run_id, metrics=metrics)
            us.append((time.perf_counter() - start) / n * 1e6)
    finally:
        client.close()
    return {"us_per_point": us}


def plinth_create(sz: Sizes, home: Path) -> dict[str, list[float]]:
    client = plinth_client(home)
    n = sz.create_runs
    ms = []
    try:
        client.create_run("bench-create")  # the project exists before timing
        for _ in range(sz.repeats):
            start = time.perf_counter()
            for _ in range(n):
                client.create_run("bench-create")
            ms.append((time.perf_counter() - start) / n * 1e3)
    finally:
        client.close()
    return {"ms_per_run": ms}


def short_run(client: Any, i: int, n: int) -> str:
    """A run as a sweep makes thousands: start, 2 params, 2 metrics, end."""
    import plinth

    with plinth.start_run("bench-short", params={"lr": 0.1, "batch": 32}, client=client) as run:
        run.log({"loss": 1.0 / (i + 1), "acc": i / n})
    return str(run.id)


def plinth_short(sz: Sizes, client: Any, repeats: int | None = None) -> dict[str, list[float]]:
    """Short runs one after another: each run's own wall time, median per repeat."""
    n = sz.short_runs
    for i in range(20):  # warm: the project exists, the statements are compiled
        short_run(client, i, n)
    ms = []
    for _ in range(sz.repeats if repeats is None else repeats):
        per_run = []
        for i in range(n):
            t0 = time.perf_counter()
            short_run(client, i, n)
            per_run.append(time.perf_counter() - t0)
        ms.append(statistics.median(per_run) * 1e3)
    last = client.get_run(short_run(client, 0, n))
    if last.status != "finished" or set(last.metrics) != {"loss", "acc"} or len(last.params) != 2:
        raise AssertionError(f"a short run did not land whole: {last}")
    return {"ms_per_run": ms}


def process_state() -> tuple[float, int, int]:
    """This process's resident memory (MiB), threads and open file descriptors."""
    import psutil

    me = psutil.Process()
    return me.memory_info().rss / 2**20, me.num_threads(), me.num_fds()


def plinth_sweep(sz: Sizes, home: Path) -> dict[str, Any]:
    """``sweep_runs`` short runs in one process: the time, and what the process holds
    after a tenth of them (warm), half of them and all of them. A bounded pool may still
    open a connection in the first half (a few files); a leak keeps growing after it."""
    import gc

    client = plinth_client(home)
    n = sz.sweep_runs
    states = {}
    try:
        start = time.perf_counter()
        done = 0
        for name, upto in (("warm", n // 10), ("half", n // 2), ("end", n)):
            for i in range(done, upto):
                short_run(client, i, n)
            done = upto
            gc.collect()
            states[name] = process_state()
        seconds = time.perf_counter() - start
        count = len(client.search_runs("bench-short", limit=10_000))
        if count != min(n, 10_000):
            raise AssertionError(f"sweep: {count} of {n} runs stored")
    finally:
        client.close()
    return {"seconds": seconds, **states}


SEARCH_FILTER = "metrics.acc > 0.5 and params.lr = 0.1"
SEARCH_ORDER = "metrics.acc desc"


def plinth_search_timings(client: Any, project: str, repeats: int) -> tuple[list[float], int]:
    ms, found = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        page = client.search_runs(project, filter=SEARCH_FILTER, order_by=SEARCH_ORDER, limit=100)
        ms.append((time.perf_counter() - t0) * 1e3)
        found = len(page.runs)
    if found == 0:  # a fast search that finds nothing measures nothing
        raise SystemExit(f"search in {project} matched no run: the benchmark's data is wrong")
    return ms, found


def plinth_search(sz: Sizes, home: Path) -> dict[str, Any]:
    """Runs made through the SDK (param ``lr``, metric ``acc``), then a filtered page."""
    client = plinth_client(home)
    rng = random.Random(0)
    try:
        start = time.perf_counter()
        for _ in range(sz.search_runs):
            acc = rng.random()
            lr = rng.choice([0.1, 0.01])
            run = client.create_run("bench-search", params={"lr": lr})
            client.log_batch(
                run.id, metrics=[{"key": "acc", "value": acc, "step": 0, "timestamp": time.time()}]
            )
        populate = (time.perf_counter() - start) / sz.search_runs * 1e3
        ms, found = plinth_search_timings(client, "bench-search", sz.search_repeats)
    finally:
        client.close()
    floor = floor_search(sqlite_url(home), "bench-search", sz.search_repeats)
    return {"ms": ms, "populate_ms_per_run": [populate], "found": found, "floor": floor}


def plinth_search_big(sz: Sizes, home: Path, via_sdk: bool) -> dict[str, Any]:
    """The same search over ``big_search_runs`` runs.

    Populating 30,000 runs through the SDK costs a durable commit or two each (minutes), so
    by default one run is made through the SDK and cloned in SQL (``clone.py``), row
    for row in every table that refers to it, straight into Plinth's SQLite file.
    ``--sdk-populate`` makes them all through the SDK instead.
    """
    client = plinth_client(home)
    rng = random.Random(1)
    n = sz.big_search_runs
    try:
        start = time.perf_counter()
        made = n if via_sdk else 1
        for _ in range(made):
            acc, lr = rng.random(), rng.choice([0.1, 0.01])
            run = client.create_run("bench-search-big", params={"lr": lr})
            client.log_batch(
                run.id, metrics=[{"key": "acc", "value": acc, "step": 0, "timestamp": time.time()}]
            )
        if not via_sdk:
            clone.clone_runs(sqlite_url(home), clone.PLINTH, run.id, n - 1)
        populate_s = time.perf_counter() - start
        ms, found = plinth_search_timings(client, "bench-search-big", sz.search_repeats)
    finally:
        client.close()
    floor = floor_search(sqlite_url(home), "bench-search-big", sz.search_repeats)
    return {"ms": ms, "populate_s": [populate_s], "found": found, "floor": floor}


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'plinth.db'}"


def sqlalchemy_url(url: str) -> str:
    """A ``postgresql://`` URL with the driver both virtualenvs use (psycopg 3)."""
    scheme, rest = url.split("://", 1)
    return url if "+" in scheme else f"postgresql+psycopg://{rest}"


def plinth_search_huge(sz: Sizes, home: Path, database_url: str | None) -> dict[str, Any]:
    """The search of ``search`` over ``huge_search_runs`` runs of one project, on
    SQLite (``database_url`` None: the home's file) or the given Postgres database:
    one run made through the SDK, the rest cloned in SQL. The same runs exist in a
    second project too, so a search that is not scoped to its project pays for both."""
    import plinth
    from plinth.settings import Settings

    settings = Settings(home=home, database_url=database_url, url=None, token=None)
    url = sqlalchemy_url(database_url) if database_url else sqlite_url(home)
    client = plinth.Client(settings=settings)
    populate_s = 0.0
    try:
        for project in ("bench-search-1m-other", "bench-search-1m"):
            run = client.create_run(project, params={"lr": 0.1})
            point = {"key": "acc", "value": 0.7, "step": 0, "timestamp": time.time()}
            client.log_batch(run.id, metrics=[point])
            populate_s += clone.clone_runs(url, clone.PLINTH, run.id, sz.huge_search_runs - 1)
        ms, found = plinth_search_timings(client, "bench-search-1m", sz.huge_search_repeats)
    finally:
        client.close()
    floor = floor_search(url, "bench-search-1m", sz.huge_search_repeats)
    return {"ms": ms, "populate_s": [populate_s / 2], "found": found, "floor": floor}


def plinth_runs_table(sz: Sizes, home: Path) -> dict[str, Any]:
    """The project page of a ``table_runs``-run project (2 params, 2 metrics, a tag
    each), fetched over HTTP from a ``plinth server`` subprocess over the home."""
    import httpx

    client = plinth_client(home)
    try:
        run = client.create_run("bench-table", params={"lr": 0.1, "batch": 32}, tags={"t": "x"})
        points = [
            {"key": key, "value": 0.5, "step": 0, "timestamp": time.time()}
            for key in ("acc", "loss")
        ]
        client.log_batch(run.id, metrics=points)
    finally:
        client.close()
    clone.clone_runs(sqlite_url(home), clone.PLINTH, run.id, sz.table_runs - 1)
    port = free_port()
    env = {**os.environ, "PLINTH_HOME": str(home)}
    log = open(home / "server.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "plinth", "server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    out: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/healthz").status_code == 200:
                        break
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"plinth server did not start: see {home / 'server.log'}")
                time.sleep(0.2)
            for name, path in (
                ("ms", "/projects/bench-table"),
                ("sorted_ms", "/projects/bench-table?order_by=metrics.acc+desc"),
            ):
                http.get(path)  # warm: templates compiled, connections open
                out[name] = []
                for _ in range(sz.table_repeats):
                    t0 = time.perf_counter()
                    answer = http.get(path)
                    out[name].append((time.perf_counter() - t0) * 1e3)
                    if answer.status_code != 200 or answer.text.count('name="runs"') < 50:
                        raise AssertionError(f"GET {path}: {answer.status_code}, not 50 runs")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HISTORY_CHART_POINTS = 1_680  # what the run page asks for (plinth.ui.charts.MAX_POINTS)


def history_run(client: Any, home: Path, project: str, key: str, n: int) -> str:
    """A run whose metric ``key`` has ``n`` points, logged through the SDK in batches of
    10,000 (the most one holds). Every 10,000th value is NaN, as a diverged step would be."""
    run_id: str = client.create_run(project).id
    size = 10_000
    for start in range(0, n, size):
        steps = list(range(start, min(start + size, n)))
        series = {
            "key": key,
            "steps": steps,
            "timestamps": [1.7e9 + i * 0.01 for i in steps],
            "values": [math.nan if i % 10_000 == 9_999 else 1.0 / (i + 1) for i in steps],
        }
        client.send_batch(run_id, uuid.uuid4().hex, [series])
    return run_id


def timings_ms(fn: Callable[[], Any], repeats: int, expect: int | None = None) -> list[float]:
    """Milliseconds per call, after one call that is not timed (it warms the caches)."""
    got = fn()
    if expect is not None and len(got) != expect:
        raise AssertionError(f"expected {expect:,} points, got {len(got):,}")
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def plinth_history(sz: Sizes, home: Path) -> dict[str, Any]:
    """``client.metric_history(run_id, key)`` of a 100,000- and a 1,000,000-point
    metric (the default list shape), and the 1,000,000 thinned to a chart's width."""
    client = plinth_client(home)
    try:
        small = history_run(client, home, "bench-history", "loss", sz.history_points)
        big = history_run(client, home, "bench-history", "loss", sz.big_history_points)
        out = {
            "small_ms": timings_ms(
                lambda: client.metric_history(small, "loss"), sz.repeats, sz.history_points
            ),
            "big_ms": timings_ms(
                lambda: client.metric_history(big, "loss"), sz.repeats, sz.big_history_points
            ),
            "big_numpy_ms": timings_ms(
                lambda: client.metric_history(big, "loss", as_="numpy"), sz.repeats
            ),
            "big_thinned_ms": timings_ms(
                lambda: client.metric_history(big, "loss", max_points=HISTORY_CHART_POINTS),
                sz.repeats,
            ),
        }
    finally:
        client.close()
    db = home / "plinth.db"
    out["floor_small_ms"] = floor_history(db, small, sz.repeats)
    out["floor_big_ms"] = floor_history(db, big, sz.repeats)
    return out


def floor_history(db_path: Path, run_id: str, repeats: int) -> list[float]:  # ms
    """The same points read with plain ``sqlite3`` from Plinth's file: one query for the
    metric's chunks, their bytes joined into three numpy arrays, nothing else."""
    import numpy as np

    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    query = (
        'SELECT steps, timestamps, "values" FROM metric_chunks '
        'WHERE run_id = ? AND "key" = ? ORDER BY id'
    )

    def read() -> Any:
        chunks = con.execute(query, (run_id, "loss")).fetchall()
        steps, _stamps, _values = (
            np.frombuffer(b"".join(c[i] for c in chunks), dtype="<i8" if i == 0 else "<f8")
            for i in range(3)
        )
        return steps

    try:
        return timings_ms(read, repeats)
    finally:
        con.close()


@contextlib.contextmanager
def plinth_server(home: Path) -> Iterator[str]:
    """``plinth server`` over ``home`` in a subprocess on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")}
    env |= {"PLINTH_HOME": str(home), "PYTHONPATH": str(HERE.parent / "src")}
    cmd = [sys.executable, "-m", "plinth", "server", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"plinth server did not start (exit code {proc.poll()})")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def plinth_pages(sz: Sizes, home: Path) -> dict[str, Any]:
    """The run page of a run with a 1,000,000-point metric and the compare page of 10
    runs of 100,000 points each, fetched over HTTP from ``plinth server``."""
    import httpx

    client = plinth_client(home)
    try:
        big = history_run(client, home, "bench-pages", "loss", sz.big_history_points)
        runs = [
            history_run(client, home, "bench-pages", "loss", sz.page_points)
            for _ in range(sz.page_runs)
        ]
    finally:
        client.close()

    def page(http: httpx.Client, path: str, charts: int) -> Callable[[], Any]:
        def get() -> list[str]:
            response = http.get(path)
            response.raise_for_status()
            drawn = response.text.count('<polyline class="series"')
            if drawn != charts:
                raise AssertionError(f"{path}: {drawn} lines drawn, expected {charts}")
            return [response.text]

        return get

    with plinth_server(home) as url, httpx.Client(base_url=url, timeout=120) as http:
        run_ms = timings_ms(page(http, f"/runs/{big}", 1), sz.repeats)
        compare_ms = timings_ms(
            page(http, f"/compare?runs={','.join(runs)}", sz.page_runs), sz.repeats
        )
    return {"run_ms": run_ms, "compare_ms": compare_ms}


def settle() -> None:
    """Start each timed disk phase with nothing dirty in the page cache, so one phase's
    writeback is not billed to the next (on this kind of VM it otherwise dominates)."""
    os.sync()


def prewarm_page_cache(scratch: Path, size: int, block: bytes) -> None:
    """Write ``size`` bytes and delete them: page-cache pages the guest has never
    touched are slow to fill on some VMs (Firecracker here: ~0.4 GB/s on first touch,
    ~5 GB/s after), which would otherwise be billed to whichever phase comes first."""
    path = scratch / "prewarm.bin"
    make_file(path, size, "prewarm", block)
    path.unlink()


def make_file(path: Path, size: int, tag: str, block: bytes) -> None:
    """``size`` bytes, unique per ``tag`` (so nothing is deduplicated), on disk."""
    with open(path, "wb") as f:
        f.write(tag.encode().ljust(64, b"\0"))
        left = size - 64
        while left > 0:
            piece = block[:left]
            f.write(piece)
            left -= len(piece)
        f.flush()
        os.fsync(f.fileno())


def plinth_artifacts(sz: Sizes, home: Path, scratch: Path, block: bytes) -> dict[str, Any]:
    client = plinth_client(home)
    size = sz.artifact_bytes
    put, reput, get = [], [], []
    floors: dict[str, list[float]] = {"put": [], "reput": [], "get": []}
    try:
        for r in range(sz.artifact_repeats):
            src = scratch / "big.bin"
            make_file(src, size, f"plinth-{r}-{uuid.uuid4().hex}", block)
            run_id = client.create_run("bench-artifacts").id
            settle()
            t0 = time.perf_counter()
            client.log_artifact(run_id, src, "big.bin", progress=False)
            put.append(size / (time.perf_counter() - t0) / 1e6)
            run2 = client.create_run("bench-artifacts").id
            settle()
            t0 = time.perf_counter()
            client.log_artifact(run2, src, "big.bin", progress=False)
            reput.append(size / (time.perf_counter() - t0) / 1e6)
            dest = scratch / "download"
            settle()
            t0 = time.perf_counter()
            got = client.download_artifact(run_id, "big.bin", dest, progress=False)
            get.append(size / (time.perf_counter() - t0) / 1e6)
            if got.stat().st_size != size:
                raise AssertionError("downloaded artifact has the wrong size")
            shutil.rmtree(dest)
            shutil.rmtree(home / "artifacts", ignore_errors=True)  # free the disk
            for name, mb_s in floor_artifacts(src, scratch).items():
                floors[name].append(mb_s)
            src.unlink()
    finally:
        client.close()
    return {"put_mb_s": put, "reput_mb_s": reput, "get_mb_s": get, "floor": floors}


# floors: what SQLite and the disk do without Plinth -----------------------------------

FLOOR_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, project_id TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, start_time REAL NOT NULL, end_time REAL, heartbeat_at REAL NOT NULL);
CREATE INDEX ix_runs_project_start ON runs (project_id, start_time);
CREATE INDEX ix_runs_status_heartbeat ON runs (status, heartbeat_at);
CREATE TABLE metrics (run_id TEXT NOT NULL, key TEXT NOT NULL, step INTEGER NOT NULL,
    timestamp REAL NOT NULL, value REAL);
CREATE INDEX ix_metrics_run_key_step ON metrics (run_id, key, step);
"""


@contextlib.contextmanager
def floor_db(scratch: Path) -> Iterator[sqlite3.Connection]:
    path = scratch / f"floor-{uuid.uuid4().hex[:8]}.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(FLOOR_SCHEMA)
    try:
        yield con
    finally:
        con.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def floor_points(scratch: Path, n: int, batch: int) -> float:
    """Seconds to durably insert ``n`` metric rows, ``batch`` per committed executemany."""
    run_id = uuid.uuid4().hex
    ts = time.time()
    rows = [(run_id, "loss", i, ts, 1.0 / (i + 1)) for i in range(n)]
    with floor_db(scratch) as con:
        start = time.perf_counter()
        for b in range(0, n, batch):
            con.execute("BEGIN")
            con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)", rows[b : b + batch])
            con.execute("COMMIT")
        return time.perf_counter() - start


def floor_create(scratch: Path, n: int) -> float:
    """Milliseconds per durable single-row insert into an equivalent runs table."""
    project = uuid.uuid4().hex
    with floor_db(scratch) as con:
        start = time.perf_counter()
        for _ in range(n):
            now = time.time()
            rid = uuid.uuid4().hex
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?)",
                (rid, project, f"run-{rid[:8]}", "running", now, None, now),
            )
            con.execute("COMMIT")
        return (time.perf_counter() - start) / n * 1e3


FLOOR_SEARCH = """
SELECT r.id, r.name, r.status, r.start_time, r.end_time FROM latest_metrics m
JOIN runs r ON r.id = m.run_id
JOIN params p ON p.run_id = m.run_id AND p.key = 'lr'
WHERE m.project_id = :project AND m.key = 'acc' AND m.value > 0.5 AND p.number = 0.1
ORDER BY m.value DESC LIMIT 101
"""


def floor_search(url: str, project: str, repeats: int) -> dict[str, Any]:
    """The same page with hand-written SQL on Plinth's own database: the query, then the
    params, tags and latest metrics of the 100 runs it returns."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    ms, found = [], 0
    try:
        with engine.connect() as con:
            name = {"name": project}
            project_id = con.execute(sa.text("SELECT id FROM projects WHERE name = :name"), name)
            args = {"project": project_id.scalar_one()}
            for _ in range(repeats):
                t0 = time.perf_counter()
                rows = con.execute(sa.text(FLOOR_SEARCH), args).fetchall()[:100]
                ids = {"ids": [r[0] for r in rows]}
                for table in ("params", "tags", "latest_metrics"):
                    con.execute(
                        sa.text(
                            f"SELECT run_id, key, value FROM {table} WHERE run_id IN :ids"
                        ).bindparams(sa.bindparam("ids", expanding=True)),
                        ids,
                    ).fetchall()
                ms.append((time.perf_counter() - t0) * 1e3)
                found = len(rows)
    except sa.exc.DBAPIError as exc:  # Plinth's schema moved on: no floor this time
        return {"ms": [], "error": str(exc)}
    finally:
        engine.dispose()
    return {"ms": ms, "found": found}


def floor_artifacts(src: Path, scratch: Path) -> dict[str, float]:
    """MB/s of plain Python doing each step once: put = read + sha256 + write + fsync +
    rename; re-put = sha256 of the file; get = read + sha256 + write + rename."""
    size = src.stat().st_size

    def copy(fsync: bool) -> float:
        tmp = scratch / f".floor-{uuid.uuid4().hex}"
        settle()
        t0 = time.perf_counter()
        h = hashlib.sha256()
        with open(src, "rb") as f, open(tmp, "wb") as out:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        final = scratch / "floor.bin"
        os.replace(tmp, final)
        mb_s = size / (time.perf_counter() - t0) / 1e6
        final.unlink()
        return mb_s

    put = copy(fsync=True)
    settle()
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with open(src, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    reput = size / (time.perf_counter() - t0) / 1e6
    return {"put": put, "reput": reput, "get": copy(fsync=False)}


# the run ------------------------------------------------------------------------------


@dataclass
class Bench:
    sz: Sizes
    work: Path
    mlflow: Path | None
    only: set[str]
    sdk_populate: bool
    prewarm: bool = True
    postgres_url: str | None = POSTGRES_URL
    rows: list[Row] = field(default_factory=list)

    def home(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mlflow_result(self, cfg: dict[str, Any], timeout: float = 1800) -> dict[str, Any] | None:
        if self.mlflow is None:
            return None
        cfg = {"repeats": self.sz.repeats, **cfg}
        cfg["workdir"] = str(self.home(f"mlflow-{cfg.pop('name', cfg['workload'])}"))
        step(f"MLflow {cfg['workload']} …")
        try:
            return run_mlflow(self.mlflow, cfg, timeout)
        except subprocess.TimeoutExpired:
            err.print(
                f"[yellow]MLflow {cfg['workload']}: no result within {timeout:.0f} s[/yellow]"
            )
            return {"timed_out": timeout}
        except Exception as exc:
            err.print(f"[red]MLflow {cfg['workload']} failed:[/red] {exc}")
            return None

    def timed(self, label: str, fn: Callable[[], Any]) -> Any:
        step(f"{label} …")
        t0 = time.perf_counter()
        result = fn()
        step(f"{label} done in {time.perf_counter() - t0:.1f} s")
        return result

    # workloads ----------------------------------------------------------------------

    def log(self) -> None:
        sz = self.sz
        p = self.timed("Plinth run.log", lambda: plinth_log(sz, self.home("plinth-log")))
        m = self.mlflow_result({"workload": "log", "n": sz.mlflow_log_points})
        floor_s = [floor_points(self.work, sz.log_points, sz.log_points) for _ in range(sz.repeats)]
        name = f"run.log x {sz.log_points:,}"
        mnote = f"MLflow: mlflow.log_metric x {sz.mlflow_log_points:,} (synchronous)"
        self.rows += [
            Row(
                name,
                "caller µs/call (median)",
                "lower",
                med(p["caller_us"]),
                m and med(m["caller_us"]),
                goal=15,
                note=mnote,
                samples={"plinth": p["caller_us"], "mlflow": (m or {}).get("caller_us", [])},
            ),
            Row(
                name,
                "caller µs/call (p99)",
                "lower",
                med(p["caller_p99_us"]),
                samples={"plinth": p["caller_p99_us"]},
            ),
            Row(
                name,
                "durable points/s, first log → flush",
                "higher",
                med(p["points_per_s"]),
                m and med(m["points_per_s"]),
                floor=med([sz.log_points / s for s in floor_s]),
                goal=50_000,
                note="floor: one executemany + COMMIT of all points",
                samples={
                    "plinth": p["points_per_s"],
                    "mlflow": (m or {}).get("points_per_s", []),
                    "floor": [sz.log_points / s for s in floor_s],
                },
            ),
        ]

    def batch(self) -> None:
        sz = self.sz
        p = self.timed("Plinth log_batch", lambda: plinth_batch(sz, self.home("plinth-batch")))
        m = self.mlflow_result(
            {"workload": "batch", "n": sz.mlflow_batch_points, "batch": sz.mlflow_batch_size}
        )
        floor = [
            floor_points(self.work, sz.batch_points, sz.batch_size) / sz.batch_points * 1e6
            for _ in range(sz.repeats)
        ]
        self.rows.append(
            Row(
                f"log_batch {sz.batch_points:,} pts ({sz.batch_size:,}/batch)",
                "µs/point",
                "lower",
                med(p["us_per_point"]),
                m and med(m["us_per_point"]),
                floor=med(floor),
                goal=10,
                note=(
                    f"MLflow: {sz.mlflow_batch_points:,} pts, {sz.mlflow_batch_size:,}/batch "
                    f"(its max); floor: executemany + COMMIT per {sz.batch_size:,}"
                ),
                samples={
                    "plinth": p["us_per_point"],
                    "mlflow": (m or {}).get("us_per_point", []),
                    "floor": floor,
                },
            )
        )

    def create(self) -> None:
        sz = self.sz
        p = self.timed("Plinth create_run", lambda: plinth_create(sz, self.home("plinth-create")))
        m = self.mlflow_result({"workload": "create", "n": sz.mlflow_create_runs})
        floor = [floor_create(self.work, sz.create_runs) for _ in range(sz.repeats)]
        self.rows.append(
            Row(
                f"create {sz.create_runs:,} runs",
                "ms/run",
                "lower",
                med(p["ms_per_run"]),
                m and med(m["ms_per_run"]),
                floor=med(floor),
                goal=2,
                note=f"MLflow: {sz.mlflow_create_runs:,} runs; floor: 1 INSERT + COMMIT per run",
                samples={
                    "plinth": p["ms_per_run"],
                    "mlflow": (m or {}).get("ms_per_run", []),
                    "floor": floor,
                },
            )
        )

    def short(self) -> None:
        """Embedded Plinth and MLflow in alternating rounds (one repeat each, MLflow in
        a fresh store each round), so that both meet the VM at the same speed: its
        speed drifts by 2x within minutes, and measuring one whole side and then the
        other billed the drift to the ratio. The served runs follow."""
        sz = self.sz
        plinth_ms: list[float] = []
        mlflow_ms: list[float] = []
        ratios: list[float] = []
        client = plinth_client(self.home("plinth-short"))
        try:
            for r in range(sz.repeats):
                settle()
                step(f"Plinth short runs, embedded, round {r + 1} of {sz.repeats} …")
                [mine] = plinth_short(sz, client, repeats=1)["ms_per_run"]
                plinth_ms.append(mine)
                cfg = {"workload": "short", "n": sz.mlflow_short_runs, "repeats": 1}
                got = self.mlflow_result(cfg | {"name": f"short-{r}"}) or {}
                for theirs in got.get("ms_per_run", []):
                    mlflow_ms.append(theirs)
                    ratios.append(theirs / mine)
        finally:
            client.close()
        if ratios:
            rounds = ", ".join(f"{x:.1f}x" for x in ratios)
            step(f"short runs, MLflow ÷ Plinth per round: {rounds} (median {med(ratios):.2f}x)")

        def served() -> dict[str, list[float]]:
            import plinth

            with plinth_server(self.home("plinth-short-server")) as url:
                client = plinth.Client(url=url)
                try:
                    return plinth_short(sz, client)
                finally:
                    client.close()

        settle()
        h = self.timed("Plinth short runs, plinth server", served)
        mlflow = med(mlflow_ms) if mlflow_ms else None
        name = f"short run x {sz.short_runs:,} (start, 2 params, 2 metrics, end)"
        note = (
            f"MLflow: {sz.mlflow_short_runs:,} runs, mlflow.start_run … log_params, "
            "log_metrics; rounds alternate with Plinth's"
            + (f", MLflow ÷ Plinth per round: median {med(ratios):.2f}x" if ratios else "")
        )
        self.rows += [
            Row(
                name,
                "ms/run, embedded",
                "lower",
                med(plinth_ms),
                mlflow,
                goal=3,
                note=note,
                samples={"plinth": plinth_ms, "mlflow": mlflow_ms},
            ),
            Row(
                name,
                "ms/run, local plinth server",
                "lower",
                med(h["ms_per_run"]),
                mlflow,
                goal=6,
                samples={"plinth": h["ms_per_run"]},
            ),
        ]

    def sweep(self) -> None:
        sz = self.sz
        settle()
        p = self.timed(
            f"Plinth sweep of {sz.sweep_runs:,} short runs",
            lambda: plinth_sweep(sz, self.home("plinth-sweep")),
        )
        (rss0, threads0, fds0), (_, _, fds_half), (rss1, threads1, fds1) = (
            p["warm"],
            p["half"],
            p["end"],
        )
        name = f"sweep: {sz.sweep_runs:,} short runs in one process"
        self.rows += [
            Row(name, "seconds", "lower", p["seconds"], samples={"plinth": [p["seconds"]]}),
            Row(
                name,
                "RSS growth after the first tenth, %",
                "lower",
                100 * (rss1 - rss0) / rss0,
                goal=10,
                note=(
                    f"RSS {rss0:.0f} → {rss1:.0f} MiB, threads {threads0} → {threads1}, "
                    f"open files {fds0} → {fds_half} (half-way) → {fds1}"
                ),
            ),
            Row(
                name,
                "threads gained per 1,000 runs after the first tenth",
                "lower",
                (threads1 - threads0) / (0.9 * sz.sweep_runs) * 1000,
                goal=0,
            ),
            Row(
                name,
                "file descriptors gained per 1,000 runs after the first tenth",
                "lower",
                (fds1 - fds0) / (0.9 * sz.sweep_runs) * 1000,
                goal=1,
                note=(
                    "a leak of one a run would read 1,000; a pooled database connection "
                    "opened late (its file and WAL: 2) reads 0.2 over 9,000 runs"
                ),
            ),
        ]

    def search(self) -> None:
        sz = self.sz
        p = self.timed("Plinth search", lambda: plinth_search(sz, self.home("plinth-search")))
        m = self.mlflow_result(
            {"workload": "search", "n": sz.search_runs, "repeats": sz.search_repeats, "seed": 0}
        )
        found = f"pages of {p['found']}" + (f" (MLflow {m['found']})" if m else "")
        self.rows.append(
            Row(
                f"search {sz.search_runs:,} runs",
                "ms/query (filter + order, 100/page)",
                "lower",
                med(p["ms"]),
                m and med(m["ms"]),
                floor=med(p["floor"]["ms"]) if p["floor"]["ms"] else None,
                goal=50,
                note=f"{found}; floor: hand-written SQL on Plinth's file",
                samples={
                    "plinth": p["ms"],
                    "mlflow": (m or {}).get("ms", []),
                    "floor": p["floor"]["ms"],
                },
            )
        )
        self.rows.append(
            Row(
                f"populate {sz.search_runs:,} runs (create_run + log_batch)",
                "ms/run",
                "lower",
                p["populate_ms_per_run"][0],
                m and m["populate_ms_per_run"][0],
                note="set-up of the search workload, one pass",
                samples={"plinth": p["populate_ms_per_run"]},
            )
        )

    def search30k(self) -> None:
        sz = self.sz
        p = self.timed(
            f"Plinth search over {sz.big_search_runs:,} runs",
            lambda: plinth_search_big(sz, self.home("plinth-search-big"), self.sdk_populate),
        )
        how = "all through the SDK" if self.sdk_populate else "1 via SDK, rest cloned in SQLite"
        self.rows.append(
            Row(
                f"search {sz.big_search_runs:,} runs",
                "ms/query (filter + order, 100/page)",
                "lower",
                med(p["ms"]),
                floor=med(p["floor"]["ms"]) if p["floor"]["ms"] else None,
                goal=1000,
                note=f"pages of {p['found']}; populated in {p['populate_s'][0]:.0f} s ({how})",
                samples={"plinth": p["ms"], "floor": p["floor"]["ms"]},
            )
        )

    def search1m(self) -> None:
        """Plinth and MLflow over the same number of cloned runs, on SQLite and on
        Postgres (a fresh database each, dropped after)."""
        sz = self.sz
        n = sz.huge_search_runs
        kinds: list[tuple[str, str | None]] = [("SQLite", None)]
        if self.postgres_url:
            kinds.append(("Postgres", sqlalchemy_url(self.postgres_url)))
        for kind, server in kinds:
            with contextlib.ExitStack() as stack:
                db = server and stack.enter_context(clone.postgres_database(server, "plinth"))
                p = self.timed(
                    f"Plinth search over {n:,} runs ({kind})",
                    lambda db=db, home=self.home(f"plinth-1m-{kind}"): plinth_search_huge(
                        sz, home, db
                    ),
                )
            with contextlib.ExitStack() as stack:
                db = server and stack.enter_context(clone.postgres_database(server, "mlflow"))
                cfg = {"workload": "search_clone", "n": n, "repeats": sz.huge_search_repeats}
                m = self.mlflow_result(
                    cfg | {"db_url": db, "name": f"search1m-{kind}"}, sz.mlflow_search_timeout
                )
            found = f"pages of {p['found']}"
            populated = f"populated in {p['populate_s'][0]:.0f} s"
            if m and "timed_out" in m:  # populating and one query took longer than that
                found += f" (MLflow: no page within {m['timed_out']:.0f} s of starting)"
                m = None
            elif m:
                found += f" (MLflow {m['found']}, {len(m['ms'])} repeats in a 2-minute budget)"
                populated += f" (MLflow {m['populate_s'][0]:.0f} s)"
            self.rows.append(
                Row(
                    f"search {n:,} runs, {kind}",
                    "ms/query (filter + order, 100/page)",
                    "lower",
                    med(p["ms"]),
                    m and med(m["ms"]),
                    floor=med(p["floor"]["ms"]) if p["floor"]["ms"] else None,
                    goal=1000,
                    note=(
                        f"{found}; {populated} by cloning in SQL, plus as many in a second "
                        "project (Plinth); floor: hand-written SQL on Plinth's database"
                    ),
                    samples={
                        "plinth": p["ms"],
                        "mlflow": (m or {}).get("ms", []),
                        "floor": p["floor"]["ms"],
                    },
                )
            )

    def runstable(self) -> None:
        sz = self.sz
        p = self.timed(
            f"Plinth runs table of {sz.table_runs:,} runs over HTTP",
            lambda: plinth_runs_table(sz, self.home("plinth-table")),
        )
        for key, what in (("ms", "newest first"), ("sorted_ms", "order_by=metrics.acc desc")):
            self.rows.append(
                Row(
                    f"runs table, {sz.table_runs:,}-run project",
                    f"ms/page over HTTP ({what})",
                    "lower",
                    med(p[key]),
                    goal=100,
                    note="GET /projects/NAME (50 runs) from a `plinth server` subprocess",
                    samples={"plinth": p[key]},
                )
            )

    def artifacts(self) -> None:
        sz = self.sz
        size = sz.artifact_bytes
        free = shutil.disk_usage(self.work).free
        if free < 6 * size + (1 << 30):
            err.print(f"[yellow]skipping artifacts: {free >> 30} GiB free on {self.work}[/yellow]")
            return
        scratch = self.home("scratch")
        block = os.urandom(min(size, 64 << 20))
        if self.prewarm:
            self.timed(
                f"pre-warming the page cache ({6 * size / 2**30:g} GiB written and deleted)",
                lambda: prewarm_page_cache(scratch, 6 * size, block),
            )
        p = self.timed(
            f"Plinth artifacts ({size / 2**30:g} GiB)",
            lambda: plinth_artifacts(sz, self.home("plinth-artifacts"), scratch, block),
        )
        m = None
        if self.mlflow is not None:
            src = scratch / "big.bin"
            make_file(src, size, f"mlflow-{uuid.uuid4().hex}", block)
            m = self.mlflow_result(
                {"workload": "artifacts", "file": str(src), "repeats": sz.artifact_repeats}
            )
            src.unlink()
        name = f"artifact {size / 2**30:g} GiB"
        floor = p["floor"]
        for key, measure, goal, note in (
            ("put", "put MB/s", 250, "floor: read + sha256 + write + fsync"),
            (
                "reput",
                "re-put same content MB/s",
                1000,
                "Plinth dedupes (hash only); MLflow copies again; floor: sha256 only",
            ),
            ("get", "get MB/s", 1500, "floor: read + sha256 + write"),
        ):
            self.rows.append(
                Row(
                    name,
                    measure,
                    "higher",
                    med(p[f"{key}_mb_s"]),
                    m and med(m[f"{key}_mb_s"]),
                    floor=med(floor[key]),
                    goal=goal,
                    note=note,
                    samples={
                        "plinth": p[f"{key}_mb_s"],
                        "mlflow": (m or {}).get(f"{key}_mb_s", []),
                        "floor": floor[key],
                    },
                )
            )

    def history(self) -> None:
        sz = self.sz
        p = self.timed(
            "Plinth metric_history", lambda: plinth_history(sz, self.home("plinth-history"))
        )
        m = self.mlflow_result({"workload": "history", "n": sz.history_points})
        small, big = f"{sz.history_points:,}", f"{sz.big_history_points:,}"
        floor_note = (
            "floor: sqlite3 read of the metric's chunks from Plinth's file, joined into arrays"
        )
        mlflow_note = f"MLflow: MlflowClient.get_metric_history; goal ≥ 20x MLflow; {floor_note}"
        rows = [  # key, points, measure, MLflow's samples, goal, floor's key
            ("small_ms", small, "ms per call (list)", m and m["ms"], None, "floor_small_ms"),
            ("big_ms", big, "ms per call (list)", None, 500, "floor_big_ms"),
            ("big_numpy_ms", big, "ms per call (as_='numpy')", None, 500, "floor_big_ms"),
            ("big_thinned_ms", big, f"ms, max_points={HISTORY_CHART_POINTS:,}", None, None, ""),
        ]
        for key, n, measure, mlflow_ms, goal, floor_key in rows:
            floor = p[floor_key] if floor_key else []
            note = mlflow_note if m and mlflow_ms else floor_note
            self.rows.append(
                Row(
                    f"metric_history {n} pts",
                    measure,
                    "lower",
                    med(p[key]),
                    mlflow_ms and med(mlflow_ms),
                    floor=med(floor) if floor else None,
                    goal=goal,
                    note=note if floor_key else "thinned on the server to a chart's width",
                    samples={"plinth": p[key], "mlflow": mlflow_ms or [], "floor": floor},
                )
            )

    def pages(self) -> None:
        sz = self.sz
        p = self.timed(
            "Plinth pages over HTTP", lambda: plinth_pages(sz, self.home("plinth-pages"))
        )
        for key, name in (
            ("run_ms", f"run page, 1 metric of {sz.big_history_points:,} pts"),
            ("compare_ms", f"compare page, {sz.page_runs} runs x {sz.page_points:,} pts"),
        ):
            self.rows.append(
                Row(
                    name,
                    "ms per page (HTTP, plinth server)",
                    "lower",
                    med(p[key]),
                    goal=1000,
                    note="GET of the whole HTML page from a plinth server subprocess",
                    samples={"plinth": p[key]},
                )
            )

    def run(self) -> None:
        for name in WORKLOADS:
            if name in self.only:
                getattr(self, name)()


# output -------------------------------------------------------------------------------

COLUMNS = ("workload", "measure", "Plinth", "(min..max)", "MLflow", "Plinth vs MLflow")
COLUMNS += ("raw floor",)
COLUMNS += ("Plinth ÷ floor", "goal", "met")


def cells(row: Row) -> list[str]:
    met = row.met()
    return [
        row.workload,
        row.measure,
        fmt(row.plinth),
        spread(row.samples.get("plinth", [])),
        fmt(row.mlflow),
        fmt_ratio(row.versus_mlflow()),
        fmt(row.floor),
        fmt_ratio(row.versus_floor(), floor=True),
        fmt_goal(row),
        "-" if met is None else ("yes" if met else "NO"),
    ]


def render(console: Console, rows: list[Row], env: dict[str, str], title: str) -> None:
    console.print(
        "  ".join(f"[bold]{k}[/bold] {v}" for k, v in env.items()), highlight=False, soft_wrap=True
    )
    table = Table(title=title, show_lines=False)
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("workload", "measure") else "right")
    for row in rows:
        line = cells(row)
        met = row.met()
        if met is not None:
            line[-1] = "[green]yes[/green]" if met else "[red]NO[/red]"
        table.add_row(*line)
    console.print(table)
    console.print("Medians of repeats (min..max: Plinth's spread). MB = 10^6 bytes.")
    console.print("Plinth vs MLflow: 'Nx faster' means Plinth is N times faster.")
    console.print("Plinth ÷ floor: how many times the raw floor's cost Plinth pays.")
    for row in rows:
        if row.note:
            console.print(f"  [dim]{row.workload} — {row.note}[/dim]", highlight=False)


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--skip-mlflow", action="store_true", help="Plinth and floors only")
    ap.add_argument("--only", default=",".join(WORKLOADS), help=f"from {','.join(WORKLOADS)}")
    ap.add_argument("--repeats", type=int, help="repeats per measurement (default 5; quick 3)")
    ap.add_argument("--artifact-mb", type=int, help="artifact size in MiB (default 1024)")
    ap.add_argument("--big-search-runs", type=int, help="runs in the big search (30,000)")
    ap.add_argument("--sweep-runs", type=int, help="runs in the sweep (10,000)")
    ap.add_argument(
        "--sdk-populate", action="store_true", help="make every big-search run via the SDK"
    )
    ap.add_argument("--huge-search-runs", type=int, help="runs in search1m (1,000,000)")
    ap.add_argument("--table-runs", type=int, help="runs in the runstable project (10,000)")
    ap.add_argument(
        "--postgres-url",
        default=POSTGRES_URL,
        help="a Postgres server for search1m ('' skips Postgres); a database is made there",
    )
    ap.add_argument(
        "--no-prewarm",
        action="store_true",
        help="skip writing and deleting 6x the artifact size before the artifact workload",
    )
    ap.add_argument("--mlflow-spec", default="mlflow", help="pip requirement for MLflow")
    ap.add_argument("--json", type=Path, help="also write results and samples here")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (for debugging)")
    args = ap.parse_args(argv)

    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if unknown := only - set(WORKLOADS):
        ap.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    sz = QUICK if args.quick else Sizes()
    if args.repeats:
        sz = replace(sz, repeats=args.repeats)
    if args.artifact_mb:
        sz = replace(sz, artifact_bytes=args.artifact_mb << 20)
    if args.big_search_runs:
        sz = replace(sz, big_search_runs=args.big_search_runs)
    if args.sweep_runs:
        sz = replace(sz, sweep_runs=args.sweep_runs)
    if args.huge_search_runs:
        sz = replace(sz, huge_search_runs=args.huge_search_runs)
    if args.table_runs:
        sz = replace(sz, table_runs=args.table_runs)
    # Embedded Plinth, always: no PLINTH_URL or other setting from the caller's shell.
    for key in [k for k in os.environ if k.startswith("PLINTH_")]:
        del os.environ[key]

    started = time.perf_counter()
    load_before = load_average()
    WORK_ROOT.mkdir(exist_ok=True)
    mlflow = None if args.skip_mlflow else mlflow_python(args.mlflow_spec)
    if mlflow and "search1m" in only and args.postgres_url:
        mlflow_postgres_driver(mlflow)
    version = run_mlflow(mlflow, {"workload": "version"})["version"] if mlflow else None
    if "tmpfs" in filesystem_of(WORK_ROOT):
        err.print(f"[yellow]warning: {WORK_ROOT} is on tmpfs; disk figures mean RAM[/yellow]")
    work = Path(tempfile.mkdtemp(prefix="tracking-", dir=WORK_ROOT))
    bench = Bench(
        sz,
        work,
        mlflow,
        only,
        args.sdk_populate,
        prewarm=not args.no_prewarm,
        postgres_url=args.postgres_url or None,
    )
    try:
        bench.run()
    finally:
        if args.keep:
            err.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    env = environment(version) | {
        "load avg (1/5/15 min) before": load_before,
        "after": load_average(),
        "wall time": f"{time.perf_counter() - started:.0f} s",
    }
    console = Console() if sys.stdout.isatty() else Console(width=200)
    title = "Plinth vs MLflow — tracking" + (" (--quick)" if args.quick else "")
    render(console, bench.rows, env, title)
    if args.markdown:
        args.markdown.write_text(markdown(bench.rows))
    if args.json:
        payload = {"env": env, "sizes": asdict(sz), "rows": [asdict(r) for r in bench.rows]}
        args.json.write_text(json.dumps(payload, indent=2))
    missed = [r for r in bench.rows if r.met() is False]
    if missed:
        console.print(f"[yellow]{len(missed)} goal(s) missed[/yellow]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
