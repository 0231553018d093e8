"""Profile one Plinth tracking workload across every thread, with cProfile.

    .venv/bin/python benchmarks/profile_tracking.py batch
    .venv/bin/python benchmarks/profile_tracking.py get --artifact-mb 512 --top 30

Embedded Plinth does its work on other threads (the app's event loop, anyio's worker
threads, the run's flusher), which a plain ``cProfile.run`` never sees. This installs a
profiler in each thread as it starts (``threading.setprofile``), runs the workload, and
prints the merged stats: by own time, then by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tracking import WORK_ROOT, make_file

_profiles: list[cProfile.Profile] = []
_threads: list[str] = ["MainThread"]
_lock = threading.Lock()


def _start_in_thread(_frame: Any, _event: str, _arg: Any) -> None:
    prof = cProfile.Profile()
    with _lock:
        _profiles.append(prof)
        _threads.append(threading.current_thread().name)
    prof.enable()  # replaces this hook in this thread


def workload(name: str, home: Path, scratch: Path, args: argparse.Namespace) -> None:
    import plinth

    client = plinth.Client(home=str(home))
    t0 = time.perf_counter()
    if name == "log":
        run = plinth.start_run("p", client=client)
        for i in range(args.n or 10_000):
            run.log({"loss": 1.0 / (i + 1)}, step=i)
        run.flush()
    elif name == "batch":
        run_id = client.create_run("p").id
        n = args.n or 100_000
        pts = [{"key": "loss", "value": 1.0, "step": i, "timestamp": time.time()} for i in range(n)]
        for b in range(0, n, 5000):
            client.log_batch(run_id, metrics=pts[b : b + 5000])
    elif name == "short":
        for _ in range(args.n or 1000):
            with plinth.start_run("p", params={"lr": 0.1, "bs": 32}, client=client) as run:
                run.log({"loss": 0.5, "acc": 0.9})
    elif name == "create":
        for _ in range(args.n or 1000):
            client.create_run("p")
    elif name == "search":
        for i in range(args.n or 1000):
            run = client.create_run("p", params={"lr": 0.1 if i % 2 else 0.01})
            m = [{"key": "acc", "value": i / 1000, "step": 0, "timestamp": time.time()}]
            client.log_batch(run.id, metrics=m)
        t0 = time.perf_counter()
        for _ in range(20):
            client.search_runs(
                "p", filter="metrics.acc > 0.5 and params.lr = 0.1", order_by="metrics.acc desc"
            )
    elif name in ("put", "get"):
        src = scratch / "big.bin"
        make_file(src, args.artifact_mb << 20, f"profile-{time.time()}", os.urandom(64 << 20))
        run_id = client.create_run("p").id
        if name == "get":
            client.log_artifact(run_id, src, "big.bin", progress=False)
            t0 = time.perf_counter()
            client.download_artifact(run_id, "big.bin", scratch / "dl", progress=False)
        else:
            t0 = time.perf_counter()
            client.log_artifact(run_id, src, "big.bin", progress=False)
    else:
        raise SystemExit(f"unknown workload {name}")
    print(f"{name}: {time.perf_counter() - t0:.2f} s (under the profiler)", file=sys.stderr)
    client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("workload", choices=["log", "batch", "short", "create", "search", "put", "get"])
    ap.add_argument("--n", type=int, help="points or runs (default: the benchmark's size)")
    ap.add_argument("--artifact-mb", type=int, default=1024)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, help="also dump the merged stats (pstats) here")
    args = ap.parse_args()
    for key in [k for k in os.environ if k.startswith("PLINTH_")]:
        del os.environ[key]
    WORK_ROOT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=WORK_ROOT))
    try:
        import plinth  # noqa: F401  (imports are not what we measure)

        threading.setprofile(_start_in_thread)
        main_prof = cProfile.Profile()
        _profiles.append(main_prof)
        main_prof.enable()
        workload(args.workload, work / "home", work, args)
        main_prof.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats = pstats.Stats(_profiles[0])
    for prof in _profiles[1:]:
        stats.add(prof)
    if args.out:
        stats.dump_stats(str(args.out))
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        stats.stream = buf  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(args.top)
        print(f"==== by {key} (threads profiled: {', '.join(_threads)}) ====")
        print("\n".join(line for line in buf.getvalue().splitlines() if line.strip()))


if __name__ == "__main__":
    main()
