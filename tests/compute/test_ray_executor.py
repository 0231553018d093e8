"""What only the Ray executor does, beyond the contract suite (which it passes too):
where workers land on a real two-node cluster, gangs reserved all-or-nothing with a
placement group, adoption by a brand-new server process, and a dead node's worker
reported lost. The cluster is the session's (``tests/compute/ray_cluster.py``)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

from plinth.compute.executors import Handle, Launch
from tests.compute.contract.conftest import RAY_MARKER
from tests.compute.contract.harness import (
    ended,
    log_text,
    pid_from_log,
    python,
    spec,
    wait_for,
    waits_for,
)
from tests.compute.ray_cluster import (
    SECOND_IP,
    RaySetup,
    RemoteExecutor,
    ray_setup_fixture,
    stop_node,
)

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]
PRINT_PID = "import os; print(f'pid={os.getpid()}', flush=True)\n"
assert RAY_MARKER  # registered by tests/compute/contract/conftest.py


@pytest.fixture(scope="session")
def ray_setup() -> Iterator[RaySetup]:
    yield from ray_setup_fixture()


@pytest.fixture
def executor(ray_setup: RaySetup) -> Iterator[RemoteExecutor]:
    made = ray_setup.driver.executor(gang_timeout=5.0)
    yield made
    made.close()


def node_of(ray_setup: RaySetup, job_pid: int, *extra: psutil.Popen) -> str:
    """Which node's ``ray start`` the job's process descends from."""
    cluster = ray_setup.cluster
    nodes = {cluster.head.pid: "head", cluster.second.pid: "second"}
    nodes.update({p.pid: "extra" for p in extra})
    for ancestor in psutil.Process(job_pid).parents():
        if ancestor.pid in nodes:
            return nodes[ancestor.pid]
    raise AssertionError(f"process {job_pid} descends from no Ray node")


def gang(tmp_path: Path, job: str, world: int, code: str) -> list[Launch]:
    env = {"LANG": "C.UTF-8", "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": "1"}
    return [
        spec(
            tmp_path,
            python(code),
            env={**env, "RANK": str(rank)},
            job_id=job,
            rank=rank,
            log_path=tmp_path / job / f"rank-{rank}.log",
        )
        for rank in range(world)
    ]


def test_a_worker_pinned_to_a_node_by_its_address_runs_there(
    ray_setup: RaySetup, executor: RemoteExecutor, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    launch = spec(tmp_path, python(PRINT_PID + waits_for(go)), node=SECOND_IP)
    handle = executor.launch(launch)
    try:
        assert node_of(ray_setup, pid_from_log(launch)) == "second"
    finally:
        go.touch()
    assert ended(executor, handle).exit_code == 0


def test_a_node_without_the_working_directory_says_so(
    executor: RemoteExecutor, tmp_path: Path
) -> None:
    launch = spec(tmp_path, python("print('never')"), cwd=tmp_path / "not-shared")
    status = ended(executor, executor.launch(launch))
    assert (status.state, status.exit_code) == ("exited", 127)
    assert status.reason == "the job's working directory is not on this Ray node"
    assert "must share the Plinth server's disk" in log_text(launch)


def test_a_gang_spreads_over_the_nodes_and_its_group_goes_when_it_ends(
    ray_setup: RaySetup, executor: RemoteExecutor, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    launches = gang(tmp_path, "spread", 2, PRINT_PID + waits_for(go))
    handles = [executor.launch(launch) for launch in launches]
    groups = ray_setup.driver.call("groups")
    assert groups["plinth-spread-1-gang"] == "CREATED"
    placed = {node_of(ray_setup, pid_from_log(launch)) for launch in launches}
    assert placed == {"head", "second"}  # STRICT_SPREAD: one unit per node
    go.touch()
    assert [ended(executor, h).exit_code for h in handles] == [0, 0]
    wait_for(
        lambda: ray_setup.driver.call("groups")["plinth-spread-1-gang"] == "REMOVED",
        "the gang's placement group to be removed",
    )


def test_a_stop_reaches_workers_on_every_node(
    ray_setup: RaySetup, executor: RemoteExecutor, tmp_path: Path
) -> None:
    """A gang's workers are launched by this node's launcher but run on both nodes: the
    stop reaches the one on the other node through that node's launcher."""
    launches = gang(tmp_path, "stopped", 2, PRINT_PID + "import time; time.sleep(60)")
    handles = [executor.launch(launch) for launch in launches]
    placed = {node_of(ray_setup, pid_from_log(launch)) for launch in launches}
    assert placed == {"head", "second"}
    assert len({h.data["launcher"] for h in handles}) == 1  # one launcher owns both
    for handle in handles:
        executor.stop(handle, grace_seconds=5)
    statuses = [ended(executor, handle) for handle in handles]
    assert [(s.state, s.exit_code) for s in statuses] == [("exited", 128 + signal.SIGTERM)] * 2


def test_a_gang_that_cannot_all_fit_starts_none_of_it(
    ray_setup: RaySetup, executor: RemoteExecutor, tmp_path: Path
) -> None:
    launches = gang(tmp_path, "toobig", 3, "print('ran', flush=True)")  # 3 units, 2 nodes
    with pytest.raises(RuntimeError, match="could not reserve the gang of job toobig"):
        executor.launch(launches[0])
    assert ray_setup.driver.call("groups")["plinth-toobig-1-gang"] == "REMOVED"
    assert not any(launch.log_path.exists() for launch in launches)


def test_a_brand_new_server_process_adopts_a_worker_and_stops_it(
    ray_setup: RaySetup, tmp_path: Path
) -> None:
    first_server = ray_setup.cluster.driver()
    first = first_server.executor()
    launch = spec(tmp_path, python("import time; print('ready', flush=True); time.sleep(60)"))
    handle = first.launch(launch)
    first.close()
    first_server.close()  # the server that started it is gone, process and all
    stored = Handle(**json.loads(json.dumps(asdict(handle))))
    restarted = ray_setup.cluster.driver()
    try:
        adopter = restarted.executor()
        wait_for(lambda: "ready" in log_text(launch), "the worker to run")
        assert adopter.poll(stored).state == "running"
        adopter.stop(stored, grace_seconds=5)
        status = ended(adopter, stored)
        assert (status.state, status.exit_code) == ("exited", 128 + signal.SIGTERM)
        adopter.close()
    finally:
        restarted.close()


def test_a_worker_on_a_node_that_dies_is_lost(
    ray_setup: RaySetup, executor: RemoteExecutor, tmp_path: Path
) -> None:
    third = ray_setup.cluster.add_node("127.0.0.4", "third")
    try:
        launch = spec(tmp_path, python(PRINT_PID + "import time; time.sleep(60)"), node="127.0.0.4")
        handle = executor.launch(launch)
        job = pid_from_log(launch)
        assert node_of(ray_setup, job, third) == "extra"
        # The machine dies: every process of the node (Ray puts workers in groups of
        # their own), the job last so that nothing is left to record its end.
        node = psutil.Process(third.pid)
        for proc in [node, *node.children(recursive=True)]:
            if proc.pid != job:
                proc.kill()
        os.killpg(os.getpgid(job), signal.SIGKILL)
        status = ended(executor, handle, timeout=60)
        assert status.state == "lost" and status.exit_code is None
        assert status.reason is not None and "gone without an exit record" in status.reason
    finally:
        stop_node(third, grace=1)
