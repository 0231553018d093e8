"""Data benchmark: pushing and pulling dataset versions, Plinth side by side with DVC
(``dvc add`` + ``dvc push`` to a local-directory remote) and ``cp`` (the floor), on the
same files, in one script.

    .venv/bin/python benchmarks/data.py                  # everything (`make bench-data`)
    .venv/bin/python benchmarks/data.py --quick          # 100 files, 64 MiB: a smoke run
    .venv/bin/python benchmarks/data.py --skip dvc       # no DVC (no virtualenv)
    .venv/bin/python benchmarks/data.py --big-mib 512 --repeats 5 --json out.json

Four cases, each wall time:

1. push ``--files`` random files of ``--file-kib`` KiB (one folder, 1,000 x 10 KiB);
2. push one random file of ``--big-mib`` MiB (1 GiB), also as MiB/s;
3. after case 1's push, change one file of the folder and push again (the second push
   only);
4. pull case 1's version into an empty folder;
5. profile a Parquet file of ``--profile-rows`` rows x 20 columns (1M; 10 float, 5
   integer, 5 text columns of 50 categories) as a push does, in one streaming pass
   (``plinth.data.tabular.read_table``); the reference beside it is pandas reading the
   file whole and ``describe(include="all")``, which needs the table in memory.

How each kind does them:

- ``plinth``: ``Client.push_dataset`` / ``pull_dataset`` in this process, on a fresh
  embedded home (SQLite and local files) for each repeat; the client is made, and one
  call sent, before the clock starts;
- ``dvc``: the ``dvc`` command from DVC's own virtualenv (``benchmarks/.venv-dvc``, made
  on first use), in a fresh ``dvc init --no-scm`` repository with a fresh local-directory
  remote for each repeat: a push is ``dvc add`` then ``dvc push``, timed together as a
  user runs them; the pull is ``dvc pull`` in a fresh clone of the repository (its
  ``.dvc/config`` and case 1's ``.dvc`` file, no data, no cache);
- ``cp``: ``cp -r`` of the folder (or the file) to a fresh destination; the re-push
  copies just the changed file, the pull copies the folder back.

Every kind pushes its own fresh copy of the same files (made, and written out with
``sync``, before the clock starts). The kinds alternate within each repeat, in an order
that turns each repeat; each figure is the median of ``--repeats`` (the machines are
noisy). Work files go under ``benchmarks/.work/`` and are deleted as the script goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
WORK_ROOT = HERE / ".work"
DVC_VENV = HERE / ".venv-dvc"
DVC_SPEC = "dvc==3.*"
KINDS = ("plinth", "dvc", "cp")
PROJECT = "bench-data"
# The issue's figures for DVC 3.67 on this kind of machine, and its goals for Plinth:
# (seconds at most, or MiB/s at least; and times faster than DVC at least).
ISSUE_DVC = {"push_files": "4.4 s", "push_big": "13.8 s (74 MiB/s)", "repush": "3.3 s"}
GOALS: dict[str, tuple[float, float]] = {
    "push_files": (0.5, 8.0),
    "push_big": (250.0, 3.4),
    "repush": (0.2, 16.0),
}
console = Console() if sys.stdout.isatty() else Console(width=140)


def step(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}")


# the files ---------------------------------------------------------------------------


def make_files(root: Path, count: int, size: int) -> Path:
    """``count`` random files of ``size`` bytes in ``root/data``."""
    data = root / "data"
    data.mkdir(parents=True)
    for i in range(count):
        (data / f"f{i:05}.bin").write_bytes(os.urandom(size))
    return data


def make_big(path: Path, size: int) -> Path:
    chunk = 16 << 20
    with path.open("wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n
    return path


def fresh_copy(src: Path, dst: Path) -> Path:
    """A real copy (no links) of a file or folder, written out before any clock starts."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    os.sync()
    return dst


def change_one(data: Path, name: str, content: bytes) -> None:
    """Replace one file's content as an editor would: a new file renamed into place."""
    target = data / name
    tmp = target.with_name(target.name + ".new")
    tmp.write_bytes(content)
    os.replace(tmp, target)


def check_same(got: Path, want: Path) -> None:
    """The pulled folder holds exactly the pushed files."""
    names = sorted(p.name for p in got.iterdir())
    if names != sorted(p.name for p in want.iterdir()):
        raise AssertionError(f"{got} does not hold the files of {want}")
    for name in names:
        if (got / name).read_bytes() != (want / name).read_bytes():
            raise AssertionError(f"{got / name} differs from what was pushed")


def clock(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# Plinth ------------------------------------------------------------------------------


def plinth_client(home: Path) -> Any:
    """An embedded client on a fresh home, started and warm (its app built)."""
    import plinth

    client = plinth.Client(home=str(home))
    client.list_projects()
    return client


def plinth_files(work: Path, src: Path, changed: tuple[str, bytes]) -> dict[str, float]:
    data = fresh_copy(src, work / "data")
    client = plinth_client(work / "home")
    try:
        found: dict[str, Any] = {}

        def push() -> None:
            found["v"] = client.push_dataset(PROJECT, "files", data, progress=False)

        took = {"push_files": clock(push)}
        if (found["v"].version, found["v"].created) != (1, True):
            raise AssertionError(f"the first push made {found['v']}")
        dest = work / "pulled"
        dest.mkdir()
        os.sync()
        took["pull"] = clock(lambda: client.pull_dataset(PROJECT, "files@1", dest, progress=False))
        check_same(dest / "data", src)
        change_one(data, *changed)
        os.sync()
        took["repush"] = clock(push)
        if (found["v"].version, found["v"].created) != (2, True):
            raise AssertionError(f"the push of one changed file made {found['v']}")
    finally:
        client.close()
    return took


def plinth_big(work: Path, src: Path) -> float:
    big = fresh_copy(src, work / src.name)
    client = plinth_client(work / "home")
    try:
        return clock(lambda: client.push_dataset(PROJECT, "big", big, progress=False))
    finally:
        client.close()


def plinth_warm(work: Path, src: Path) -> None:
    """One small push and pull in a throwaway home, so that the lazy imports of the
    datasets' code are not charged to the first repeat alone."""
    client = plinth_client(work / "home")
    try:
        client.push_dataset(PROJECT, "warm", src, progress=False)
        client.pull_dataset(PROJECT, "warm", work / "pulled", progress=False)
    finally:
        client.close()
    shutil.rmtree(work)


# DVC ---------------------------------------------------------------------------------


def dvc_bin(log: Path) -> Path:
    """DVC's command in its own virtualenv, created and filled on first use."""
    python = DVC_VENV / "bin" / "python"
    marker = DVC_VENV / ".plinth-bench-ready"
    if not marker.exists():
        step(f"installing {DVC_SPEC} into {DVC_VENV} (first use)")
        with log.open("ab") as out:
            if not python.exists():
                subprocess.run(
                    [sys.executable, "-m", "venv", str(DVC_VENV)], check=True, stdout=out
                )
            pip = [str(python), "-m", "pip", "install", "-q", DVC_SPEC]
            subprocess.run(pip, check=True, stdout=out, stderr=out)
        marker.touch()
    return DVC_VENV / "bin" / "dvc"


class Dvc:
    """``dvc`` commands with DVC's analytics, update checks and user-wide configuration
    off, and its site cache (state, indexes) inside the work folder."""

    def __init__(self, dvc: Path, work: Path) -> None:
        self.dvc = str(dvc)
        self.log = work / "dvc.log"
        conf = work / "dvc-config"
        conf.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "DVC_"))}
        self.env |= {
            "DVC_NO_ANALYTICS": "1",
            "DVC_GLOBAL_CONFIG_DIR": str(conf),
            "DVC_SYSTEM_CONFIG_DIR": str(conf),
            "DVC_SITE_CACHE_DIR": str(work / "dvc-site"),
        }

    def __call__(self, cwd: Path, *args: str) -> None:
        with self.log.open("ab") as out:
            out.write(f"$ dvc {' '.join(args)}  # in {cwd}\n".encode())
            out.flush()
            done = subprocess.run(
                [self.dvc, *args], cwd=cwd, env=self.env, stdout=out, stderr=out, check=False
            )
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dvc {' '.join(args)} failed ({done.returncode}):\n{tail}")

    def repo(self, root: Path) -> Path:
        """A fresh repository with a fresh local-directory remote beside it."""
        repo, remote = root / "repo", root / "remote"
        repo.mkdir(parents=True)
        remote.mkdir()
        self(repo, "init", "--no-scm", "-q")
        self(repo, "config", "core.analytics", "false")
        self(repo, "config", "core.check_update", "false")
        self(repo, "remote", "add", "-d", "store", str(remote))
        return repo

    def push(self, repo: Path, target: str) -> None:
        self(repo, "add", "-q", target)
        self(repo, "push", "-q")


def dvc_files(dvc: Dvc, work: Path, src: Path, changed: tuple[str, bytes]) -> dict[str, float]:
    repo = dvc.repo(work)
    data = fresh_copy(src, repo / "data")
    took = {"push_files": clock(lambda: dvc.push(repo, "data"))}
    # A fresh clone: what git would hold (the config, case 1's .dvc file), no data.
    clone = work / "clone"
    (clone / ".dvc").mkdir(parents=True)
    shutil.copyfile(repo / ".dvc" / "config", clone / ".dvc" / "config")
    shutil.copyfile(repo / "data.dvc", clone / "data.dvc")
    os.sync()
    took["pull"] = clock(lambda: dvc(clone, "pull", "-q"))
    check_same(clone / "data", src)
    change_one(data, *changed)
    os.sync()
    took["repush"] = clock(lambda: dvc.push(repo, "data"))
    if (repo / "data.dvc").read_bytes() == (clone / "data.dvc").read_bytes():
        raise AssertionError("dvc add did not see the changed file")
    return took


def dvc_big(dvc: Dvc, work: Path, src: Path) -> float:
    repo = dvc.repo(work)
    fresh_copy(src, repo / src.name)
    return clock(lambda: dvc.push(repo, src.name))


# cp, the floor -----------------------------------------------------------------------


def cp(*args: str | Path) -> None:
    subprocess.run(["cp", *map(str, args)], check=True)


def cp_files(work: Path, src: Path, changed: tuple[str, bytes]) -> dict[str, float]:
    data = fresh_copy(src, work / "data")
    remote = work / "remote"
    remote.mkdir()
    took = {"push_files": clock(lambda: cp("-r", data, remote))}
    dest = work / "pulled"
    dest.mkdir()
    os.sync()
    took["pull"] = clock(lambda: cp("-r", remote / "data", dest))
    check_same(dest / "data", src)
    change_one(data, *changed)
    os.sync()
    took["repush"] = clock(lambda: cp(data / changed[0], remote / "data" / changed[0]))
    return took


def cp_big(work: Path, src: Path) -> float:
    big = fresh_copy(src, work / src.name)
    remote = work / "remote"
    remote.mkdir()
    return clock(lambda: cp(big, remote))


# the report --------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if value < 1 else f"{value:.2f} s"


def ratio_text(ratio: float) -> str:
    """A ratio, with two decimals below 10 (3.36x is not 3.4x against a 3.4x goal)."""
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def report(figures: dict[str, Any], args: argparse.Namespace) -> int:
    times = figures["times"]
    med = {case: {k: median(times[case][k]) for k in KINDS} for case in times}
    mib = args.big_mib
    issue_size = args.files == 1_000 and args.file_kib == 10
    cases = [
        ("push_files", f"push {args.files:,} x {args.file_kib} KiB"),
        ("push_big", f"push 1 x {mib:,} MiB"),
        ("repush", f"re-push, 1 of {args.files:,} changed"),
        ("pull", f"pull {args.files:,} x {args.file_kib} KiB"),
    ]
    table = Table(title="Plinth datasets: push and pull, wall time (median)")
    for column in ("case", "Plinth", "DVC", "cp", "Plinth vs DVC", "Plinth ÷ cp"):
        table.add_column(column, justify="left" if column == "case" else "right")
    table.add_column("goal")
    table.add_column("met")
    missed = 0
    for case, label in cases:
        mine, dvc, floor = (med[case][k] for k in KINDS)

        def cell(value: float | None, big: bool = case == "push_big") -> str:
            if value is None or not big:
                return seconds(value)
            return f"{seconds(value)}\n{mib / value:,.0f} MiB/s"

        vs_dvc = f"{ratio_text(dvc / mine)} faster" if mine and dvc else "-"
        vs_cp = ratio_text(mine / floor) if mine and floor else "-"
        goal, met = "-", ""
        if case in GOALS and mine is not None:
            limit, ratio = GOALS[case]
            if case == "push_big":
                goal = f"≥ {limit:g} MiB/s, ≥ {ratio:g}x DVC"
                ok_abs: bool | None = mib / mine >= limit
            else:
                goal = f"≤ {limit:g} s, ≥ {ratio:g}x DVC"
                ok_abs = mine <= limit if issue_size else None
            ok_ratio = dvc / mine >= ratio if dvc and (issue_size or case == "push_big") else None
            parts = [
                f"{what} {'yes' if ok else 'NO'}"
                for what, ok in (("abs", ok_abs), ("vs DVC", ok_ratio))
                if ok is not None
            ]
            met = ", ".join(parts) if parts else "n/a (not the issue's size)"
            missed += ok_abs is False or ok_ratio is False
        table.add_row(label, cell(mine), cell(dvc), cell(floor), vs_dvc, vs_cp, goal, met)
    console.print(table)
    load = os.getloadavg()
    console.print(
        f"Python {platform.python_version()}, {os.cpu_count()} cores, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{figures.get('dvc_version') or 'no DVC'}; "
        f"medians of {args.repeats}. The issue's DVC 3.67 figures: 1,000 files "
        f"{ISSUE_DVC['push_files']}, 1 GiB {ISSUE_DVC['push_big']}, re-push "
        f"{ISSUE_DVC['repush']}. Plinth runs in this process (embedded), DVC as its command, "
        "cp as `cp` (no fsync)."
    )
    if "profile" in figures:
        mine, pandas = (median(figures["profile"][k]) for k in ("plinth", "pandas"))
        assert mine is not None and pandas is not None
        met = mine <= PROFILE_GOAL_S or args.profile_rows != 1_000_000
        missed += not met
        console.print(
            f"profile {args.profile_rows:,} rows x 20 columns of Parquet (median): Plinth "
            f"{mine:.2f} s in one streaming pass, pandas read + describe {pandas:.2f} s "
            f"(Plinth's time ÷ pandas' {ratio_text(mine / pandas)}; pandas holds the whole "
            f"table in memory, Plinth a batch); goal ≤ {PROFILE_GOAL_S:g} s: "
            + ("met" if mine <= PROFILE_GOAL_S else "NO")
        )
    if args.json:
        args.json.write_text(json.dumps({**figures, "medians": med}, indent=2))
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000, help="files in the folder")
    parser.add_argument("--file-kib", type=int, default=10, help="size of each, KiB")
    parser.add_argument("--big-mib", type=int, default=1024, help="the big file, MiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma list: plinth, dvc, cp")
    parser.add_argument("--quick", action="store_true", help="100 files, 64 MiB")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile-rows", type=int, default=1_000_000, help="0: skip case 5")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.big_mib, args.profile_rows = 100, 64, 100_000
    skip = set(filter(None, args.skip.split(",")))
    kinds = [k for k in KINDS if k not in skip]
    for name in ("PLINTH_URL", "PLINTH_TOKEN", "PLINTH_HOME"):
        os.environ.pop(name, None)  # Plinth runs embedded, on the homes made here
    WORK_ROOT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="data-", dir=WORK_ROOT))
    figures: dict[str, Any] = {
        "files": args.files,
        "file_kib": args.file_kib,
        "big_mib": args.big_mib,
        "repeats": args.repeats,
        "times": {c: {k: [] for k in KINDS} for c in ("push_files", "push_big", "repush", "pull")},
    }
    times = figures["times"]
    try:
        dvc = None
        if "dvc" in kinds:
            dvc = Dvc(dvc_bin(work / "install.log"), work)
            version = subprocess.run(
                [dvc.dvc, "--version"], capture_output=True, text=True, env=dvc.env, check=True
            )
            figures["dvc_version"] = f"DVC {version.stdout.strip()}"
        step(f"making {args.files:,} files of {args.file_kib} KiB and one of {args.big_mib:,} MiB")
        src = make_files(work / "src", args.files, args.file_kib << 10)
        big = make_big(work / "src" / "big.bin", args.big_mib << 20)
        changed = (f"f{args.files // 2:05}.bin", os.urandom(args.file_kib << 10))
        if "plinth" in kinds:
            plinth_warm(work / "warm", src)
        for r in range(args.repeats):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            for kind in order:
                where = work / f"r{r}-{kind}-files"
                if kind == "plinth":
                    took = plinth_files(where, src, changed)
                elif kind == "dvc":
                    assert dvc is not None
                    took = dvc_files(dvc, where, src, changed)
                else:
                    took = cp_files(where, src, changed)
                shutil.rmtree(where)
                for case, value in took.items():
                    times[case][kind].append(value)
                step(
                    f"repeat {r + 1}/{args.repeats} {kind}: push {took['push_files']:.3f} s, "
                    f"pull {took['pull']:.3f} s, re-push {took['repush']:.3f} s"
                )
            for kind in order:
                where = work / f"r{r}-{kind}-big"
                if kind == "plinth":
                    value = plinth_big(where, big)
                elif kind == "dvc":
                    assert dvc is not None
                    value = dvc_big(dvc, where, big)
                else:
                    value = cp_big(where, big)
                shutil.rmtree(where)
                times["push_big"][kind].append(value)
                step(
                    f"repeat {r + 1}/{args.repeats} {kind}: {args.big_mib:,} MiB in "
                    f"{value:.2f} s ({args.big_mib / value:,.0f} MiB/s)"
                )
        if args.profile_rows and "plinth" in kinds:
            figures["profile"] = profile_case(work / "profile", args.profile_rows, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(figures, args)


PROFILE_GOAL_S = 2.0  # the issue's, for 1M rows x 20 columns


def profile_case(work: Path, rows: int, repeats: int) -> dict[str, list[float]]:
    """Case 5: Plinth's one-pass profile of a Parquet file, and pandas' describe."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from plinth.data.tabular import read_table

    work.mkdir(parents=True)
    rng = np.random.default_rng(7)
    columns: dict[str, Any] = {}
    for i in range(10):
        columns[f"f{i}"] = rng.normal(i, 1 + i, rows)
    for i in range(5):
        columns[f"i{i}"] = rng.integers(0, 10 ** (i + 2), rows)
    labels = np.array([f"category-{k:02}" for k in range(50)])
    for i in range(5):
        columns[f"s{i}"] = labels[rng.integers(0, 50, rows)]
    path = work / "table.parquet"
    pq.write_table(pa.table(columns), path)
    step(f"profiling {rows:,} rows x 20 columns ({path.stat().st_size / 2**20:,.0f} MiB)")
    took: dict[str, list[float]] = {"plinth": [], "pandas": []}
    for r in range(repeats):
        took["plinth"].append(clock(lambda: read_table(str(path), partial(path.open, "rb"))))
        took["pandas"].append(clock(lambda: _describe(path)))
        step(
            f"repeat {r + 1}/{repeats}: Plinth {took['plinth'][-1]:.2f} s, "
            f"pandas {took['pandas'][-1]:.2f} s"
        )
    return took


def _describe(path: Path) -> None:
    import pandas as pd

    pd.read_parquet(path).describe(include="all")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
