"""Serving benchmark: one scikit-learn model (LogisticRegression on iris, 1-row JSON
requests) served by Plinth, by a bare floor and by the peers, all driven by ``wrk``.

    .venv/bin/python benchmarks/serving.py                       # every server
    .venv/bin/python benchmarks/serving.py --only plinth,floor   # a subset
    .venv/bin/python benchmarks/serving.py --skip ray,mlflow --duration 5 --json out.json

Servers, each a process of its own on 127.0.0.1, one worker each:

- ``plinth``: ``python -m plinth.serving DIR`` on a directory written by
  ``plinth.registry.flavors.save_model`` (skops), ``POST /v1/models/iris:predict``;
- ``floor``: a bare Starlette endpoint on uvicorn (uvloop, httptools) calling ``predict``;
- ``litserve``, ``bentoml``, ``mlflow`` (``mlflow models serve``), ``ray`` (Ray Serve):
  each installed on first use into its own virtualenv, ``benchmarks/.venv-<peer>``.
  A peer that fails to install or start is reported as such; the run goes on.

Every server answers the same body, ``{"instances": [[5.1, 3.5, 1.4, 0.2]]}``, with
the same model (each fits it in its own process from sklearn's bundled iris, so no
file crosses scikit-learn versions). Per server: cold start (spawn to the first 200 of
a predict request), then ``wrk`` at 8 and 64 connections (req/s, p50, p99, errors),
then overload runs past saturation (``--overload-connections``: 128, twice the 64 at
which capacity is measured, and 512, far past it) counting what is not a 200/429/503:
other statuses, socket errors and timeouts (no answer within 2 s), and whether the
server still answers afterwards. ``--pin`` runs the servers on CPU 0 and wrk on the
other cores, so that the load generator does not take the server's CPU (on a 2-core
machine both otherwise share both). Temp files live under ``benchmarks/.work/``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from tracking import WORK_ROOT, fmt  # noqa: E402  (the tracking benchmark's, beside this file)

BODY = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
SERVER_CPUS: set[int] = set()  # --pin: the servers' cores (wrk gets the rest)
SERVERS = ("plinth", "canary", "floor", "litserve", "bentoml", "mlflow", "ray")
PEERS = ("litserve", "bentoml", "mlflow", "ray")
PEER_PACKAGES = {
    "litserve": ["litserve", "scikit-learn"],
    "bentoml": ["bentoml", "scikit-learn"],
    "mlflow": ["mlflow", "scikit-learn"],
    "ray": ["ray[serve]", "scikit-learn"],
}

FIT = """
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=1000).fit(X, y)
"""

SCRIPTS = {
    "floor": FIT
    + """
import sys
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def predict(request):
    body = await request.json()
    rows = np.asarray(body["instances"], dtype=float)
    return JSONResponse({"predictions": model.predict(rows).tolist()})

app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            log_level="warning", access_log=False)
""",
    "litserve": """
import sys
import numpy as np
import litserve as ls

class IrisAPI(ls.LitAPI):
    def setup(self, device):
"""
    + textwrap.indent(FIT, " " * 8)
    + """
        self.model = model

    def decode_request(self, request):
        return np.asarray(request["instances"], dtype=float)

    def predict(self, rows):
        return self.model.predict(rows)

    def encode_response(self, output):
        return {"predictions": output.tolist()}

if __name__ == "__main__":
    server = ls.LitServer(IrisAPI(), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False)
""",
    "bentoml": """
import bentoml
import numpy as np

@bentoml.service(workers=1)
class Iris:
    def __init__(self):
"""
    + textwrap.indent(FIT, " " * 8)
    + """
        self.model = model

    @bentoml.api
    def predict(self, instances: list[list[float]]) -> dict:
        return {"predictions": self.model.predict(np.asarray(instances)).tolist()}
""",
    "mlflow_save": FIT
    + """
import sys
import mlflow.sklearn
mlflow.sklearn.save_model(model, sys.argv[1])
""",
    "ray": """
import sys
import time
import numpy as np
import ray
from ray import serve

@serve.deployment(num_replicas=1)
class Iris:
    def __init__(self):
"""
    + textwrap.indent(FIT, " " * 8)
    + """
        self.model = model

    async def __call__(self, request):
        body = await request.json()
        rows = np.asarray(body["instances"], dtype=float)
        return {"predictions": self.model.predict(rows).tolist()}

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(Iris.bind(), route_prefix="/")
while True:
    time.sleep(3600)
""",
}

LUA = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
%s
done = function(summary, latency, requests)
  local e = summary.errors
  local statuses = {}
  for _, t in ipairs(threads or {}) do
    local counts = t:get("counts")
    if counts then
      for code, n in pairs(counts) do statuses[code] = (statuses[code] or 0) + n end
    end
  end
  local parts = {}
  for code, n in pairs(statuses) do parts[#parts + 1] = string.format('"%%s": %%d', code, n) end
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"max_us": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d, '
    .. '"timeout": %%d, "statuses": {%%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ", ")))
end
"""

# Counting every status costs wrk a Lua call per response: only in the overload run.
COUNT_STATUSES = """
threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) counts = {} end
response = function(status, headers, body)
  counts[tostring(status)] = (counts[tostring(status)] or 0) + 1
end
"""


def step(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# servers ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    command: list[str]
    path: str  # the predict endpoint
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def peer_python(peer: str, log: Path) -> Path:
    """The peer's virtualenv python, created and filled on first use."""
    venv = HERE / f".venv-{peer}"
    python = venv / "bin" / "python"
    marker = venv / ".plinth-bench-ready"
    if marker.exists():
        return python
    step(f"installing {peer} into {venv} (first use)")
    with log.open("ab") as out:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=out)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *PEER_PACKAGES[peer]], check=True, stdout=out, stderr=out)
    marker.touch()
    return python


PLINTH_SRC = ROOT / "src"  # --plinth-src measures another checkout (before/after)


def make_server(name: str, port: int, work: Path) -> Server:
    """How to start ``name`` on ``port``; raises (with a reason) when it cannot."""
    scripts = work / "scripts"
    scripts.mkdir(exist_ok=True)
    if name == "plinth":
        env = {"PYTHONPATH": str(PLINTH_SRC)}
        command = [sys.executable, "-m", "plinth.serving", str(work / "iris")]
        command += ["--name", "iris", "--port", str(port)]
        return Server(name, command, "/v1/models/iris:predict", work, env)
    if name == "canary":
        return canary_server(port, work)
    if name == "floor":
        script = scripts / "floor.py"
        script.write_text(SCRIPTS["floor"])
        return Server(name, [sys.executable, str(script), str(port)], "/predict", work)
    python = peer_python(name, work / f"install-{name}.log")
    bin_path = {
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    }  # mlflow runs `uvicorn`
    if name == "litserve":
        script = scripts / "litserve_server.py"
        script.write_text(SCRIPTS["litserve"])
        return Server(name, [str(python), str(script), str(port)], "/predict", work, bin_path)
    if name == "bentoml":
        (scripts / "service.py").write_text(SCRIPTS["bentoml"])
        bentoml = str(python.parent / "bentoml")
        command = [bentoml, "serve", "service:Iris", "--host", "127.0.0.1", "--port", str(port)]
        return Server(
            name, command, "/predict", scripts, {**bin_path, "BENTOML_DO_NOT_TRACK": "True"}
        )
    if name == "mlflow":
        model_dir = work / "mlflow-model"
        if not model_dir.exists():
            (scripts / "mlflow_save.py").write_text(SCRIPTS["mlflow_save"])
            subprocess.run(
                [str(python), str(scripts / "mlflow_save.py"), str(model_dir)],
                check=True,
                capture_output=True,
            )
        mlflow = str(python.parent / "mlflow")
        command = [mlflow, "models", "serve", "-m", str(model_dir), "--env-manager", "local"]
        command += ["-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
        return Server(name, command, "/invocations", work, bin_path)
    if name == "ray":
        script = scripts / "ray_server.py"
        script.write_text(SCRIPTS["ray"])
        env = {**bin_path, "RAY_USAGE_STATS_ENABLED": "0"}
        return Server(name, [str(python), str(script), str(port)], "/", work, env)
    raise ValueError(name)


def _digest(directory: Path) -> str:
    """A saved model's digest, as the registry computes it (a replica checks it)."""
    from plinth.registry.manifest import directory_files, manifest_digest

    return manifest_digest(directory_files(directory))


def canary_server(port: int, work: Path) -> Server:
    """A deployment's replica (``--replica``) holding two versions split 90/10: the
    same model saved twice, so only the split's own cost shows."""
    config = {
        "name": "iris",
        "generation": 1,
        "port": port,
        "versions": [
            {"version": "1", "directory": str(work / "iris"), "digest": _digest(work / "iris")},
            {"version": "2", "directory": str(work / "iris-2"), "digest": _digest(work / "iris-2")},
        ],
        "split": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}],
        "shadow": None,
    }
    path = work / f"replica-{port}.json"
    path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "plinth.serving", "--replica", str(path)]
    command += ["--socket", str(work / f"admin-{port}.sock"), "--deployment", "bench"]
    env = {"PYTHONPATH": str(PLINTH_SRC), "PLINTH_REPLICA_SECRET": os.urandom(16).hex()}
    return Server("canary", command, "/v1/models/iris:predict", work, env)


@contextlib.contextmanager
def running(server: Server, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            server.command,
            cwd=server.cwd,
            env=child_env(server.env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that its whole process group can be stopped
            preexec_fn=(lambda: os.sched_setaffinity(0, SERVER_CPUS)) if SERVER_CPUS else None,
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            # the group may outlive its leader (uvicorn workers, Ray's raylet)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def predict_once(port: int, path: str, timeout: float = 5) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def answers_again(proc: subprocess.Popen[bytes], port: int, path: str, within: float = 10) -> bool:
    """Whether the server, still running, answers a predict with 200 within ``within``
    seconds of an overload: the requests of connections wrk has just dropped may
    still fill its queue for a moment (a 503 then is shedding, not death)."""
    deadline = time.perf_counter() + within
    while proc.poll() is None and time.perf_counter() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if predict_once(port, path, timeout=2) == 200:
                return True
        time.sleep(0.1)
    return False


def wait_first_200(proc: subprocess.Popen[bytes], port: int, path: str, limit: float) -> float:
    """Seconds from now until a predict request answers 200."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before answering")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if predict_once(port, path, timeout=2) == 200:
                return time.perf_counter() - started
        time.sleep(0.02)
    raise RuntimeError(f"no 200 within {limit:.0f} s")


# load ---------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: install it (apt-get install -y wrk) and run again")
    step("installing wrk (apt-get install -y wrk)")
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def run_wrk(
    wrk: str, port: int, path: str, connections: int, seconds: float, work: Path, *, count=False
) -> dict[str, Any]:
    script = work / ("count.lua" if count else "post.lua")
    body = BODY.replace("'", "\\'")
    script.write_text(LUA % (body, COUNT_STATUSES if count else ""))
    threads = min(2, connections)
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "2s"]
    if SERVER_CPUS:  # wrk on the other cores
        others = sorted(set(range(os.cpu_count() or 1)) - SERVER_CPUS)
        command = ["taskset", "-c", ",".join(map(str, others)), *command]
    command += ["-s", str(script), f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[8:])
            bad = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"] + raw["status"]
            return {
                "connections": connections,
                "rps": raw["requests"] / (raw["duration_us"] / 1e6),
                "p50_ms": raw["p50_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "max_ms": raw["max_us"] / 1000,
                "requests": raw["requests"],
                "errors": bad,
                "timeouts": raw["timeout"],
                "socket_errors": raw["connect"] + raw["read"] + raw["write"],
                "statuses": raw["statuses"],
            }
    raise RuntimeError(f"wrk gave no result: {out.stderr.strip() or out.stdout.strip()}")


# one server ---------------------------------------------------------------------------


def bench_server(name: str, args: argparse.Namespace, work: Path, wrk: str) -> dict[str, Any]:
    result: dict[str, Any] = {"server": name, "ok": False}
    log = work / f"{name}.log"
    try:
        colds = []
        for attempt in range(args.cold_repeats):
            port = free_port()
            server = make_server(name, port, work)
            with running(server, log) as proc:
                colds.append(wait_first_200(proc, port, server.path, args.start_timeout))
                if attempt < args.cold_repeats - 1:
                    continue
                step(f"{name}: first 200 after {colds[-1]:.2f} s; loading")
                for _ in range(200):  # warm-up
                    predict_once(port, server.path)
                run_wrk(wrk, port, server.path, 8, min(2, args.duration), work)
                result["loads"] = load_runs(wrk, port, server.path, args, work)
                result["overload"] = {
                    str(c): overload(wrk, port, server.path, c, args, work, proc)
                    for c in args.overload_connections
                }
        result["cold_start_s"] = statistics.median(colds)
        result["cold_starts_s"] = colds
        result["ok"] = True
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        result["failure"] = f"{type(exc).__name__}: {exc}"
        step(f"{name} failed: {result['failure']} (log: {log})")
    return result


def load_runs(
    wrk: str, port: int, path: str, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Median by req/s of ``--repeats`` wrk runs at each connection count."""
    loads: dict[str, Any] = {}
    for connections in args.connections:
        runs = [run_wrk(wrk, port, path, connections, args.duration, work)]
        for _ in range(args.repeats - 1):
            runs.append(run_wrk(wrk, port, path, connections, args.duration, work))
        runs.sort(key=lambda r: r["rps"])
        chosen = dict(runs[len(runs) // 2])
        chosen["rps_all"] = [round(r["rps"]) for r in runs]
        loads[str(connections)] = chosen
        step(
            f"  c={connections}: {chosen['rps']:,.0f} req/s p50 {chosen['p50_ms']:.2f} ms "
            f"p99 {chosen['p99_ms']:.2f} ms errors {chosen['errors']}"
        )
    return loads


def overload(
    wrk: str,
    port: int,
    path: str,
    connections: int,
    args: argparse.Namespace,
    work: Path,
    proc: subprocess.Popen[bytes],
) -> dict[str, Any]:
    run = run_wrk(wrk, port, path, connections, args.duration, work, count=True)
    shed = sum(n for code, n in run["statuses"].items() if code in ("429", "503"))
    other = sum(n for code, n in run["statuses"].items() if code not in ("200", "429", "503"))
    result = {
        "connections": connections,
        "rps": run["rps"],
        "p99_ms": run["p99_ms"],
        "ok": run["statuses"].get("200", 0),
        "shed": shed,
        "other_status": other,
        "socket_errors": run["socket_errors"],
        "timeouts": run["timeouts"],
        "alive_after": answers_again(proc, port, path),
    }
    step(f"  overload c={connections}: {result}")
    return result


# the model Plinth serves --------------------------------------------------------------


def save_plinth_model(directory: Path) -> None:
    code = (
        FIT
        + "import sys\nfrom pathlib import Path\n"
        + "from plinth.registry.flavors import save_model\n"
        + "save_model(model, Path(sys.argv[1]), input_example=X[:5])\n"
    )
    env = child_env({"PYTHONPATH": str(ROOT / "src")})
    subprocess.run([sys.executable, "-c", code, str(directory)], check=True, env=env)


# the table ----------------------------------------------------------------------------


def load_of(result: dict[str, Any], connections: int) -> dict[str, Any] | None:
    if not result.get("ok"):
        return None
    found: dict[str, Any] | None = result.get("loads", {}).get(str(connections))
    return found


def ratios(results: list[dict[str, Any]], connections: list[int]) -> dict[str, Any]:
    """Plinth's req/s (plain, and split 90/10) as a multiple of the floor's and of the
    best peer's."""
    by_name = {r["server"]: r for r in results}
    out: dict[str, Any] = {}
    for ours in ("plinth", "canary"):
        if ours in by_name:
            out.update(_ratios(by_name, ours, results, connections))
    return out


def _ratios(
    by_name: dict[str, Any], ours: str, results: list[dict[str, Any]], connections: list[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    plinth = by_name[ours]
    for c in connections:
        mine = load_of(plinth, c)
        floor = load_of(by_name["floor"], c) if "floor" in by_name else None
        peers = [load_of(r, c) for r in results if r["server"] in PEERS]
        best = max((p for p in peers if p), key=lambda p: p["rps"], default=None)
        entry: dict[str, Any] = {}
        if mine and floor:
            entry["rps_vs_floor"] = mine["rps"] / floor["rps"]
            entry["p50_vs_floor"] = mine["p50_ms"] / floor["p50_ms"]
            entry["p99_vs_floor"] = mine["p99_ms"] / floor["p99_ms"]
        if mine and best:
            entry["rps_vs_best_peer"] = mine["rps"] / best["rps"]
        out[f"{ours} @{c}"] = entry
    return out


def print_table(results: list[dict[str, Any]], connections: list[int], summary: dict) -> None:
    header = ["server", "cold start s"]
    for c in connections:
        header += [f"req/s @{c}", f"p50 ms @{c}", f"p99 ms @{c}", f"errors @{c}"]
    levels = sorted({c for r in results for c in r.get("overload", {})}, key=int)
    for c in levels:
        header += [f"@{c}: 200 / shed / other / timeouts", f"alive after @{c}"]
    rows = []
    for r in results:
        if not r.get("ok"):
            rows.append([r["server"], "failed: " + r.get("failure", "?")[:60]])
            continue
        row = [r["server"], fmt(r["cold_start_s"])]
        for c in connections:
            load = load_of(r, c) or {}
            row += [fmt(load.get("rps")), fmt(load.get("p50_ms")), fmt(load.get("p99_ms"))]
            row += [str(load.get("errors", "-"))]
        for c in levels:
            o = r.get("overload", {}).get(c)
            if o:
                row += [
                    f"{o['ok']} / {o['shed']} / {o['other_status'] + o['socket_errors']} / "
                    f"{o['timeouts']}",
                    "yes" if o["alive_after"] else "NO",
                ]
        rows.append(row)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for c, entry in summary.items():
        parts = [f"{k} {v:.2f}x" for k, v in entry.items()]
        print(f"{c} connections: " + (", ".join(parts) or "-"))


# main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SERVERS)}")
    ap.add_argument("--skip", default="", help="comma-separated servers to leave out")
    ap.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    ap.add_argument("--repeats", type=int, default=1, help="wrk runs per load (median)")
    ap.add_argument("--connections", default="8,64", help="connection counts")
    ap.add_argument(
        "--overload-connections",
        default="128,512",
        help="connection counts past saturation, counting what is not 200/429/503 (empty "
        "skips): 2x the 64 at which capacity is measured, and far past it",
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="servers on CPU 0, wrk on the other cores: load and server do not compete",
    )
    ap.add_argument("--cold-repeats", type=int, default=3, help="spawns timed per server")
    ap.add_argument("--start-timeout", type=float, default=120)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    ap.add_argument("--plinth-src", type=Path, help="serve Plinth from this src/ instead")
    args = ap.parse_args()
    args.connections = [int(c) for c in args.connections.split(",") if c]
    args.overload_connections = [int(c) for c in args.overload_connections.split(",") if c]
    if args.pin and (os.cpu_count() or 1) < 2:
        ap.error("--pin needs two CPUs or more")
    chosen = [s for s in args.only.split(",") if s] or list(SERVERS)
    skipped = {s for s in args.skip.split(",") if s}
    unknown = (set(chosen) | skipped) - set(SERVERS)
    if unknown:
        ap.error(f"unknown server(s): {', '.join(sorted(unknown))}; known: {', '.join(SERVERS)}")
    args.servers = [s for s in SERVERS if s in chosen and s not in skipped]
    return args


def main() -> None:
    args = parse_args()
    if args.pin:
        SERVER_CPUS.add(0)
    if args.plinth_src:
        global PLINTH_SRC
        PLINTH_SRC = args.plinth_src.resolve()
    wrk = ensure_wrk()
    WORK_ROOT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serving-", dir=WORK_ROOT))
    step(f"work dir {work}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        if "plinth" in args.servers or "canary" in args.servers:
            save_plinth_model(work / "iris")
        if "canary" in args.servers:
            shutil.copytree(work / "iris", work / "iris-2")
        results = [bench_server(name, args, work, wrk) for name in args.servers]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = ratios(results, args.connections)
    canary = "the row 'canary': a deployment replica splitting 90/10 between two versions"
    if importlib.util.find_spec("plinth.serving.split") is None:
        canary = "skipped: deployments (plinth.serving.split) are not in this checkout"
    print_table(results, args.connections, summary)
    print(f"90/10 canary: {canary}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        payload = {
            "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "load_average": os.getloadavg(),
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "results": results,
            "plinth_ratios": summary,
            "canary": canary,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
