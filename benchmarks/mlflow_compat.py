"""MLflow compatibility benchmark: one MLflow client script, run against Plinth's MLflow
API and against ``mlflow server``, in one process tree, with the ratio printed.

    .venv/bin/python benchmarks/mlflow_compat.py              # 100 runs, 100 MB (`make bench`)
    .venv/bin/python benchmarks/mlflow_compat.py --quick      # 10 runs, 10 MB: a smoke run

The script is the issue's: ``--runs`` runs, each with 10 params and 1,000 metric points
sent with ``MlflowClient.log_batch``, then one ``--artifact-mb`` MB artifact with
``mlflow.log_artifact``. It runs in MLflow's own virtualenv (``benchmarks/.venv-mlflow``,
shared with the tracking benchmark, made on first use) with the real MLflow client:

- ``plinth``: ``plinth server`` over a fresh embedded home (SQLite, local artifacts),
  the client at ``http://127.0.0.1:PORT/mlflow``;
- ``mlflow``: ``mlflow server`` with its SQLite backend and proxied artifacts
  (``--serve-artifacts``, ``--artifacts-destination``), as a team would run it.

Each server starts fresh for each repeat; the servers alternate, and the figure is the
median of ``--repeats`` repeats of the whole script (the machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import tracking  # beside this file: MLflow's virtualenv is shared with it

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GOAL = 3.0  # Plinth at least this many times faster end to end
console = Console() if sys.stdout.isatty() else Console(width=140)

CLIENT = r"""
import json, os, sys, time
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

cfg = json.loads(sys.argv[1])
client = MlflowClient()
began = time.perf_counter()
mlflow.set_experiment("bench")
for r in range(cfg["runs"]):
    with mlflow.start_run(run_name=f"run-{r}") as run:
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("loss", 1.0 / (s + 1), now + s, s) for s in range(cfg["points"])],
            params=[Param(f"p{i}", str(i * r)) for i in range(cfg["params"])],
        )
logged = time.perf_counter()
with mlflow.start_run(run_name="artifact"):
    mlflow.log_artifact(cfg["artifact"])
done = time.perf_counter()
history = client.get_metric_history(run.info.run_id, "loss")
assert len(history) == cfg["points"], len(history)
print(json.dumps({"runs_s": logged - began, "artifact_s": done - logged, "total_s": done - began}))
"""


def step(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer:\n{log.read_text()[-3000:]}")


def start(server: str, work: Path, mlflow: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A fresh server of ``server``'s kind: the process and its MLflow tracking URI."""
    port = free_port()
    home = work / server
    home.mkdir()
    log = work / f"{server}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "MLFLOW_"))}
    if server == "plinth":
        command = [str(ROOT / ".venv" / "bin" / "plinth"), "server", "--host", "127.0.0.1"]
        command += ["--port", str(port)]
        env["PLINTH_HOME"] = str(home)
        uri, probe = f"http://127.0.0.1:{port}/mlflow", f"http://127.0.0.1:{port}/healthz"
    else:
        command = [str(mlflow.parent / "mlflow"), "server", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}"]
        command += ["--serve-artifacts", "--artifacts-destination", str(home / "artifacts")]
        uri, probe = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/health"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_http(probe, proc, log)
    return proc, uri


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def one(server: str, work: Path, mlflow: Path, cfg: dict[str, Any]) -> dict[str, float]:
    proc, uri = start(server, work, mlflow)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "MLFLOW_"))}
        env["MLFLOW_TRACKING_URI"] = uri
        done = subprocess.run(
            [str(mlflow), "-c", CLIENT, json.dumps(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the MLflow script failed against {server}:\n{done.stderr[-3000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--params", type=int, default=10)
    ap.add_argument("--points", type=int, default=1_000)
    ap.add_argument("--artifact-mb", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="10 runs, a 10 MB artifact, 1 repeat")
    ap.add_argument("--mlflow-spec", default="mlflow==3.17.2", help="pip requirement")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.artifact_mb, args.repeats = 10, 10, 1
    mlflow = tracking.mlflow_python(args.mlflow_spec)
    work_root = Path(tempfile.mkdtemp(prefix="plinth-bench-mlflow-"))
    artifact = work_root / "model.bin"
    with open(artifact, "wb") as f:
        for _ in range(args.artifact_mb):
            f.write(os.urandom(1 << 20))
    cfg = {"runs": args.runs, "params": args.params, "points": args.points}
    cfg["artifact"] = str(artifact)
    figures: dict[str, list[dict[str, float]]] = {"plinth": [], "mlflow": []}
    try:
        for repeat in range(args.repeats):
            for server in ("mlflow", "plinth") if repeat % 2 else ("plinth", "mlflow"):
                work = work_root / f"{server}-{repeat}"
                work.mkdir()
                step(f"{server}, repeat {repeat + 1} of {args.repeats} …")
                figures[server].append(one(server, work, mlflow, cfg))
                step(f"{server}: {figures[server][-1]['total_s']:.2f} s")
                shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return report(figures, args)


def report(figures: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> int:
    def median(server: str, key: str) -> float:
        return statistics.median(f[key] for f in figures[server])

    table = Table(title="MLflow's client against Plinth and against mlflow server (medians)")
    for column in ("phase", "Plinth, s", "MLflow, s", "MLflow ÷ Plinth", "goal"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    rows = (
        ("runs_s", f"{args.runs} runs x {args.params} params x {args.points:,} points"),
        ("artifact_s", f"one {args.artifact_mb} MB artifact"),
        ("total_s", "end to end"),
    )
    results = {}
    for key, label in rows:
        plinth, peer = median("plinth", key), median("mlflow", key)
        results[key] = {"plinth": plinth, "mlflow": peer, "ratio": peer / plinth}
        goal = f"≥ {GOAL:g}x" if key == "total_s" else ""
        table.add_row(label, f"{plinth:.2f}", f"{peer:.2f}", f"{peer / plinth:.1f}x", goal)
    console.print(table)
    met = results["total_s"]["ratio"] >= GOAL
    console.print(
        f"goal {'met' if met else 'NOT met'}; {args.repeats} repeats; {os.cpu_count()} cores"
    )
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "medians": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
