"""What only the local executor does, beyond the contract: surviving the kill -9 of the
server that started a worker, the wrapper it runs workers under, the records it keeps
beside the log, and its errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.compute.executors import Handle
from plinth.compute.executors.local import LocalExecutor
from plinth.errors import InvalidInput
from tests.compute.contract.harness import (
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
SLEEPER = "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
SLEEPER += "print(f'pid={os.getpid()}', flush=True); time.sleep(60)"

SERVER = """
import json, sys
from dataclasses import asdict
from pathlib import Path
from plinth.compute.executors import Launch
from plinth.compute.executors.local import LocalExecutor
log_path, argv = Path(sys.argv[1]), tuple(sys.argv[2:])
launch = Launch("j", 1, 0, argv, {}, log_path.parent, log_path, "local")
print(json.dumps(asdict(LocalExecutor().launch(launch))), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    made = LocalExecutor(watch_interval=0.05)
    yield made
    made.close()


def test_a_worker_outlives_a_killed_server_and_a_new_one_reads_its_exit_code(
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    job = python(waits_for(go, "raise SystemExit(5)"))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tmp_path / "w.log"), *job],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert server.stdout is not None
    handle = Handle(**json.loads(server.stdout.readline()))
    server.kill()  # kill -9 of the server, mid-job
    server.wait()
    server.stdout.close()
    assert server.stdin is not None
    server.stdin.close()
    restarted = LocalExecutor()
    try:
        assert restarted.poll(handle).state == "running"
        go.touch()
        status = ended(restarted, handle)
        assert (status.state, status.exit_code) == ("exited", 5)
    finally:
        restarted.close()


def test_killing_the_wrapper_alone_is_lost_and_the_orphaned_job_is_killed(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    launch = spec(tmp_path, python(SLEEPER))
    handle = executor.launch(launch)
    job = pid_from_log(launch)
    os.kill(int(handle.ident), signal.SIGKILL)
    status = ended(executor, handle)
    assert status.state == "lost" and status.reason and "without an exit record" in status.reason
    wait_for(lambda: process_gone(job), "the orphaned job to be killed")


def test_what_is_left_in_the_group_after_an_exit_is_killed(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(f'pid={child.pid}', flush=True)\n"
    )
    launch = spec(tmp_path, python(code))
    handle = executor.launch(launch)
    left_behind = pid_from_log(launch)
    assert ended(executor, handle).exit_code == 0
    wait_for(lambda: process_gone(left_behind), "the background child to be killed")


def test_memory_held_by_a_child_that_left_the_group_counts(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    """A child in a session of its own (``setsid``) is still the worker's: its memory
    counts toward the limit, and the kill takes it too."""
    code = (
        "import os, time\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    os.setsid()\n"
        "    print(f'pid={os.getpid()}', flush=True)\n"
        "    hog = b'x' * (300 << 20)\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "os.waitpid(child, 0)\n"
    )
    launch = spec(tmp_path, python(code), memory_bytes=100 * MiB)
    handle = executor.launch(launch)
    escaped = pid_from_log(launch)
    status = ended(executor, handle)
    assert status.exit_code == 137
    assert status.reason is not None and status.reason.startswith("memory limit exceeded (")
    wait_for(lambda: process_gone(escaped), "the child that left the group to be killed")


def test_kills_say_why(executor: LocalExecutor, tmp_path: Path) -> None:
    hog = "import time; hog = b'x' * (300 << 20); time.sleep(60)"
    over = executor.launch(spec(tmp_path, python(hog), memory_bytes=100 * MiB))
    status = ended(executor, over)
    assert status.exit_code == 137
    assert status.reason is not None
    assert (
        status.reason.startswith("memory limit exceeded (") and "over 100.0 MiB)" in status.reason
    )

    launch = spec(tmp_path, python(SLEEPER))
    stubborn = executor.launch(launch)
    logged(launch, "pid=")
    executor.stop(stubborn, 0.2)
    status = ended(executor, stubborn)
    assert status.exit_code == 137
    assert status.reason == "killed: still running when the stop's grace period ended"


def test_a_new_executor_finishes_a_stop_whose_server_died_during_the_grace(
    tmp_path: Path,
) -> None:
    first = LocalExecutor()
    launch = spec(tmp_path, python(SLEEPER))
    handle = first.launch(launch)
    logged(launch, "pid=")
    first.stop(handle, grace_seconds=0.3)
    first.close()  # its watcher will never send the SIGKILL
    began = time.monotonic()
    second = LocalExecutor()
    try:
        status = ended(second, handle)
        assert time.monotonic() - began >= 0.2
        assert (status.exit_code, status.reason) == (
            137,
            "killed: still running when the stop's grace period ended",
        )
    finally:
        second.close()


def test_a_missing_program_exits_127_and_a_missing_cwd_is_refused(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    launch = spec(tmp_path, ("/no/such/program", "--flag"))
    status = ended(executor, executor.launch(launch))
    assert status.exit_code == 127
    said = log_text(launch)
    assert "/no/such/program" in said and said.startswith("plinth-job: ")
    assert str(launch.log_path.parent) not in said  # no path of the server's in it
    with pytest.raises(FileNotFoundError):
        executor.launch(spec(tmp_path, python("pass"), cwd=tmp_path / "absent"))


@pytest.mark.parametrize("name", ["A-B", "1X", "", "IFS", "PPID", "OPTIND", "PLINTH_EXIT_RECORD"])
def test_environment_names_a_shell_would_not_pass_on_are_refused(
    executor: LocalExecutor, tmp_path: Path, name: str
) -> None:
    with pytest.raises(InvalidInput, match="environment variable"):
        executor.launch(spec(tmp_path, python("pass"), env={name: "1"}))


def test_a_relaunch_on_the_same_log_does_not_read_the_old_records(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    first = spec(tmp_path, python("raise SystemExit(4)"))
    assert ended(executor, executor.launch(first)).exit_code == 4
    go = tmp_path / "go"
    code = waits_for(go)
    again = spec(tmp_path, python(code), log_path=first.log_path)
    handle = executor.launch(again)
    assert executor.poll(handle).state == "running"
    go.touch()
    assert ended(executor, handle).exit_code == 0


def test_the_handle_is_plain_json_with_what_poll_needs(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    launch = spec(tmp_path, python("pass"), memory_bytes=64 * MiB)
    handle = executor.launch(launch)
    assert json.loads(json.dumps(handle.data)) == handle.data
    assert handle.executor == "local" and handle.ident == str(handle.data["pid"])
    assert handle.data["exit"] == str(launch.log_path) + ".exit"
    assert handle.data["memory_bytes"] == 64 * MiB
    ended(executor, handle)
