"""What the executor contract suite needs from each executor, and the small helpers
its tests share: launching a Python one-liner, waiting on a condition with a deadline.

An executor joins the suite by adding a ``Harness`` to ``HARNESSES``: the local
executor, and Ray against a real two-node cluster (``tests/compute/ray_cluster.py``;
its executors run in a driver process inside the cluster's network namespace).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import psutil

from plinth.compute.executors import Executor, Handle, Launch, Status

T = TypeVar("T")
DEADLINE = 15.0  # generous: the shared test machines are slow; passing tests take ms
_ids = itertools.count()


@dataclass(frozen=True)
class Harness:
    name: str
    make: Callable[[], Executor]  # a fresh instance: the same one a restarted server builds
    node: str
    # Handle of the same worker claiming another identity, as a reused pid (or a
    # recreated pod, task) would look: polling it must say lost, stopping it do nothing.
    impostor: Callable[[Handle], Handle]
    # kill -9 of everything the worker is made of (its process group, its pod …).
    kill_all: Callable[[int], None]
    pins_cpus: bool = True  # honours Launch.cpu_ids


def _local_impostor(handle: Handle) -> Handle:
    low = handle.data["start"][0]
    return replace(handle, data={**handle.data, "start": [low - 200, low - 100]})


def _kill_group(job_pid: int) -> None:
    os.killpg(os.getpgid(job_pid), signal.SIGKILL)


def _local() -> Executor:
    from plinth.compute.executors.local import LocalExecutor

    return LocalExecutor(watch_interval=0.05)


def _ray() -> Executor:
    from tests.compute.ray_cluster import shared

    return shared().driver.executor()  # type: ignore[return-value]


def _ray_impostor(handle: Handle) -> Handle:
    """Another worker under the same name, as a relaunched one would be."""
    other = "0" * len(handle.data["token"])
    return replace(handle, data={**handle.data, "token": other})


def _kill_actor_and_group(job_pid: int) -> None:
    """kill -9 of the task's Ray worker process (the job's parent) first, so it
    reports nothing, then of the job's process group."""
    parent = psutil.Process(job_pid).parent()
    assert parent is not None and parent.name().startswith("ray::"), parent
    parent.kill()
    parent.wait(timeout=DEADLINE)
    os.killpg(os.getpgid(job_pid), signal.SIGKILL)


HARNESSES = {
    "local": Harness("local", _local, "local", _local_impostor, _kill_group),
    "ray": Harness("ray", _ray, "ray", _ray_impostor, _kill_actor_and_group, pins_cpus=False),
}


def python(code: str, *args: str) -> tuple[str, ...]:
    """argv of a Python one-liner: the interpreter running the tests, no shell."""
    return (sys.executable, "-c", code, *args)


def spec(
    tmp_path: Path,
    argv: tuple[str, ...],
    *,
    node: str = "local",
    env: dict[str, str] | None = None,
    **fields: object,
) -> Launch:
    """A Launch with its own log under ``tmp_path``; LANG is set so that Python adds
    nothing (no locale coercion) to the environment a test compares."""
    n = next(_ids)
    values: dict[str, object] = {
        "job_id": f"job{n}",
        "attempt": 1,
        "rank": 0,
        "argv": argv,
        "env": {"LANG": "C.UTF-8"} if env is None else env,
        "cwd": tmp_path,
        "log_path": tmp_path / "logs" / f"job{n}" / "rank-0.log",
        "node": node,
        **fields,
    }
    return Launch(**values)  # type: ignore[arg-type]


def wait_for(check: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """The first truthy answer of ``check``, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def ended(executor: Executor, handle: Handle, timeout: float = DEADLINE) -> Status:
    """The worker's final status, polling until it is no longer running."""

    def check() -> Status | None:
        status = executor.poll(handle)
        return None if status.state == "running" else status

    return wait_for(check, f"worker {handle.ident} to end", timeout)


def log_text(launch: Launch) -> str:
    try:
        return launch.log_path.read_text()
    except FileNotFoundError:
        return ""


def logged(launch: Launch, text: str, timeout: float = DEADLINE) -> str:
    """The log once it contains ``text``."""

    def check() -> str | None:
        now = log_text(launch)
        return now if text in now else None

    return wait_for(check, f"{text!r} in the log", timeout)


def waits_for(path: Path, then: str = "") -> str:
    """Python code that waits until ``path`` exists, then runs ``then``: a job the
    test lets finish when it chooses."""
    return f"import os, time\nwhile not os.path.exists({str(path)!r}): time.sleep(0.01)\n{then}"


def pid_from_log(launch: Launch) -> int:
    """The job's own pid, which the test jobs print as ``pid=N``."""
    text = logged(launch, "pid=")
    return int(text.split("pid=")[1].split()[0])


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie left (it runs no more)."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True
