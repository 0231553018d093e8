"""A Ray pool whose nodes do not share the Plinth server's disk
(``shared_filesystem: false``): each worker fetches its job's snapshot from a real
``plinth server`` with the job's token into a directory of its own on its node, and
its log comes back to the server's log path while it runs and to its end afterwards.

The server runs inside the test cluster's network namespace (the only place its
workers can reach); the job and its snapshot are made through the same home first."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plinth.client import Client
from plinth.compute.executors import Launch
from plinth.compute.executors import _ray_launcher as remote
from plinth.compute.executors.ray import worker_name
from plinth.governance.identity import init_admin
from tests.compute.contract.conftest import RAY_MARKER
from tests.compute.contract.harness import ended, log_text, python, spec, wait_for, waits_for
from tests.compute.ray_cluster import HEAD_IP, RaySetup, RemoteExecutor, ray_setup_fixture
from tests.conftest import make_settings
from tests.processes import PLINTH, REPO, child_env

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]
assert RAY_MARKER  # registered by tests/compute/contract/conftest.py
PORT = 18765  # inside the cluster's namespace, where nothing else listens


@dataclass
class Served:
    url: str
    token: str
    snapshot: str  # PROJECT/DIGEST of a job's snapshot on that server


@pytest.fixture(scope="session")
def ray_setup() -> Iterator[RaySetup]:
    yield from ray_setup_fixture()


@pytest.fixture(scope="module")
def served(ray_setup: RaySetup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("unshared")
    home = root / "home"
    token = init_admin(make_settings(home), "root").token.token
    work = root / "work"
    (work / "pkg").mkdir(parents=True)
    (work / "data.txt").write_text("hello from the snapshot\n")
    (work / "pkg" / "x.py").write_text("X = 1\n")
    settings = make_settings(home).model_copy(update={"token": token})
    with Client(settings=settings) as client:
        job = client.submit_job("lab", [sys.executable, "-c", "pass"], workdir=work)
    assert job.snapshot is not None
    enter = ray_setup.cluster.enter()
    url = f"http://127.0.0.1:{PORT}"
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(
            [*enter, str(PLINTH), "server", "--host", "127.0.0.1", "--port", str(PORT)],
            env=child_env(PLINTH_HOME=str(home)),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)"

        def healthy() -> bool | None:
            assert server.poll() is None, (root / "server.log").read_text()[-3000:]
            done = subprocess.run(
                [*enter, sys.executable, "-c", probe, f"{url}/healthz"], capture_output=True
            )
            return done.returncode == 0 or None

        wait_for(healthy, "the plinth server in the cluster's namespace to answer")
        yield Served(url, token, f"lab/{job.snapshot.digest}")
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def executor(ray_setup: RaySetup) -> Iterator[RemoteExecutor]:
    made = ray_setup.driver.executor(shared_filesystem=False, log_interval=0.1)
    yield made
    made.close()


def own_dir(launch: Launch) -> Path:
    """The worker's private directory, where a worker on this node has it."""
    name = worker_name(launch.job_id, launch.attempt, launch.rank)
    return Path(remote._own_path(name))


def unshared(
    tmp_path: Path, served: Served, code: str, env: dict[str, str] | None = None, **fields: Any
) -> Launch:
    """A worker whose ``cwd`` is a path its node does not have."""
    env = {"LANG": "C.UTF-8", "PLINTH_URL": served.url, "PLINTH_TOKEN": served.token, **(env or {})}
    fields.setdefault("snapshot", served.snapshot)
    return spec(tmp_path, python(code), env=env, cwd=tmp_path / "server-only", **fields)


def test_workers_fetch_the_snapshot_and_their_logs_come_back(
    executor: RemoteExecutor, served: Served, tmp_path: Path
) -> None:
    """A gang of two, one worker on each node (one of them launched by the other
    node's launcher): each runs in the fetched snapshot, its lines reach the server's
    log while it runs, the rest once it ends, and its node keeps nothing."""
    go = tmp_path / "go"
    code = (
        "import os; from pkg.x import X\n"
        "print(f'rank {os.environ[\"RANK\"]} read', open('data.txt').read().strip(), X, "
        "'in', os.getcwd(), flush=True)\n" + waits_for(go, "print('done', flush=True)")
    )
    launches = [
        unshared(
            tmp_path,
            served,
            code,
            env={"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "RANK": str(rank)},
            job_id="shipped",
            rank=rank,
            log_path=tmp_path / "logs" / f"rank-{rank}.log",
        )
        for rank in range(2)
    ]
    handles = [executor.launch(launch) for launch in launches]

    def read_while_running() -> bool | None:
        for handle in handles:
            assert executor.poll(handle).state == "running"
        return all("read hello from the snapshot 1" in log_text(x) for x in launches) or None

    wait_for(read_while_running, "both workers' first lines on the server, while they run")
    assert not (tmp_path / "server-only").exists()  # never the server's path
    where = [Path(log_text(x).split(" in ")[-1].split()[0]) for x in launches]
    assert all(w.name == "work" and w.is_dir() for w in where)  # both nodes' disk is this one
    # One on the head, in its private directory under this machine's temporary
    # directory; the other on the second node, whose temporary directory is its own:
    # that one's log comes back through the second node's launcher.
    here = [w.parent == own_dir(x) for w, x in zip(where, launches, strict=True)]
    assert sorted(here) == [False, True]
    go.touch()
    statuses = [ended(executor, handle) for handle in handles]
    assert [(s.state, s.exit_code) for s in statuses] == [("exited", 0)] * 2
    for rank, (launch, cwd) in enumerate(zip(launches, where, strict=True)):
        fetched = f"plinth: the job's snapshot: 2 files in {cwd}\n"
        ran = f"rank {rank} read hello from the snapshot 1 in {cwd}\ndone\n"
        assert log_text(launch) == fetched + ran  # each byte once, in order
    assert not any(w.parent.exists() for w in where)  # the work and the log, gone
    assert not any(own_dir(x).exists() for x in launches)


def test_a_snapshot_it_may_not_fetch_ends_the_worker_with_why(
    executor: RemoteExecutor, served: Served, tmp_path: Path
) -> None:
    launch = unshared(tmp_path, served, "print('never')", snapshot="lab/" + "0" * 64)
    status = ended(executor, executor.launch(launch))
    assert (status.state, status.exit_code) == ("exited", 1)
    assert status.reason == "fetching the job's snapshot from the Plinth server failed"
    text = log_text(launch)
    assert "cannot fetch the job's snapshot" in text and "answered 404" in text
    assert "never" not in text


def test_a_stop_during_the_fetch_ends_the_worker_before_it_started(
    ray_setup: RaySetup, executor: RemoteExecutor, served: Served, tmp_path: Path
) -> None:
    """The server takes the connection and never answers: the stop ends the fetch."""
    listen = (
        "import socket, sys, time; s = socket.socket(); "
        f"s.bind(('127.0.0.1', {PORT + 1})); s.listen(); print('up', flush=True); time.sleep(300)"
    )
    mute = subprocess.Popen(
        [*ray_setup.cluster.enter(), sys.executable, "-c", listen], stdout=subprocess.PIPE
    )
    try:
        assert mute.stdout is not None and mute.stdout.readline().strip() == b"up"
        launch = unshared(
            tmp_path,
            served,
            "print('never')",
            env={"PLINTH_URL": f"http://127.0.0.1:{PORT + 1}"},
            node=HEAD_IP,  # where its private directory is in this machine's sight
        )
        handle = executor.launch(launch)
        wait_for(lambda: own_dir(launch).exists() or None, "the worker's directory")
        executor.stop(handle, grace_seconds=5)
        status = ended(executor, handle)
    finally:
        mute.kill()
        mute.wait()
    assert (status.state, status.exit_code) == ("exited", 128 + signal.SIGTERM)
    assert status.reason == "stopped before it started"
    assert "never" not in log_text(launch)
    assert not own_dir(launch).exists()  # the fetch's temporary files went with it


def test_a_job_with_a_snapshot_and_no_server_to_fetch_it_from_is_refused(
    executor: RemoteExecutor, served: Served, tmp_path: Path
) -> None:
    launch = unshared(tmp_path, served, "print('never')")
    launch.env.pop("PLINTH_URL")
    with pytest.raises(RuntimeError, match="has no server URL"):
        executor.launch(launch)
    assert not launch.log_path.exists()
