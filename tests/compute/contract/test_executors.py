"""One contract suite every executor passes (local now; Ray and Kubernetes join by
adding a ``Harness``): what a worker is given (argv, environment, GPUs, CPUs, cwd),
what comes back (logs, exit codes, 128+N for a signal), how stop and limits end it, and
that a fresh executor — a restarted server — still knows a worker it did not start.

Agreed outcomes: a worker whose own process is killed with SIGKILL has *exited* with
137; a worker killed whole (every process it had, as a lost machine would) is *lost*.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from plinth.compute.executors import Executor, Handle, Launch
from tests.compute.contract.harness import (
    HARNESSES,
    Harness,
    ended,
    log_text,
    logged,
    pid_from_log,
    process_gone,
    python,
    spec,
    wait_for,
    waits_for,
)

MiB = 1 << 20
PRINT_PID = "import os; print(f'pid={os.getpid()}', flush=True); "
TERM_HANDLER = (
    "import signal, sys, time\n"
    "def bye(*_):\n"
    "    print('terminating', flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Harness:
    return HARNESSES[request.param]


@pytest.fixture
def executor(harness: Harness) -> Iterator[Executor]:
    made = harness.make()
    yield made
    made.close()


@pytest.fixture
def workers(executor: Executor) -> Iterator[list[Handle]]:
    """Handles a test started: any still running at the end are killed."""
    started: list[Handle] = []
    yield started
    for handle in started:
        executor.stop(handle, 0)


def start(
    executor: Executor, workers: list[Handle], tmp_path: Path, argv: tuple[str, ...], **kw: Any
) -> tuple[Handle, Launch]:
    launch = spec(tmp_path, argv, **kw)
    handle = executor.launch(launch)
    workers.append(handle)
    return handle, launch


# -- what a worker is given ----------------------------------------------------------


def test_argv_is_passed_literally_never_through_a_shell(
    executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    tricky = ["a b", "'single'", '"double"', "$HOME", "; echo pwned", "*", "`id`", ""]
    code = "import json, sys; print(json.dumps(sys.argv[1:]))"
    handle, launch = start(executor, workers, tmp_path, python(code, *tricky))
    assert ended(executor, handle).exit_code == 0
    assert json.loads(log_text(launch)) == tricky


@pytest.mark.parametrize(("gpu_ids", "visible"), [((), ""), ((0, 2), "0,2")])
def test_environment_is_exactly_the_given_one_plus_visible_gpus(
    executor: Executor,
    workers: list[Handle],
    tmp_path: Path,
    gpu_ids: tuple[int, ...],
    visible: str,
) -> None:
    env = {"LANG": "C.UTF-8", "PLINTH_RUN_ID": "r1", "SECRET": "a b'c", "CUDA_VISIBLE_DEVICES": "7"}
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    handle, launch = start(executor, workers, tmp_path, python(code), env=env, gpu_ids=gpu_ids)
    assert ended(executor, handle).exit_code == 0
    # The job never sees GPUs it was not given, whatever its environment said.
    assert json.loads(log_text(launch)) == {**env, "CUDA_VISIBLE_DEVICES": visible}


def test_cwd_is_honoured(executor: Executor, workers: list[Handle], tmp_path: Path) -> None:
    cwd = tmp_path / "snapshot dir"
    cwd.mkdir()
    (cwd / "data.txt").write_text("from the snapshot")
    code = "import os; print(os.getcwd()); print(open('data.txt').read())"
    handle, launch = start(executor, workers, tmp_path, python(code), cwd=cwd)
    assert ended(executor, handle).exit_code == 0
    assert log_text(launch).split("\n")[:2] == [str(cwd.resolve()), "from the snapshot"]


def test_cpu_affinity_is_set_where_the_os_allows(
    harness: Harness, executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    if not hasattr(os, "sched_getaffinity"):
        assert not sys.platform.startswith("linux")
        pytest.skip("this OS has no CPU affinity")
    allowed = sorted(os.sched_getaffinity(0))
    code = "import os; print(sorted(os.sched_getaffinity(0)))"
    pinned, pinned_launch = start(executor, workers, tmp_path, python(code), cpu_ids=(allowed[-1],))
    free, free_launch = start(executor, workers, tmp_path, python(code))
    assert ended(executor, pinned).exit_code == 0
    assert ended(executor, free).exit_code == 0
    if not harness.pins_cpus:  # declared: CPU ids are accounting only, and never refused
        assert json.loads(log_text(pinned_launch)) == json.loads(log_text(free_launch)) != []
        return
    assert json.loads(log_text(pinned_launch)) == [allowed[-1]]
    assert json.loads(log_text(free_launch)) == allowed
    assert sorted(os.sched_getaffinity(0)) == allowed  # the caller's own is untouched


# -- what comes back -----------------------------------------------------------------


def test_logs_are_appended_and_readable_while_it_runs(
    executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    code = "print('first', flush=True)\n" + waits_for(
        go, "import sys; print('second', file=sys.stderr, flush=True)"
    )
    launch = spec(tmp_path, python(code))
    launch.log_path.parent.mkdir(parents=True)
    launch.log_path.write_text("earlier attempt\n")
    handle = executor.launch(launch)
    workers.append(handle)
    logged(launch, "first")
    assert executor.poll(handle).state == "running"
    go.touch()
    assert ended(executor, handle).exit_code == 0
    assert log_text(launch) == "earlier attempt\nfirst\nsecond\n"


@pytest.mark.parametrize("code", [0, 3])
def test_exit_codes_are_reported(
    executor: Executor, workers: list[Handle], tmp_path: Path, code: int
) -> None:
    handle, _ = start(executor, workers, tmp_path, python(f"raise SystemExit({code})"))
    assert ended(executor, handle) == ended(executor, handle)  # stable once ended
    status = ended(executor, handle)
    assert (status.state, status.exit_code) == ("exited", code)


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGKILL])
def test_a_signal_death_is_128_plus_the_signal(
    executor: Executor, workers: list[Handle], tmp_path: Path, signum: int
) -> None:
    code = f"import os; os.kill(os.getpid(), {int(signum)})"
    handle, _ = start(executor, workers, tmp_path, python(code))
    status = ended(executor, handle)
    assert (status.state, status.exit_code) == ("exited", 128 + signum)


# -- stopping ------------------------------------------------------------------------


def test_stop_lets_a_sigterm_handler_finish(
    executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    handle, launch = start(executor, workers, tmp_path, python(TERM_HANDLER))
    logged(launch, "ready")
    began = time.monotonic()
    executor.stop(handle, grace_seconds=30)
    status = ended(executor, handle, timeout=25)  # room for a loaded machine
    assert (status.state, status.exit_code) == ("exited", 0)  # its handler's, not SIGKILL's
    assert time.monotonic() - began < 25  # ended by its handler, not by the grace's end (30 s)
    assert "terminating" in log_text(launch)
    executor.stop(handle, grace_seconds=30)  # idempotent, and quiet on an ended worker
    assert executor.poll(handle) == status


def test_stop_kills_a_worker_that_ignores_sigterm_after_the_grace(
    executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    handle, launch = start(executor, workers, tmp_path, python(IGNORES_TERM))
    logged(launch, "ready")
    began = time.monotonic()
    executor.stop(handle, grace_seconds=0.5)
    assert time.monotonic() - began < 0.3  # stop does not wait for the grace
    assert executor.poll(handle).state == "running"  # SIGTERM ignored, still in grace
    executor.stop(handle, grace_seconds=0.5)  # a second stop changes nothing
    status = ended(executor, handle)
    assert time.monotonic() - began >= 0.5
    assert (status.state, status.exit_code) == ("exited", 137)


def test_stop_reaches_the_whole_process_group(
    executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(f'grandchild={child.pid}', flush=True)\n"
        "time.sleep(60)\n"
    )
    handle, launch = start(executor, workers, tmp_path, python(code))
    text = logged(launch, "grandchild=")
    grandchild = int(text.split("grandchild=")[1].split()[0])
    assert not process_gone(grandchild)
    executor.stop(handle, grace_seconds=5)
    assert ended(executor, handle).exit_code == 128 + signal.SIGTERM
    wait_for(lambda: process_gone(grandchild), "the grandchild to be stopped too")


# -- failures ------------------------------------------------------------------------


def test_kill_9_of_the_workers_own_process_is_exit_137(
    executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    handle, launch = start(
        executor, workers, tmp_path, python(PRINT_PID + "import time; time.sleep(60)")
    )
    os.kill(pid_from_log(launch), signal.SIGKILL)
    status = ended(executor, handle)
    assert (status.state, status.exit_code) == ("exited", 137)


def test_kill_9_of_everything_the_worker_is_made_of_is_lost(
    harness: Harness, executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    handle, launch = start(
        executor, workers, tmp_path, python(PRINT_PID + "import time; time.sleep(60)")
    )
    harness.kill_all(pid_from_log(launch))
    status = ended(executor, handle)
    assert status.state == "lost" and status.exit_code is None and status.reason


def test_a_new_executor_adopts_a_worker_and_learns_its_real_exit_code(
    harness: Harness, executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    code = waits_for(go, "raise SystemExit(7)")
    handle, _ = start(executor, workers, tmp_path, python(code))
    executor.close()  # the server that started it is gone
    stored = json.loads(json.dumps(asdict(handle)))  # the handle as the database keeps it
    adopter = harness.make()
    try:
        adopted = Handle(**stored)
        assert adopter.poll(adopted).state == "running"
        go.touch()
        status = ended(adopter, adopted)
        assert (status.state, status.exit_code) == ("exited", 7)
    finally:
        adopter.close()


def test_a_handle_whose_identity_does_not_match_is_lost_and_never_signalled(
    harness: Harness, executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    handle, launch = start(executor, workers, tmp_path, python(TERM_HANDLER))
    logged(launch, "ready")
    impostor = harness.impostor(handle)  # the pid, reused by another process
    assert executor.poll(impostor).state == "lost"
    executor.stop(impostor, grace_seconds=0)
    assert executor.poll(handle).state == "running"
    assert "terminating" not in log_text(launch)


def test_a_worker_over_its_memory_limit_is_stopped_with_the_reason(
    executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    code = "import time; hog = b'x' * (300 << 20); print('allocated', flush=True); time.sleep(60)"
    handle, _ = start(executor, workers, tmp_path, python(code), memory_bytes=100 * MiB)
    status = ended(executor, handle)
    assert status.state == "exited" and status.exit_code != 0
    assert status.reason is not None and status.reason.startswith("memory limit exceeded (")


def test_a_worker_within_its_memory_limit_runs_to_the_end(
    executor: Executor, workers: list[Handle], tmp_path: Path
) -> None:
    code = "hog = b'x' * (20 << 20)"
    handle, _ = start(executor, workers, tmp_path, python(code), memory_bytes=400 * MiB)
    status = ended(executor, handle)
    assert (status.state, status.exit_code, status.reason) == ("exited", 0, None)
