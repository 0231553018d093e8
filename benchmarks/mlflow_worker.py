"""The MLflow side of ``benchmarks/tracking.py``; runs in MLflow's own virtualenv.

    benchmarks/.venv-mlflow/bin/python benchmarks/mlflow_worker.py '{"workload": ...}'

Each workload gets a fresh SQLite tracking store (``sqlite:///WORKDIR/mlflow.db``) and a
local artifact root under WORKDIR, repeats its measurement, and prints one line
``RESULT {json}`` with the raw samples; ``tracking.py`` takes the medians. Only the
standard library and MLflow are imported here.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _setup(workdir: Path, db_url: str | None = None) -> tuple[Any, Any, str]:
    import mlflow
    from mlflow import MlflowClient

    workdir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(db_url or f"sqlite:///{workdir / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.create_experiment("bench", artifact_location=(workdir / "artifacts").as_uri())
    return mlflow, client, exp


def log(cfg: dict[str, Any]) -> dict[str, list[float]]:
    """``mlflow.log_metric`` once per point inside an active run (synchronous)."""
    mlflow, _client, exp = _setup(Path(cfg["workdir"]))
    n = cfg["n"]
    caller_us, points_per_s = [], []
    clock = time.perf_counter_ns
    for _ in range(cfg["repeats"]):
        per_call = [0] * n
        run = mlflow.start_run(experiment_id=exp)
        start = clock()
        for i in range(n):
            t0 = clock()
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
            per_call[i] = clock() - t0
        mlflow.end_run()
        elapsed = (clock() - start) / 1e9
        del run
        caller_us.append(statistics.median(per_call) / 1e3)
        points_per_s.append(n / elapsed)
    return {"caller_us": caller_us, "points_per_s": points_per_s}


def batch(cfg: dict[str, Any]) -> dict[str, list[float]]:
    """``MlflowClient.log_batch`` with ``Metric`` entities, ``batch`` points per call."""
    from mlflow.entities import Metric

    _mlflow, client, exp = _setup(Path(cfg["workdir"]))
    n, size = cfg["n"], cfg["batch"]
    us_per_point = []
    for _ in range(cfg["repeats"]):
        run_id = client.create_run(exp).info.run_id
        ts = int(time.time() * 1000)
        batches = [
            [Metric("loss", 1.0 / (i + 1), ts, i) for i in range(b, min(b + size, n))]
            for b in range(0, n, size)
        ]
        start = time.perf_counter()
        for metrics in batches:
            client.log_batch(run_id, metrics=metrics)
        us_per_point.append((time.perf_counter() - start) / n * 1e6)
    return {"us_per_point": us_per_point}


def create(cfg: dict[str, Any]) -> dict[str, list[float]]:
    _mlflow, client, exp = _setup(Path(cfg["workdir"]))
    n = cfg["n"]
    ms_per_run = []
    for _ in range(cfg["repeats"]):
        start = time.perf_counter()
        for _ in range(n):
            client.create_run(exp)
        ms_per_run.append((time.perf_counter() - start) / n * 1e3)
    return {"ms_per_run": ms_per_run}


def short(cfg: dict[str, Any]) -> dict[str, list[float]]:
    """A short run, as a sweep makes thousands: start, 2 params, 2 metrics, end."""
    mlflow, _client, exp = _setup(Path(cfg["workdir"]))
    n = cfg["n"]
    for _ in range(5):  # warm
        with mlflow.start_run(experiment_id=exp):
            mlflow.log_params({"lr": 0.1, "batch": 32})
    ms_per_run = []
    for _ in range(cfg["repeats"]):
        per_run = []
        for i in range(n):
            t0 = time.perf_counter()
            with mlflow.start_run(experiment_id=exp):
                mlflow.log_params({"lr": 0.1, "batch": 32})
                mlflow.log_metrics({"loss": 1.0 / (i + 1), "acc": i / n})
            per_run.append(time.perf_counter() - t0)
        ms_per_run.append(statistics.median(per_run) * 1e3)
    return {"ms_per_run": ms_per_run}


def search(cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs with a param ``lr`` and a metric ``acc``; a filtered, ordered first page."""
    from mlflow.entities import Metric, Param

    _mlflow, client, exp = _setup(Path(cfg["workdir"]))
    rng = random.Random(cfg.get("seed", 0))
    start = time.perf_counter()
    for _ in range(cfg["n"]):
        run_id = client.create_run(exp).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("acc", rng.random(), int(time.time() * 1000), 0)],
            params=[Param("lr", str(rng.choice([0.1, 0.01])))],
        )
    populate_ms = (time.perf_counter() - start) / cfg["n"] * 1e3
    ms, found = _search_timings(client, exp, cfg["repeats"])
    return {"ms": ms, "populate_ms_per_run": [populate_ms], "found": found}


def _search_timings(
    client: Any, exp: str, repeats: int, budget_s: float = float("inf")
) -> tuple[list[float], int]:
    """Repeat the search ``repeats`` times, or fewer once ``budget_s`` is spent."""
    ms: list[float] = []
    found = 0
    for _ in range(repeats):
        if sum(ms) > budget_s * 1e3:
            break
        t0 = time.perf_counter()
        runs = client.search_runs(
            [exp],
            filter_string="metrics.acc > 0.5 and params.lr = '0.1'",
            order_by=["metrics.acc DESC"],
            max_results=100,
        )
        ms.append((time.perf_counter() - t0) * 1e3)
        found = len(runs)
    return ms, found


def search_clone(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same search over ``n`` runs, one made through MLflow and the rest cloned in
    SQL (``clone.py``), in SQLite or in the Postgres database ``db_url``."""
    from mlflow.entities import Metric, Param

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import clone

    workdir = Path(cfg["workdir"])
    db_url = cfg.get("db_url") or f"sqlite:///{workdir / 'mlflow.db'}"
    _mlflow, client, exp = _setup(workdir, db_url)
    run_id = client.create_run(exp).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("acc", 0.7, int(time.time() * 1000), 0)],
        params=[Param("lr", "0.1")],
    )
    populate_s = clone.clone_runs(db_url, clone.MLFLOW, run_id, cfg["n"] - 1)
    ms, found = _search_timings(client, exp, cfg["repeats"], budget_s=120)
    return {"ms": ms, "populate_s": [populate_s], "found": found}


def artifacts(cfg: dict[str, Any]) -> dict[str, list[float]]:
    """``log_artifact`` then ``download_artifacts`` of one large file (local store)."""
    import mlflow.artifacts

    workdir = Path(cfg["workdir"])
    _mlflow, client, exp = _setup(workdir)
    src = Path(cfg["file"])
    size = src.stat().st_size
    put, reput, get = [], [], []
    for _ in range(cfg["repeats"]):
        run_id = client.create_run(exp).info.run_id
        os.sync()  # as tracking.settle(): no writeback left over from the last phase
        t0 = time.perf_counter()
        client.log_artifact(run_id, str(src))
        put.append(size / (time.perf_counter() - t0) / 1e6)
        # MLflow does not deduplicate: the same bytes logged to another run are copied.
        run2 = client.create_run(exp).info.run_id
        os.sync()
        t0 = time.perf_counter()
        client.log_artifact(run2, str(src))
        reput.append(size / (time.perf_counter() - t0) / 1e6)
        dest = workdir / "download"
        dest.mkdir(exist_ok=True)
        os.sync()
        t0 = time.perf_counter()
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=src.name, dst_path=str(dest)
        )
        get.append(size / (time.perf_counter() - t0) / 1e6)
        shutil.rmtree(dest)
        shutil.rmtree(workdir / "artifacts", ignore_errors=True)
    return {"put_mb_s": put, "reput_mb_s": reput, "get_mb_s": get}


def history(cfg: dict[str, Any]) -> dict[str, Any]:
    """``MlflowClient.get_metric_history`` of one metric of ``n`` points, logged with
    ``log_batch`` 1,000 at a time (its maximum); every 10,000th value NaN, as Plinth's."""
    from mlflow.entities import Metric

    _mlflow, client, exp = _setup(Path(cfg["workdir"]))
    n = cfg["n"]
    run_id = client.create_run(exp).info.run_id
    points = [
        Metric("loss", math.nan if i % 10_000 == 9_999 else 1.0 / (i + 1), 1_700_000_000_000 + i, i)
        for i in range(n)
    ]
    for b in range(0, n, 1_000):
        client.log_batch(run_id, metrics=points[b : b + 1_000])
    got = len(client.get_metric_history(run_id, "loss"))  # untimed: warms the cache
    if got != n:
        raise AssertionError(f"MLflow returned {got} of {n} points")
    ms = []
    for _ in range(cfg["repeats"]):
        t0 = time.perf_counter()
        client.get_metric_history(run_id, "loss")
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"ms": ms}


WORKLOADS = {
    "log": log,
    "batch": batch,
    "create": create,
    "short": short,
    "search": search,
    "search_clone": search_clone,
    "artifacts": artifacts,
    "history": history,
}


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg["workload"] == "version":
        import mlflow

        result: Any = {"version": mlflow.__version__}
    else:
        result = WORKLOADS[cfg["workload"]](cfg)
    sys.stdout.flush()
    os.write(1, ("\nRESULT " + json.dumps(result) + "\n").encode())


if __name__ == "__main__":
    main()
