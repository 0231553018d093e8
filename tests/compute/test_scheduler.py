"""The scheduler's rules, one test each, with many small jobs on small pools (two
projects competing for two GPU slots), and a seeded random walk that checks its
invariants over thousands of operations."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from plinth.compute.resources import Gpu, Node, Resources
from plinth.compute.scheduler import Allocation, Placement, Quota, Request, Scheduler
from plinth.errors import Conflict, InvalidInput

GPU1 = Resources(cpus=1, memory_bytes=1 << 30, gpus=1)
CPU1 = Resources(cpus=1, memory_bytes=1 << 30)
_seq = itertools.count()


def gpu_node(name: str = "n0", gpus: int = 2, cpus: int = 8, pool: str = "local") -> Node:
    return Node(
        name=name,
        pool=pool,
        executor="local",
        capacity=Resources(cpus=cpus, memory_bytes=64 << 30, gpus=gpus),
        cpu_ids=tuple(range(cpus)),
        gpus=tuple(Gpu(i) for i in range(gpus)),
    )


def cpu_node(name: str, cpus: int = 8, pool: str = "local") -> Node:
    return Node(
        name, pool, "local", Resources(cpus=cpus, memory_bytes=64 << 30), tuple(range(cpus))
    )


def job(job_id: str, project: str = "a", **fields: object) -> Request:
    fields.setdefault("per_unit", GPU1)
    fields.setdefault("seq", next(_seq))
    return Request(job_id=job_id, project=project, **fields)  # type: ignore[arg-type]


def ids(placements: list[Placement]) -> list[str]:
    return [p.job_id for p in placements]


def test_two_projects_share_two_gpu_slots_alternating_by_drf() -> None:
    s = Scheduler([gpu_node()])
    for i in range(4):
        s.submit(job(f"a{i}", "a"))
    for i in range(4):
        s.submit(job(f"b{i}", "b"))
    first = s.place()
    assert ids(first) == ["a0", "b0"]  # equal shares: earlier seq first, then the other
    assert sorted(a.gpu_ids[0] for p in first for a in p.allocations) == [0, 1]
    assert s.place() == []  # full
    s.release("a0")
    assert ids(s.place()) == ["a1"]  # a's share (0) is now below b's (1/2)
    s.release("b0")
    assert ids(s.place()) == ["b1"]
    s.release("a1")
    s.release("b1")
    assert ids(s.place()) == ["a2", "b2"]


def test_fifo_within_a_project_and_higher_priority_first() -> None:
    s = Scheduler([gpu_node(gpus=1)])
    s.submit(job("low", priority=0))
    s.submit(job("first", priority=5))
    s.submit(job("second", priority=5))
    assert s.queued() == ["first", "second", "low"]
    assert ids(s.place()) == ["first"]
    s.release("first")
    assert ids(s.place()) == ["second"]
    s.release("second")
    assert ids(s.place()) == ["low"]


def test_quota_holds_one_project_back_while_the_other_proceeds() -> None:
    s = Scheduler([gpu_node(gpus=2)], quotas={"a": Quota(gpus=1)})
    s.submit(job("a0", "a"))
    s.submit(job("a1", "a"))
    s.submit(job("b0", "b"))
    s.submit(job("b1", "b"))
    assert ids(s.place()) == ["a0", "b0"]
    s.release("b0")
    assert ids(s.place()) == ["b1"]  # a1 waits on a's quota, b is not blocked by it
    s.release("a0")
    assert ids(s.place()) == ["a1"]


@pytest.mark.parametrize(
    ("quota", "per_unit"),
    [
        (Quota(jobs=1), CPU1),
        (Quota(cpus=1.5), CPU1),
        (Quota(memory_bytes=3 << 29), CPU1),
    ],
)
def test_each_quota_dimension_counts_running_jobs(quota: Quota, per_unit: Resources) -> None:
    s = Scheduler([cpu_node("c", cpus=8)], quotas={"a": quota})
    s.submit(job("a0", per_unit=per_unit))
    s.submit(job("a1", per_unit=per_unit))
    assert ids(s.place()) == ["a0"]
    s.set_quota("a", None)
    assert ids(s.place()) == ["a1"]


def test_a_gang_is_placed_whole_or_not_at_all() -> None:
    s = Scheduler([gpu_node("n0", gpus=2), gpu_node("n1", gpus=2)])
    s.submit(job("single", "a"))
    s.submit(job("gang", "b", units=4))
    assert ids(s.place()) == ["single"]  # 3 slots free: the 4-unit gang waits whole
    s.release("single")
    (placement,) = s.place()
    assert placement.job_id == "gang"
    slots = {(a.node, a.gpu_ids) for a in placement.allocations}
    assert slots == {("n0", (0,)), ("n0", (1,)), ("n1", (0,)), ("n1", (1,))}


def test_a_waiting_gang_reserves_against_a_stream_of_small_jobs() -> None:
    s = Scheduler([gpu_node(gpus=2)])
    s.submit(job("a0", "a"))
    assert ids(s.place()) == ["a0"]
    s.submit(job("gang", "b", units=2))
    for i in range(1, 5):
        s.submit(job(f"a{i}", "a"))
    assert s.place() == []  # the free slot is kept for the gang
    s.release("a0")
    assert ids(s.place()) == ["gang"]


def test_a_reservation_leaves_nodes_the_gang_cannot_use_to_others() -> None:
    s = Scheduler([gpu_node("g", gpus=2, cpus=4), cpu_node("c", cpus=4)])
    s.submit(job("a0", "a"))
    s.place()
    s.submit(job("gang", "b", units=2))
    s.submit(job("cpu-work", "a", per_unit=CPU1))
    s.submit(job("gpu-work", "a"))
    assert ids(s.place()) == ["cpu-work"]  # on the CPU node; the GPU stays reserved
    assert s._running["cpu-work"].allocations[0].node == "c"


def test_cpu_only_work_prefers_nodes_without_gpus() -> None:
    s = Scheduler([gpu_node("a-gpu"), cpu_node("z-cpu")])
    s.submit(job("cpu", per_unit=CPU1))
    (placement,) = s.place()
    assert placement.allocations[0].node == "z-cpu"


def test_no_gpu_or_cpu_id_is_given_twice_and_release_frees_them() -> None:
    s = Scheduler([gpu_node(gpus=2, cpus=4)])
    two_cpus = Resources(cpus=1.5, memory_bytes=0, gpus=1)  # 1.5 CPUs take 2 whole ids
    s.submit(job("x", per_unit=two_cpus))
    s.submit(job("y", per_unit=two_cpus))
    s.submit(job("z", per_unit=Resources(cpus=0.5)))
    placed = {p.job_id: p.allocations[0] for p in s.place()}
    assert set(placed) == {"x", "y"}  # z would need a fifth whole CPU
    assert placed["x"].cpu_ids == (0, 1) and placed["y"].cpu_ids == (2, 3)
    assert {placed["x"].gpu_ids, placed["y"].gpu_ids} == {(0,), (1,)}
    s.release("x")
    (z,) = s.place()
    assert z.allocations[0].cpu_ids == (0,) and z.allocations[0].gpu_ids == ()
    assert s.in_use()["n0"] == Resources(cpus=2.0, memory_bytes=0, gpus=1)


def test_nodes_without_ids_still_get_gpu_slots() -> None:
    bare = Node("k", "local", "kubernetes", Resources(cpus=4, memory_bytes=1 << 30, gpus=2))
    s = Scheduler([bare])
    s.submit(job("x"))
    s.submit(job("y", per_unit=Resources(cpus=1.5, gpus=1)))
    allocations = [p.allocations[0] for p in s.place()]
    assert [a.gpu_ids for a in allocations] == [(0,), (1,)]
    assert [a.cpu_ids for a in allocations] == [(), ()]


def test_preemption_picks_lowest_priority_then_latest_placed_and_names_once() -> None:
    s = Scheduler([gpu_node(gpus=3)])
    s.submit(job("old", "a", priority=1))
    s.submit(job("mid", "a", priority=2))
    s.submit(job("new", "a", priority=1))
    s.submit(job("keep", "b", priority=0, preemptible=False))
    assert ids(s.place()) == ["mid", "old", "new"]
    s.submit(job("urgent", "b", priority=9))
    assert s.place() == []
    (preemption,) = s.preemptions()
    assert (preemption.job_id, preemption.for_job) == ("new", "urgent")
    assert s.preemptions() == []  # named once; its stopping is already counted
    s.release("new")
    assert ids(s.place()) == ["urgent"]


def test_preemption_frees_enough_for_a_gang() -> None:
    s = Scheduler([gpu_node("n0", gpus=2), gpu_node("n1", gpus=1)])
    s.submit(job("p1", "a", priority=1))
    s.submit(job("p2", "a", priority=1))
    s.submit(job("p0", "a", priority=0))
    assert [(p.job_id, p.allocations[0].node) for p in s.place()] == [
        ("p1", "n0"),
        ("p2", "n0"),
        ("p0", "n1"),
    ]
    s.submit(job("gang", "b", priority=5, units=2))
    # p0 (lowest) first, then p2 (latest placed of priority 1): then the gang fits
    assert {p.job_id for p in s.preemptions()} == {"p0", "p2"}
    s.release("p0")
    assert s.place() == []  # whole or nothing, and the freed slot stays reserved
    s.release("p2")
    assert ids(s.place()) == ["gang"]


def test_preemption_drops_victims_it_turns_out_not_to_need() -> None:
    s = Scheduler([gpu_node("n0", gpus=2), gpu_node("n1", gpus=1)])
    s.submit(job("p1", "a", priority=1))
    s.submit(job("p2", "a", priority=1))
    s.submit(job("p0", "a", priority=0))
    s.place()
    s.submit(job("two-gpus", "b", priority=5, per_unit=Resources(cpus=1, gpus=2)))
    # tried in order p0, p2, p1; only n0 can hold two GPUs, so p0 is not needed after all
    assert sorted(p.job_id for p in s.preemptions()) == ["p1", "p2"]


def test_no_preemption_for_equal_priority_or_of_protected_jobs() -> None:
    s = Scheduler([gpu_node(gpus=1)])
    s.submit(job("run", "a", priority=3))
    s.place()
    s.submit(job("same", "b", priority=3))
    assert s.preemptions() == []
    s.release("run")
    assert ids(s.place()) == ["same"]
    s.release("same")
    s.submit(job("fixed", "a", priority=0, preemptible=False))
    assert ids(s.place()) == ["fixed"]
    s.submit(job("urgent", "b", priority=9))
    assert s.preemptions() == []
    assert s.place() == []


def test_unplaceable_reasons() -> None:
    s = Scheduler([gpu_node(gpus=2, cpus=4)], quotas={"q": Quota(gpus=1)})
    assert s.unplaceable(job("ok")) is None
    assert "no pool named 'gpu'" in (s.unplaceable(job("x", pool="gpu")) or "")
    assert "more than any node" in (s.unplaceable(job("x", per_unit=Resources(gpus=3))) or "")
    assert "at most 2 of the 3 units" in (s.unplaceable(job("x", units=3)) or "")
    assert "may hold 1 GPUs" in (s.unplaceable(job("x", "q", units=2)) or "")
    assert "at least 1 unit" in (s.unplaceable(job("x", units=0)) or "")
    with pytest.raises(InvalidInput, match="more than any node"):
        s.submit(job("big", per_unit=Resources(cpus=5)))
    s.submit(job("dup"))
    with pytest.raises(Conflict):
        s.submit(job("dup"))


def test_withdraw_and_release_of_a_queued_job() -> None:
    s = Scheduler([gpu_node(gpus=1)])
    for name in ("a", "b", "c"):
        s.submit(job(name))
    s.withdraw("a")
    s.release("b")  # ended before it started: withdrawn too
    s.withdraw("nobody")
    assert s.queued() == ["c"]
    assert ids(s.place()) == ["c"]


def test_adopt_holds_resources_and_refuses_a_slot_already_held() -> None:
    s = Scheduler([gpu_node(gpus=2)], quotas={"a": Quota(jobs=1)})
    held = (Allocation("n0", GPU1, cpu_ids=(0,), gpu_ids=(1,)),)
    s.adopt(job("alive", "a"), held)
    s.submit(job("a1", "a"))
    s.submit(job("b1", "b"))
    (placement,) = s.place()  # a1 waits on the quota the adopted job holds
    assert placement.job_id == "b1"
    assert placement.allocations[0].gpu_ids == (0,) and placement.allocations[0].cpu_ids == (1,)
    with pytest.raises(Conflict, match="held"):
        s.adopt(job("ghost", "c"), (Allocation("n0", GPU1, gpu_ids=(0,)),))
    s.adopt(job("elsewhere", "c"), (Allocation("gone-node", GPU1, gpu_ids=(0,)),))
    s.release("alive")
    assert ids(s.place()) == ["a1"]


def test_default_pool_and_pools_are_separate() -> None:
    s = Scheduler(
        [gpu_node("n0", gpus=1), gpu_node("n1", gpus=1, pool="big")], default_pool="local"
    )
    s.submit(job("x", pool="big"))
    s.submit(job("y"))
    placed = {p.job_id: p.allocations[0].node for p in s.place()}
    assert placed == {"x": "n1", "y": "n0"}


def test_queued_lists_drf_order_as_if_each_started() -> None:
    s = Scheduler([gpu_node(gpus=4)])
    for i in range(3):
        s.submit(job(f"a{i}", "a"))
    for i in range(2):
        s.submit(job(f"b{i}", "b"))
    assert s.queued() == ["a0", "b0", "a1", "b1", "a2"]


# -- invariants under a seeded random walk ------------------------------------------


def _check_invariants(s: Scheduler, nodes: list[Node], quotas: dict[str, Quota]) -> None:
    by_name = {n.name: n for n in nodes}
    used: dict[str, list[float]] = {n.name: [0.0, 0, 0] for n in nodes}
    gpu_ids: Counter[tuple[str, int]] = Counter()
    cpu_ids: Counter[tuple[str, int]] = Counter()
    per_project: dict[str, list[float]] = {}
    for run in s._running.values():
        request = run.request
        assert len(run.allocations) == request.units  # gangs whole
        for a in run.allocations:
            used[a.node][0] += a.resources.cpus
            used[a.node][1] += a.resources.memory_bytes
            used[a.node][2] += a.resources.gpus
            assert len(a.gpu_ids) == a.resources.gpus
            assert len(a.cpu_ids) == math.ceil(a.resources.cpus)
            gpu_ids.update((a.node, i) for i in a.gpu_ids)
            cpu_ids.update((a.node, i) for i in a.cpu_ids)
        totals = per_project.setdefault(request.project, [0.0, 0, 0, 0])
        totals[0] += request.per_unit.cpus * request.units
        totals[1] += request.per_unit.memory_bytes * request.units
        totals[2] += request.per_unit.gpus * request.units
        totals[3] += 1
    for name, (cpus, memory, gpus) in used.items():
        capacity = by_name[name].capacity
        assert cpus <= capacity.cpus + 1e-9 and memory <= capacity.memory_bytes
        assert gpus <= capacity.gpus
    for pool in s._pools.values():  # the sums that let a full pool answer at once
        assert pool.free == [sum(n.vector[i] for n in pool.nodes) for i in range(4)]
    assert all(count == 1 for count in gpu_ids.values())
    assert all(count == 1 for count in cpu_ids.values())
    for project, (cpus, memory, gpus, jobs) in per_project.items():
        quota = quotas.get(project)
        if quota is not None:
            assert quota.cpus is None or cpus <= quota.cpus + 1e-9
            assert quota.memory_bytes is None or memory <= quota.memory_bytes
            assert quota.gpus is None or gpus <= quota.gpus
            assert quota.jobs is None or jobs <= quota.jobs


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_walk_keeps_invariants(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [gpu_node(f"g{i}", gpus=2 + i % 3, cpus=8) for i in range(3)] + [
        cpu_node("c0", cpus=6),
        gpu_node("p0", gpus=2, cpus=4, pool="other"),
    ]
    quotas = {"p0": Quota(gpus=3), "p1": Quota(jobs=4, cpus=10), "p2": Quota(memory_bytes=8 << 30)}
    s = Scheduler(nodes, quotas)
    running: set[str] = set()
    queued: set[str] = set()
    placed_total = 0
    for step in range(2500):
        action = rng.random()
        if action < 0.45:
            request = Request(
                job_id=f"j{step}",
                project=f"p{rng.randrange(5)}",
                priority=rng.choice((0, 0, 1, 5)),
                seq=step,
                pool=rng.choice((None, None, None, "other")),
                units=rng.choice((1, 1, 1, 2, 3)),
                per_unit=Resources(
                    cpus=rng.choice((0.5, 1, 2)),
                    memory_bytes=rng.choice((0, 1 << 30, 3 << 30)),
                    gpus=rng.choice((0, 0, 1, 2)),
                ),
                preemptible=rng.random() < 0.8,
            )
            if s.unplaceable(request) is None:
                s.submit(request)
                queued.add(request.job_id)
        elif action < 0.75 and running:
            victim = rng.choice(sorted(running))
            s.release(victim)
            running.discard(victim)
        elif action < 0.8 and queued:
            gone = rng.choice(sorted(queued))
            s.withdraw(gone)
            queued.discard(gone)
        elif action < 0.83 and running:  # a restarted server adopting a live job
            alive = s._running[rng.choice(sorted(running))]
            s.adopt(alive.request, alive.allocations)
        elif action < 0.88:
            for preemption in s.preemptions():
                assert preemption.job_id in running and preemption.for_job in queued
                s.release(preemption.job_id)
                running.discard(preemption.job_id)
        for placement in s.place():
            assert placement.job_id in queued
            queued.discard(placement.job_id)
            running.add(placement.job_id)
            placed_total += 1
        # skipping pools where nothing changed never misses a job that could start
        s._mark_all_dirty()
        assert s.place() == []
        assert set(s._running) == running
        if step % 50 == 0:
            assert set(s.queued()) == queued
        _check_invariants(s, nodes, quotas)
    assert placed_total > 300  # the walk did exercise placing
