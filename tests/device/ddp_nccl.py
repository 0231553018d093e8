"""Device check, run by hand on a machine with NVIDIA GPUs (not collected by pytest).

Distributed training as a Plinth job over NCCL: through the SDK on an embedded home
(a temporary one), a job of ``--nodes`` x ``--procs-per-node`` processes, one GPU each,
trains a small model with DistributedDataParallel. It passes when the job succeeds,
every rank saw its own GPU (``CUDA_VISIBLE_DEVICES`` differs between the ranks of a
node) and the rendezvous variables of its place in the world, the replicas' final
weights agree, and they moved from where they started. Prints PASS or FAIL (exit 0 or
1).

By default one process per GPU on one node (``torch.cuda.device_count()``; a machine
with one GPU makes a world of one, which still goes through NCCL's set-up).
``--backend gloo --gpus 0`` runs the same on the CPU: it proves the script anywhere.

    PYTHONPATH=src python3 tests/device/ddp_nccl.py                      # on the GPUs
    PYTHONPATH=src python3 tests/device/ddp_nccl.py --nodes 2 --procs-per-node 1
    PYTHONPATH=src python3 tests/device/ddp_nccl.py --backend gloo --gpus 0 --procs-per-node 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

TRAIN = """
import json, os, sys
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

backend = sys.argv[2]
dist.init_process_group(backend)
rank = dist.get_rank()
device = torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu")
torch.manual_seed(rank)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
model = model.to(device)
ddp = DistributedDataParallel(model, device_ids=[0] if backend == "nccl" else None)
start = [p.detach().cpu().flatten().tolist() for p in model.parameters()]
optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
data = torch.Generator().manual_seed(100 + rank)
for _ in range(50):
    x = torch.randn(64, 32, generator=data).to(device)
    loss = ((ddp(x) - x.sum(1, keepdim=True)) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
if backend == "nccl":
    torch.cuda.synchronize()
names = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
         "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "CUDA_VISIBLE_DEVICES")
record = {
    "rank": rank, "world": dist.get_world_size(),
    "env": {n: os.environ.get(n) for n in names},
    "gpu": torch.cuda.get_device_name(0) if backend == "nccl" else None,
    "start": start, "final": [p.detach().cpu().flatten().tolist() for p in model.parameters()],
}
with open(os.path.join(sys.argv[1], f"rank-{rank}.json"), "w") as f:
    json.dump(record, f)
dist.destroy_process_group()
"""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("nccl", "gloo"), default="nccl")
    parser.add_argument("--nodes", type=int, default=1, help="units of the gang")
    parser.add_argument(
        "--procs-per-node", type=int, default=None, help="default: one per GPU (or 2 on CPU)"
    )
    parser.add_argument("--gpus", type=int, default=1, help="per process (0: CPU only)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the job")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    gpus = torch.cuda.device_count()
    if args.gpus and not gpus:
        print("FAIL: no CUDA device (--backend gloo --gpus 0 checks the script on a CPU)")
        return 1
    procs = args.procs_per_node or (max(1, gpus // max(1, args.gpus)) if args.gpus else 2)
    with tempfile.TemporaryDirectory(prefix="plinth-ddp-nccl-") as tmp:
        problems = run(Path(tmp), args, procs, gpus)
    for problem in problems:
        print(f"  - {problem}")
    print("FAIL" if problems else "PASS")
    return 1 if problems else 0


def run(tmp: Path, args: argparse.Namespace, procs: int, gpus: int) -> list[str]:
    from plinth.client import Client
    from plinth.settings import ComputeSettings, NodeSettings, PoolSettings, Settings

    world = args.nodes * procs
    # Declared nodes share this machine's GPU slots: a node per unit, each its own slice.
    slots = gpus // args.nodes if args.gpus else 0
    nodes = [NodeSettings(name=f"n{i}", gpus=slots) for i in range(args.nodes)]
    compute = ComputeSettings(pools=[PoolSettings(name="local", nodes=nodes)], handoff=False)
    settings = Settings(home=tmp / "home", url=None, token=None, compute=compute)
    (tmp / "train_ddp.py").write_text(TRAIN)
    out = tmp / "out"
    out.mkdir()
    argv = [sys.executable, str(tmp / "train_ddp.py"), str(out), args.backend]
    with Client(settings=settings) as c:
        job = c.submit_job(
            "device", argv, gpus=args.gpus, nodes=args.nodes, procs_per_node=procs, cpus=1
        )
        done = c.wait_job("device", job.id, timeout=args.timeout)
        logs = {r: c.job_logs("device", job.id, rank=r).text for r in range(world)}
    print(f"job {job.id}: {done.status} (exit {done.exit_code}), world of {world}")
    if done.status != "succeeded":
        return [
            f"the job {done.status}: {done.reason}",
            *(f"rank {r}: {t[-2000:]}" for r, t in logs.items()),
        ]
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(world)]
    return check(ranks, args, procs)


def check(ranks: list[dict[str, Any]], args: argparse.Namespace, procs: int) -> list[str]:
    problems = []
    world = len(ranks)
    for r, seen in enumerate(ranks):
        env = seen["env"]
        want = {
            "RANK": str(r),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(r % procs),
            "NODE_RANK": str(r // procs),
            "LOCAL_WORLD_SIZE": str(procs),
            "MASTER_ADDR": "127.0.0.1",
        }
        wrong = {k: env.get(k) for k, v in want.items() if env.get(k) != v}
        if wrong:
            problems.append(f"rank {r} saw {wrong}, wanted {want}")
        if seen["gpu"]:
            print(f"rank {r}: {seen['gpu']} (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})")
    if args.gpus:
        for node in range(args.nodes):
            visible = [
                s["env"]["CUDA_VISIBLE_DEVICES"] for s in ranks[node * procs : (node + 1) * procs]
            ]
            if len(set(visible)) != len(visible) or "" in visible:
                problems.append(f"node {node}'s ranks shared or lacked GPUs: {visible}")
    flat = [[v for p in s["final"] for v in p] for s in ranks]
    spread = (
        max(abs(a - b) for other in flat[1:] for a, b in zip(flat[0], other, strict=True))
        if world > 1
        else 0.0
    )
    if spread > 1e-4:
        problems.append(f"the replicas' weights differ by up to {spread:g}")
    start = [v for p in ranks[0]["start"] for v in p]
    if max(abs(a - b) for a, b in zip(flat[0], start, strict=True)) < 1e-4:
        problems.append("the weights did not move: nothing trained")
    print(f"replicas agree to {spread:g}; {world} rank(s) over {args.backend}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
