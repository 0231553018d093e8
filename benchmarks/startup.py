"""Start-up benchmarks: how long Plinth makes a user wait before anything happens,
side by side with MLflow.

    .venv/bin/python benchmarks/startup.py             # `make bench-startup`
    .venv/bin/python benchmarks/startup.py --quick     # fewer repeats, a smoke run
    .venv/bin/python benchmarks/startup.py --skip-mlflow

Each figure is a fresh process, timed from spawn to exit, as a user's shell would see it:
``import plinth`` against ``import mlflow``, ``plinth --help`` against ``mlflow --help``,
and ``plinth runs list -p P`` over a small embedded home (SQLite, 20 runs) against
``mlflow runs list`` over a small SQLite store. Commands run interleaved (a round of all
of them, repeated), after two unmeasured rounds that warm the page cache and write the
bytecode caches. The floor is the interpreter alone (``python -c pass``), and for
``runs list`` the interpreter importing the libraries the embedded app stands on (Typer,
Rich, httpx, pydantic-settings, SQLAlchemy, FastAPI). Besides wall time, the children's
CPU time (user + sys) is reported: on a machine shared with other work it moves less
than wall time. MLflow runs from ``benchmarks/.venv-mlflow``, made by ``tracking.py``'s
helper on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from tracking import (
    MLFLOW_VENV,
    WORK_ROOT,
    Row,
    environment,
    load_average,
    markdown,
    med,
    mlflow_python,
    render,
    step,
)

PLINTH_BIN = Path(sys.executable).parent
PROJECT = "startup"
RUNS = 20
LIST_GOAL_MS = 700.0  # the absolute goal for an embedded `plinth runs list`
RATIO_GOAL = 10.0  # import and --help: at least this many times faster than MLflow's
# What an embedded command cannot start without: the libraries its app stands on.
LIBRARIES = "import typer, rich.table, httpx, pydantic_settings, sqlalchemy, fastapi"


@dataclass(frozen=True)
class Command:
    name: str
    argv: list[str]
    env: dict[str, str]


@dataclass
class Timing:
    wall_ms: list[float]
    cpu_ms: list[float]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PLINTH_*/MLFLOW_* settings from the caller's shell, and
    with bytecode caches written as a user's first run writes them (a shell that sets
    PYTHONDONTWRITEBYTECODE would have every run compile both projects from source)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "MLFLOW_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    quiet = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "COLUMNS": "100"}
    return env | quiet | extra


def run_once(command: Command) -> tuple[float, float]:
    """Wall and CPU (user + sys) milliseconds of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        command.argv, env=command.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{command.name} exited {done.returncode}:\n{tail}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def measure(commands: list[Command], repeats: int, warmups: int = 2) -> dict[str, Timing]:
    """Rounds of every command, interleaved so that a burst of load elsewhere falls on
    all of them alike."""
    timings = {c.name: Timing([], []) for c in commands}
    for round_ in range(warmups + repeats):
        for command in commands:
            wall, cpu = run_once(command)
            if round_ >= warmups:
                timings[command.name].wall_ms.append(wall)
                timings[command.name].cpu_ms.append(cpu)
    return timings


# homes ----------------------------------------------------------------------------------


def plinth_home(work: Path) -> Path:
    """A small embedded home: one project of RUNS finished runs, made through the SDK."""
    import plinth

    home = work / "plinth-home"
    with plinth.Client(home=str(home)) as client:
        for i in range(RUNS):
            params = {"lr": 0.1 / (i + 1), "depth": i % 5}
            with plinth.start_run(PROJECT, name=f"run-{i}", params=params, client=client) as run:
                run.log({"acc": 0.5 + i / 100, "loss": 1 / (i + 1)})
    return home


MLFLOW_SETUP = """
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
exp = mlflow.create_experiment("startup")
for i in range(int(sys.argv[2])):
    with mlflow.start_run(experiment_id=exp, run_name=f"run-{i}"):
        mlflow.log_params({"lr": 0.1 / (i + 1), "depth": i % 5})
        mlflow.log_metrics({"acc": 0.5 + i / 100, "loss": 1 / (i + 1)})
print("EXPERIMENT", exp)
"""


def mlflow_store(python: Path, work: Path) -> tuple[str, str]:
    """A small SQLite tracking store like the Plinth home; its URI and experiment id."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    done = subprocess.run(
        [str(python), "-c", MLFLOW_SETUP, uri, str(RUNS)],
        env=clean_env(PYTHONWARNINGS="ignore"),
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    experiment = done.stdout.split("EXPERIMENT", 1)[1].strip()
    return uri, experiment


# the run ----------------------------------------------------------------------------------


def commands(work: Path, mlflow: Path | None) -> list[Command]:
    python, plinth = sys.executable, str(PLINTH_BIN / "plinth")
    home = plinth_home(work)
    found = [
        Command("floor", [python, "-c", "pass"], clean_env()),
        Command("floor list", [python, "-c", LIBRARIES], clean_env()),
        Command("plinth import", [python, "-c", "import plinth"], clean_env()),
        Command("plinth help", [plinth, "--help"], clean_env()),
        Command(
            "plinth list",
            [plinth, "runs", "list", "-p", PROJECT],
            clean_env(PLINTH_HOME=str(home)),
        ),
    ]
    if mlflow is not None:
        uri, experiment = mlflow_store(mlflow, work)
        found += [
            Command("mlflow import", [str(mlflow), "-c", "import mlflow"], clean_env()),
            Command("mlflow help", [str(MLFLOW_VENV / "bin" / "mlflow"), "--help"], clean_env()),
            Command(
                "mlflow list",
                [
                    str(MLFLOW_VENV / "bin" / "mlflow"),
                    "runs",
                    "list",
                    "--experiment-id",
                    experiment,
                ],
                clean_env(MLFLOW_TRACKING_URI=uri),
            ),
        ]
    return found


def rows(timings: dict[str, Timing]) -> list[Row]:
    found = []
    workloads = (
        ("import", "import plinth / import mlflow"),
        ("help", "plinth --help / mlflow --help"),
        ("list", f"runs list, {RUNS} runs (embedded SQLite / MLflow SQLite)"),
    )
    for key, label in workloads:
        plinth, mlflow = timings[f"plinth {key}"], timings.get(f"mlflow {key}")
        floor = timings["floor list" if key == "list" else "floor"]
        for measure, of in (("ms wall (median)", "wall_ms"), ("ms CPU, user+sys", "cpu_ms")):
            p, f = getattr(plinth, of), getattr(floor, of)
            m = getattr(mlflow, of) if mlflow else []
            goal, note = None, ""
            if of == "wall_ms" and key == "list":
                goal, note = LIST_GOAL_MS, "goal: the issue's absolute 0.7 s"
            elif of == "wall_ms" and m:
                goal = round(med(m) / RATIO_GOAL)
                note = f"goal: {RATIO_GOAL:g}x faster than MLflow's {med(m):,.0f} ms"
            found.append(
                Row(
                    label,
                    measure,
                    "lower",
                    med(p),
                    med(m) if m else None,
                    med(f),
                    goal=goal,
                    note=note,
                    samples={"plinth": p, "mlflow": m, "floor": f},
                )
            )
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 repeats: a smoke run")
    ap.add_argument("--repeats", type=int, help="measured rounds (default 15; quick 5)")
    ap.add_argument("--skip-mlflow", action="store_true", help="Plinth and the floor only")
    ap.add_argument("--mlflow-spec", default="mlflow", help="pip requirement for MLflow")
    ap.add_argument("--json", type=Path, help="also write results and samples here")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = ap.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 15)

    started, load_before = time.perf_counter(), load_average()
    mlflow = None if args.skip_mlflow else mlflow_python(args.mlflow_spec)
    WORK_ROOT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="startup-", dir=WORK_ROOT))
    try:
        step("making a small Plinth home" + ("" if mlflow is None else " and MLflow store"))
        found = commands(work, mlflow)
        step(f"{repeats} rounds of {len(found)} commands (+2 to warm up) …")
        timings = measure(found, repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    version = None
    if mlflow is not None:
        probe = [str(mlflow), "-c", "import mlflow; print(mlflow.__version__)"]
        version = subprocess.run(probe, capture_output=True, text=True).stdout.strip()
    env = environment(version) | {
        "load avg (1/5/15 min) before": load_before,
        "after": load_average(),
        "wall time": f"{time.perf_counter() - started:.0f} s",
    }
    table = rows(timings)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    render(
        console, table, env, "Plinth vs MLflow — start-up" + (" (--quick)" if args.quick else "")
    )
    if args.markdown:
        args.markdown.write_text(markdown(table))
    if args.json:
        payload = {"env": env, "repeats": repeats, "rows": [asdict(r) for r in table]}
        args.json.write_text(json.dumps(payload, indent=2))
    if missed := [r for r in table if r.met() is False]:
        console.print(f"[yellow]{len(missed)} goal(s) missed[/yellow]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
