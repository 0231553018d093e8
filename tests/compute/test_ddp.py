"""Distributed training on the local executor: a job of ``nodes`` x ``procs_per_node``
processes is one PyTorch world. Each rank trains the same small model with
DistributedDataParallel over gloo on its own data and writes what it saw and its
final weights; the replicas must agree, must have moved from where they started, and
the rendezvous must have listened on loopback only. A gang member that fails stops
the others."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch  # noqa: F401  (the dev extra: a missing torch is an error, never a skip)

from plinth.client import Client
from plinth.compute import launch
from plinth.errors import InvalidInput
from tests.compute.conftest import PY, py, wait_for, with_compute
from tests.conftest import make_settings


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Client]:
    """SQLite only: the database plays no part in how a world meets (and torch is slow
    to load, three times per job)."""
    with Client(settings=with_compute(make_settings(tmp_path / "home"))) as c:
        yield c


@pytest.fixture
def project() -> str:
    return "ddp"


TRAIN = """
import json, os, sys
import psutil, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(rank)  # each replica starts elsewhere: DDP must broadcast rank 0's
model = torch.nn.Linear(4, 1)
ddp = DistributedDataParallel(model)
start = [p.detach().clone().flatten().tolist() for p in model.parameters()]
optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
data = torch.Generator().manual_seed(100 + rank)  # and sees its own data
for _ in range(15):
    x = torch.randn(8, 4, generator=data)
    loss = ((ddp(x) - x.sum(1, keepdim=True)) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
listening = sorted(
    c.laddr.ip for c in psutil.Process().net_connections("inet") if c.status == "LISTEN"
)
dist.barrier()
names = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
         "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK")
record = {
    "rank": rank, "world": world, "env": {n: os.environ[n] for n in names},
    "start": start, "final": [p.detach().flatten().tolist() for p in model.parameters()],
    "listening": listening,
}
with open(os.path.join(sys.argv[1], f"rank-{rank}.json"), "w") as f:
    json.dump(record, f)
dist.destroy_process_group()
"""


def _train(c: Client, project: str, tmp_path: Path, nodes: int, procs: int) -> list[Any]:
    script, out = tmp_path / "train_ddp.py", tmp_path / "out"
    script.write_text(TRAIN)
    out.mkdir()
    job = c.submit_job(project, [PY, str(script), str(out)], nodes=nodes, procs_per_node=procs)
    done = c.wait_job(project, job.id, timeout=90)
    logs = [c.job_logs(project, job.id, rank=r).text for r in range(nodes * procs)]
    assert done.status == "succeeded", logs
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(nodes * procs)]


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


@pytest.mark.parametrize(("nodes", "procs"), [(1, 2), (2, 1)])
def test_ddp_replicas_train_and_agree(
    jobs: Client, project: str, tmp_path: Path, nodes: int, procs: int
) -> None:
    ranks = _train(jobs, project, tmp_path, nodes, procs)
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world"] for r in ranks} == {2}
    envs = [r["env"] for r in ranks]
    assert {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}
    assert len({e["MASTER_PORT"] for e in envs}) == 1
    assert [e["LOCAL_RANK"] for e in envs] == (["0", "1"] if procs == 2 else ["0", "0"])
    assert [e["NODE_RANK"] for e in envs] == [e["GROUP_RANK"] for e in envs]
    assert [e["NODE_RANK"] for e in envs] == (["0", "0"] if procs == 2 else ["0", "1"])
    assert {e["LOCAL_WORLD_SIZE"] for e in envs} == {str(procs)}
    first, second = ranks
    assert _flat(first["final"]) == pytest.approx(_flat(second["final"]), abs=1e-6)  # agree
    moved = max(
        abs(a - b) for a, b in zip(_flat(first["final"]), _flat(first["start"]), strict=True)
    )
    assert moved > 1e-3  # and they trained
    for r in ranks:  # the store, gloo's pairs: loopback only
        assert r["listening"] and all(map(_loopback, r["listening"])), r["listening"]


def _flat(params: list[list[float]]) -> list[float]:
    return [v for p in params for v in p]


def test_a_failing_gang_member_stops_the_others(jobs: Client, project: str) -> None:
    code = (
        "import os, sys, time\n"
        "if os.environ['RANK'] == '1': sys.exit(3)\n"
        "print('waiting', flush=True); time.sleep(60)\n"
    )
    job = jobs.submit_job(project, py(code), procs_per_node=2)
    wait_for(lambda: jobs.job_logs(project, job.id).text, what="rank 0 to wait")
    began = time.monotonic()
    done = jobs.wait_job(project, job.id, timeout=30)
    # the gang ends as its failing member did (3), not as the member stopped for it (143)
    assert done.status == "failed" and done.exit_code == 3, done
    assert time.monotonic() - began < 15  # not the survivor's 60 s


def test_each_attempt_gets_its_own_port(jobs: Client, project: str, tmp_path: Path) -> None:
    """A retried gang and a second job never share a rendezvous port."""
    seen = tmp_path / "ports"
    seen.mkdir()
    code = (
        "import os, sys\n"
        "p = os.path.join(sys.argv[1], os.environ['PLINTH_JOB_ID'] + '-' +"
        " os.environ['PLINTH_JOB_ATTEMPT'] + '-' + os.environ['RANK'])\n"
        "open(p, 'w').write(os.environ['MASTER_PORT'])\n"
        "sys.exit(1 if os.environ['PLINTH_JOB_ATTEMPT'] == '1' else 0)\n"
    )
    ids = [
        jobs.submit_job(project, [*py(code), str(seen)], procs_per_node=2, retries=1).id
        for _ in range(2)
    ]
    for job_id in ids:
        assert jobs.wait_job(project, job_id, timeout=30).status == "succeeded"
    ports: dict[str, set[str]] = {}
    for f in seen.iterdir():
        job_id, attempt, _ = f.name.split("-")
        ports.setdefault(f"{job_id}-{attempt}", set()).add(f.read_text())
    assert len(ports) == 4 and all(len(p) == 1 for p in ports.values())  # one per attempt
    assert len({p for found in ports.values() for p in found}) == 4  # none shared


def test_a_job_cannot_set_the_rendezvous(jobs: Client, project: str) -> None:
    with pytest.raises(InvalidInput, match="MASTER_PORT"):
        jobs.submit_job(project, ["true"], env={"MASTER_PORT": "1"})


def test_free_ports_are_not_handed_twice() -> None:
    handed = [launch.free_port() for _ in range(50)]
    assert len(set(handed)) == 50
    with socket.socket() as s:  # and each was free
        s.bind(("127.0.0.1", handed[-1]))


def test_a_single_process_job_is_a_world_of_one(jobs: Client, project: str) -> None:
    code = "import os; print(os.environ['WORLD_SIZE'], os.environ['RANK'], flush=True)"
    job = jobs.submit_job(project, py(code))
    assert jobs.wait_job(project, job.id, timeout=20).status == "succeeded"
    text = wait_for(lambda: jobs.job_logs(project, job.id).text, what="the job's output")
    assert text == "1 0\n"


def test_the_nccl_device_check_parses() -> None:
    """tests/device/ddp_nccl.py runs only where a GPU is lent: here it must at least
    load, parse its arguments and answer --help (without loading torch)."""
    import importlib.util
    import subprocess

    path = Path(__file__).resolve().parents[1] / "device" / "ddp_nccl.py"
    spec = importlib.util.spec_from_file_location("ddp_nccl", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse(["--nodes", "2", "--procs-per-node", "1"])
    assert (args.backend, args.nodes, args.procs_per_node, args.gpus) == ("nccl", 2, 1, 1)
    shown = subprocess.run([PY, str(path), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "{nccl,gloo}" in shown.stdout, shown.stderr


def test_the_store_host_passes_on_its_command_s_exit() -> None:
    """Rank 0's command runs under the host: its exit code (a missing program's 127, a
    signal's 128+N) is the worker's."""
    import os
    import subprocess

    from plinth.compute import rendezvous

    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(launch.free_port())}

    def run(*argv: str) -> int:
        hosted = rendezvous.hosted(argv)
        return subprocess.run(hosted, env=env, timeout=60, capture_output=True).returncode

    assert run(*py("raise SystemExit(7)")) == 7
    assert run("/no/such/program") == 127
    assert run(*py("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")) == 128 + 15
