"""The scheduler: which queued jobs start now, on which node, with which CPUs and GPUs,
and which running jobs to preempt. Pure logic over memory, no database, no clock of
its own: the dispatcher feeds it what the database says and carries out its answers.

Rules (see the tests for each): higher priority first; among equal priority, fair share
between projects by dominant-resource fairness (the project whose largest share of any
resource is smallest goes next), first-in-first-out within a project; per-project
quotas (CPUs, memory, GPUs, concurrent jobs) hold a job back without blocking others;
a gang (``units`` > 1) is placed whole or not at all; a queued job that cannot fit may
preempt strictly lower-priority preemptible work when stopping it would make room.

Details that matter:

- **Shares** are per pool: a project's running usage in the pool over the pool's
  capacity, the largest over CPUs, memory and GPUs. Ties go to the earlier ``seq``.
- **No starvation of big gangs.** A job that fits its quota but not the free capacity
  *reserves*: every job ordered after it in its pool may only use nodes it could never
  use (a CPU-only node when it wants a GPU, say). So a stream of small jobs cannot keep
  taking the slots a gang is waiting for; it waits at most for the jobs already running
  there. The reservation is taken at once, since the scheduler has no clock to measure
  a wait with; its price is idle slots on those nodes until the gang fits.
  Quota-blocked jobs never reserve. After a walk that started jobs ``place()`` walks
  the pools again (shares moved, so did the order; a job that used up its project's
  quota here no longer reserves there), so what it returns is everything that can
  start: called again with nothing changed, it starts nothing.
- **Cheap when nothing fits.** Queues are heaps per pool → priority → project, and a
  pool is only walked again after something that could let more start (a release, a
  submit or withdrawal there, a quota change). A walk looks at the head of each
  project's queue, stops a project at its first head that does not fit, and stops the
  pool once a reservation leaves no usable node: O(priorities * projects + nodes *
  placements), whatever the queue length.
- **Exact slots.** GPU ids are the node's ``Gpu.index`` values (or ``0..gpus-1`` when
  it lists none), CPU ids come from ``Node.cpu_ids`` (``ceil(cpus)`` whole CPUs per
  unit; none when the node gives no ids). No id is given to two running jobs.
- **Preemption** names, for the head of a queue that does not fit, strictly
  lower-priority preemptible running jobs of its pool: lowest priority first, then most
  recently placed, until it would fit, then drops any that turned out not to be needed.
  A job is named once until released or adopted again; jobs already named count as
  freed when working out whether more are needed.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from plinth.compute.resources import Node, Resources
from plinth.errors import Conflict, InvalidInput

__all__ = ["Allocation", "Placement", "Preemption", "Quota", "Request", "Scheduler"]


@dataclass(frozen=True)
class Request:
    """A queued job as the scheduler sees it: ``units`` placements of ``per_unit``
    each (a DDP job with 2 nodes x 2 processes is 2 units of 2 processes' worth)."""

    job_id: str
    project: str
    priority: int = 0  # higher first
    seq: int = 0  # submission order, for first-in-first-out
    pool: str | None = None  # None: the default pool
    units: int = 1
    per_unit: Resources = Resources()  # noqa: RUF009 (frozen, so sharing it is safe)
    preemptible: bool = True


@dataclass(frozen=True)
class Quota:
    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int | None = None
    jobs: int | None = None  # concurrent running jobs


@dataclass(frozen=True)
class Allocation:
    node: str
    resources: Resources
    cpu_ids: tuple[int, ...] = ()
    gpu_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Placement:
    job_id: str
    allocations: tuple[Allocation, ...]  # one per unit, in unit order


@dataclass(frozen=True)
class Preemption:
    job_id: str  # the running job to stop
    for_job: str  # the queued job it makes room for


# -- integer resource arithmetic (milli-CPUs, so sums never drift) ------------------


@dataclass(frozen=True)
class _Unit:
    cpu_m: int
    memory: int
    gpus: int
    whole_cpus: int  # CPU ids one unit needs on a node that lists them


@lru_cache(maxsize=4096)
def _unit(resources: Resources) -> _Unit:
    cpu_m = round(resources.cpus * 1000)
    return _Unit(cpu_m, resources.memory_bytes, resources.gpus, -(-cpu_m // 1000))


def _fitting(free: list[int], unit: _Unit, has_cpu_ids: bool, want: int) -> int:
    """How many units (at most ``want``) fit in ``free`` = [milli-CPUs, memory, GPU
    slots, CPU ids]."""
    n = want
    if unit.cpu_m:
        n = min(n, free[0] // unit.cpu_m)
    if unit.memory:
        n = min(n, free[1] // unit.memory)
    if unit.gpus:
        n = min(n, free[2] // unit.gpus)
    if has_cpu_ids and unit.whole_cpus:
        n = min(n, free[3] // unit.whole_cpus)
    return max(n, 0)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _describe(r: Resources) -> str:
    return f"{r.cpus:g} CPUs, {r.memory_bytes} bytes of memory, {r.gpus} GPUs"


class _NodeState:
    """One node's capacity and what is free on it now, as ids and as the vector
    [milli-CPUs, memory, GPU slots, CPU ids] that fitting reads (kept, not rebuilt)."""

    def __init__(self, node: Node) -> None:
        self.name = node.name
        self.gpu_slots = tuple(g.index for g in node.gpus) or tuple(range(node.capacity.gpus))
        self.cpu_slots = tuple(node.cpu_ids)
        self.has_cpu_ids = bool(self.cpu_slots)
        self.capacity = [
            round(node.capacity.cpus * 1000),
            node.capacity.memory_bytes,
            len(self.gpu_slots),
            len(self.cpu_slots),
        ]
        self.vector = list(self.capacity)
        self.pool_free = [0, 0, 0, 0]  # the pool's sums, shared by its nodes
        self.free_gpus = set(self.gpu_slots)
        self.free_cpus = set(self.cpu_slots)

    def free(self) -> list[int]:
        return self.vector

    def take(self, resources: Resources) -> Allocation:
        unit = _unit(resources)
        gpu_ids = tuple(sorted(self.free_gpus)[: unit.gpus])
        cpu_ids = tuple(sorted(self.free_cpus)[: unit.whole_cpus]) if self.has_cpu_ids else ()
        self.hold(unit, cpu_ids, gpu_ids)
        return Allocation(self.name, resources, cpu_ids, gpu_ids)

    def hold(self, unit: _Unit, cpu_ids: tuple[int, ...], gpu_ids: tuple[int, ...]) -> None:
        self.free_gpus.difference_update(gpu_ids)
        self.free_cpus.difference_update(cpu_ids)
        self._recount(-unit.cpu_m, -unit.memory)

    def give_back(self, allocation: Allocation) -> None:
        unit = _unit(allocation.resources)
        self.free_gpus.update(i for i in allocation.gpu_ids if i in self.gpu_slots)
        self.free_cpus.update(i for i in allocation.cpu_ids if i in self.cpu_slots)
        self._recount(unit.cpu_m, unit.memory)

    def _recount(self, cpu_m: int, memory: int) -> None:
        new = [self.vector[0] + cpu_m, self.vector[1] + memory]
        new += [len(self.free_gpus), len(self.free_cpus)]
        for i in range(4):
            self.pool_free[i] += new[i] - self.vector[i]
        self.vector[:] = new


@dataclass
class _Pool:
    name: str
    nodes: list[_NodeState]  # by name: GPU work packs onto the first ones
    cpu_first: list[_NodeState]  # GPU-less nodes first, for work that needs no GPU
    inverse_capacity: tuple[float, float, float]  # 1/total (0 where the pool has none)
    levels: dict[int, dict[str, list[tuple[int, int, str]]]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    dirty: bool = True  # something changed that could let more start here
    unusable: dict[_Unit, frozenset[str]] = field(default_factory=dict)  # by node capacity
    most_units: dict[_Unit, int] = field(default_factory=dict)  # ditto
    free: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # sums of the nodes'

    def order_for(self, unit: _Unit) -> list[_NodeState]:
        return self.nodes if unit.gpus else self.cpu_first


@dataclass
class _Running:
    request: Request
    pool: str
    allocations: tuple[Allocation, ...]
    order: int  # placement counter: later placed, higher


def _totals(request: Request) -> list[int]:
    unit = _unit(request.per_unit)
    n = request.units
    return [unit.cpu_m * n, unit.memory * n, unit.gpus * n]


class Scheduler:
    def __init__(
        self,
        nodes: Iterable[Node],
        quotas: Mapping[str, Quota] | None = None,
        *,
        default_pool: str = "local",
    ) -> None:
        self._default_pool = default_pool
        self._nodes: dict[str, _NodeState] = {}
        by_pool: dict[str, list[_NodeState]] = {}
        for node in nodes:
            if node.name in self._nodes:
                raise InvalidInput(f"node {node.name!r} is declared twice")
            state = self._nodes[node.name] = _NodeState(node)
            by_pool.setdefault(node.pool, []).append(state)
        self._pools = {name: _new_pool(name, states) for name, states in sorted(by_pool.items())}
        self._quotas: dict[str, Quota] = dict(quotas or {})
        self._usage: dict[str, list[int]] = {}  # project → [cpu_m, memory, gpus, jobs]
        self._pool_usage: dict[tuple[str, str], list[int]] = {}  # (project, pool) → ditto
        self._queued: dict[str, tuple[Request, int]] = {}  # job → (request, token)
        self._running: dict[str, _Running] = {}
        self._preempting: set[str] = set()
        self._tokens = itertools.count()

    # -- changes the dispatcher reports --------------------------------------------

    def set_quota(self, project: str, quota: Quota | None) -> None:
        if quota is None:
            self._quotas.pop(project, None)
        else:
            self._quotas[project] = quota
        self._mark_all_dirty()

    def submit(self, request: Request) -> None:
        """Queue a job. Raises Conflict for a job id already known and InvalidInput
        (with ``unplaceable``'s reason) for a request that could never start."""
        if request.job_id in self._queued or request.job_id in self._running:
            raise Conflict(f"job {request.job_id} is already known to the scheduler")
        reason = self.unplaceable(request)
        if reason is not None:
            raise InvalidInput(reason)
        pool = self._pools[self._pool_name(request)]
        token = next(self._tokens)
        self._queued[request.job_id] = (request, token)
        heap = pool.levels.setdefault(request.priority, {}).setdefault(request.project, [])
        heapq.heappush(heap, (request.seq, token, request.job_id))
        pool.dirty = True

    def withdraw(self, job_id: str) -> None:
        """A queued job cancelled (no-op when unknown)."""
        entry = self._queued.pop(job_id, None)
        if entry is not None:  # its heap entry goes stale and is dropped when reached
            self._pools[self._pool_name(entry[0])].dirty = True

    def adopt(self, request: Request, allocations: tuple[Allocation, ...]) -> None:
        """A job already running (a restarted server re-adopting it): its resources
        are in use. Allocations on nodes no longer configured count against the quota
        only; an id another running job holds raises Conflict."""
        self.release(request.job_id)
        for allocation in allocations:
            node = self._nodes.get(allocation.node)
            if node is None:
                continue
            taken = set(allocation.gpu_ids) - node.free_gpus & set(node.gpu_slots)
            taken |= set(allocation.cpu_ids) - node.free_cpus & set(node.cpu_slots)
            if taken:
                raise Conflict(f"job {request.job_id}: ids {sorted(taken)} on {node.name} are held")
        for allocation in allocations:
            node = self._nodes.get(allocation.node)
            if node is not None:
                node.hold(_unit(allocation.resources), allocation.cpu_ids, allocation.gpu_ids)
        self._start(request, allocations)

    def release(self, job_id: str) -> None:
        """A running job ended: its resources are free again (no-op when unknown; a
        job still queued is withdrawn)."""
        run = self._running.pop(job_id, None)
        if run is None:
            self.withdraw(job_id)
            return
        for allocation in run.allocations:
            node = self._nodes.get(allocation.node)
            if node is not None:
                node.give_back(allocation)
        self._count(run.request, run.pool, -1)
        if run.pool in self._pools:
            self._pools[run.pool].running.discard(job_id)
        self._preempting.discard(job_id)
        self._mark_all_dirty()  # its project's quota frees in every pool

    # -- answers -------------------------------------------------------------------

    def place(self) -> list[Placement]:
        """Every queued job that can start now, in the order they should start; each
        placed job counts as running from here on."""
        placements: list[Placement] = []
        while dirty := [pool for pool in self._pools.values() if pool.dirty]:
            for pool in dirty:
                pool.dirty = False
                placed = self._walk(pool)
                if placed:  # shares and quotas moved: orders and reservations may change
                    placements.extend(placed)
                    self._mark_all_dirty()
        return placements

    def preemptions(self) -> list[Preemption]:
        """Running jobs to stop so that higher-priority queued jobs fit. A job is
        named once (until released or adopted again)."""
        found: list[Preemption] = []
        for pool in self._pools.values():
            found.extend(self._preempt_in(pool))
        return found

    def queued(self) -> list[str]:
        """Queued job ids in the order they would be considered (pool by pool, as if
        each one started in turn)."""
        order: list[str] = []
        for pool in self._pools.values():
            for priority in sorted(pool.levels, reverse=True):
                order.extend(self._fair_order(pool, pool.levels[priority]))
        return order

    def unplaceable(self, request: Request) -> str | None:
        """Why a request can never fit (bigger than any node, unknown pool, more than
        its project's whole quota), else None."""
        r = request.per_unit
        if request.units < 1:
            return f"a job needs at least 1 unit, not {request.units}"
        if r.cpus < 0 or r.memory_bytes < 0 or r.gpus < 0:
            return f"resources cannot be negative: {_describe(r)}"
        name = self._pool_name(request)
        pool = self._pools.get(name)
        if pool is None:
            known = ", ".join(self._pools) or "none"
            return f"no pool named {name!r} (pools: {known})"
        unit = _unit(r)
        if unit not in pool.most_units:  # how many units the empty pool holds
            pool.most_units[unit] = sum(
                _fitting(n.capacity, unit, n.has_cpu_ids, 1 << 40) for n in pool.nodes
            )
        fits = min(pool.most_units[unit], request.units)
        if fits == 0:
            return f"{_describe(r)} is more than any node of pool {name!r} has"
        if fits < request.units:
            return f"pool {name!r} holds at most {fits} of the {request.units} units even empty"
        return self._over_quota(request, used=[0, 0, 0, 0])

    def in_use(self) -> dict[str, Resources]:
        """What running jobs hold on each node, for ``plinth nodes``."""
        return {
            name: Resources(
                cpus=(node.capacity[0] - node.vector[0]) / 1000,
                memory_bytes=node.capacity[1] - node.vector[1],
                gpus=node.capacity[2] - node.vector[2],
            )
            for name, node in self._nodes.items()
        }

    # -- placing -------------------------------------------------------------------

    def _walk(self, pool: _Pool) -> list[Placement]:
        """One pass over a pool's queues: see the module docstring for the order."""
        placements: list[Placement] = []
        allowed: set[str] | None = None  # narrowed by each reservation
        for priority in sorted(pool.levels, reverse=True):
            level = pool.levels[priority]
            # projects by rank; only the one that just started a job changes rank
            ranked = [self._ranked(pool, level, project) for project in list(level)]
            heap = [entry for entry in ranked if entry is not None]
            heapq.heapify(heap)
            while heap:
                *_, project, request = heapq.heappop(heap)
                if self._over_quota(request, self._used(project)):
                    continue
                plan = self._plan(pool, request, _NodeState.free, allowed)
                if plan is None:  # it reserves the nodes it could use
                    unusable = self._unusable_by(pool, request)
                    allowed = unusable if allowed is None else allowed & unusable
                    if not allowed:
                        return placements
                    continue
                heapq.heappop(level[project])
                del self._queued[request.job_id]
                allocations = tuple(node.take(request.per_unit) for node in plan)
                self._start(request, allocations)
                placements.append(Placement(request.job_id, allocations))
                entry = self._ranked(pool, level, project)
                if entry is not None:
                    heapq.heappush(heap, entry)
        for priority in [p for p, level in pool.levels.items() if not level]:
            del pool.levels[priority]
        return placements

    def _ranked(
        self, pool: _Pool, level: dict[str, list[tuple[int, int, str]]], project: str
    ) -> tuple[float, int, str, Request] | None:
        """(share, head's seq, project, head): the order projects take turns in."""
        head = self._head(level, project)
        if head is None:
            return None
        return (self._share(project, pool), head.seq, project, head)

    def _head(self, level: dict[str, list[tuple[int, int, str]]], project: str) -> Request | None:
        """The project's first live queued request at this level (stale entries of
        withdrawn jobs are dropped here); an emptied queue leaves the level."""
        heap = level.get(project)
        while heap:
            _, token, job_id = heap[0]
            entry = self._queued.get(job_id)
            if entry is not None and entry[1] == token:
                return entry[0]
            heapq.heappop(heap)
        level.pop(project, None)
        return None

    def _plan(
        self,
        pool: _Pool,
        request: Request,
        free_of: Callable[[_NodeState], list[int]],
        allowed: set[str] | None,
    ) -> list[_NodeState] | None:
        """The node of each unit, first fit, or None when the gang does not fit whole."""
        unit, left, plan = _unit(request.per_unit), request.units, []
        if free_of is _NodeState.free and (  # the common "pool is full": no node walk
            unit.gpus * left > pool.free[2]
            or unit.cpu_m * left > pool.free[0]
            or unit.memory * left > pool.free[1]
        ):
            return None
        for node in pool.order_for(unit):
            if allowed is not None and node.name not in allowed:
                continue
            k = _fitting(free_of(node), unit, node.has_cpu_ids, left)
            plan.extend([node] * k)
            left -= k
            if not left:
                return plan
        return None

    def _unusable_by(self, pool: _Pool, request: Request) -> set[str]:
        """Nodes the reserving request could never use: the only ones left to others."""
        unit = _unit(request.per_unit)
        if unit not in pool.unusable:
            pool.unusable[unit] = frozenset(
                n.name for n in pool.nodes if not _fitting(n.capacity, unit, n.has_cpu_ids, 1)
            )
        return set(pool.unusable[unit])

    def _start(self, request: Request, allocations: tuple[Allocation, ...]) -> None:
        name = self._pool_name(request)
        self._running[request.job_id] = _Running(request, name, allocations, next(self._tokens))
        self._count(request, name, +1)
        if name in self._pools:
            self._pools[name].running.add(request.job_id)

    # -- accounting ----------------------------------------------------------------

    def _count(self, request: Request, pool: str, sign: int) -> None:
        totals = _totals(request)
        for usage in (
            self._usage.setdefault(request.project, [0, 0, 0, 0]),
            self._pool_usage.setdefault((request.project, pool), [0, 0, 0, 0]),
        ):
            for i in range(3):
                usage[i] += sign * totals[i]
            usage[3] += sign

    def _used(self, project: str) -> list[int]:
        return self._usage.get(project) or [0, 0, 0, 0]

    def _over_quota(self, request: Request, used: list[int]) -> str | None:
        quota = self._quotas.get(request.project)
        if quota is None:
            return None
        cpu_m, memory, gpus = _totals(request)
        limits = (
            ("CPUs", quota.cpus, used[0] + cpu_m, 1000),
            ("bytes of memory", quota.memory_bytes, used[1] + memory, 1),
            ("GPUs", quota.gpus, used[2] + gpus, 1),
            ("running jobs", quota.jobs, used[3] + 1, 1),
        )
        for what, limit, wanted, scale in limits:
            if limit is not None and wanted > round(limit * scale):
                return (
                    f"project {request.project!r} may hold {_number(limit)} {what}; "
                    f"this job would make it {_number(wanted / scale)}"
                )
        return None

    def _share(self, project: str, pool: _Pool) -> float:
        usage = self._pool_usage.get((project, pool.name))
        if usage is None:
            return 0.0
        cpu, memory, gpu = pool.inverse_capacity
        return max(usage[0] * cpu, usage[1] * memory, usage[2] * gpu)

    def _fair_order(self, pool: _Pool, level: dict[str, list[tuple[int, int, str]]]) -> list[str]:
        """One level's queued ids in DRF order, as if each started in turn."""
        live = {
            p: [e for e in sorted(heap) if self._queued.get(e[2], (None, -1))[1] == e[1]]
            for p, heap in level.items()
        }
        usage = {p: list(self._pool_usage.get((p, pool.name), [0, 0, 0, 0])) for p in live}
        position = dict.fromkeys(live, 0)

        def share(p: str) -> float:
            return max(u * inv for u, inv in zip(usage[p], pool.inverse_capacity, strict=False))

        ranked = [(share(p), entries[0][0], p) for p, entries in live.items() if entries]
        heapq.heapify(ranked)
        order: list[str] = []
        while ranked:
            _, _, project = heapq.heappop(ranked)
            entries = live[project]
            job_id = entries[position[project]][2]
            order.append(job_id)
            for i, total in enumerate(_totals(self._queued[job_id][0])):
                usage[project][i] += total
            position[project] += 1
            if position[project] < len(entries):
                next_seq = entries[position[project]][0]
                heapq.heappush(ranked, (share(project), next_seq, project))
        return order

    # -- preempting ----------------------------------------------------------------

    def _preempt_in(self, pool: _Pool) -> list[Preemption]:
        candidates = [
            self._running[j]
            for j in pool.running
            if j not in self._preempting and self._running[j].request.preemptible
        ]
        if not candidates:
            return []
        floor = min(c.request.priority for c in candidates)
        free = {n.name: list(n.vector) for n in pool.nodes}  # a copy to simulate on
        for job_id in self._preempting & pool.running:
            _add(free, self._running[job_id], +1)
        found: list[Preemption] = []
        for priority in sorted(pool.levels, reverse=True):
            if priority <= floor:
                break
            level = pool.levels[priority]
            heads = [h for p in list(level) if (h := self._head(level, p)) is not None]
            heads.sort(key=lambda r: (self._share(r.project, pool), r.seq, r.project))
            for request in heads:
                if self._over_quota(request, self._used(request.project)):
                    continue
                if self._plan(pool, request, lambda n: free[n.name], None) is None:
                    victims = self._victims(pool, free, request, candidates)
                    if victims is None:
                        return found  # it reserves: nothing lower-ordered preempts either
                    for victim in victims:
                        candidates.remove(victim)
                        self._preempting.add(victim.request.job_id)
                        _add(free, victim, +1)
                        found.append(Preemption(victim.request.job_id, request.job_id))
                plan = self._plan(pool, request, lambda n: free[n.name], None)
                for node in plan or ():
                    unit = _unit(request.per_unit)
                    ids = unit.whole_cpus if node.has_cpu_ids else 0
                    _subtract(free[node.name], [unit.cpu_m, unit.memory, unit.gpus, ids])
        return found

    def _victims(
        self, pool: _Pool, free: dict[str, list[int]], request: Request, candidates: list[_Running]
    ) -> list[_Running] | None:
        """The fewest lower-priority jobs, lowest priority and latest placed first,
        whose stopping lets ``request`` fit; None when even all of them would not."""
        eligible = sorted(
            (c for c in candidates if c.request.priority < request.priority),
            key=lambda c: (c.request.priority, -c.order),
        )
        trial = {name: list(values) for name, values in free.items()}
        chosen: list[_Running] = []
        for candidate in eligible:
            _add(trial, candidate, +1)
            chosen.append(candidate)
            if self._plan(pool, request, lambda n: trial[n.name], None) is not None:
                break
        else:
            return None
        for candidate in reversed(chosen[:-1]):  # drop the ones it turns out not to need
            _add(trial, candidate, -1)
            if self._plan(pool, request, lambda n: trial[n.name], None) is None:
                _add(trial, candidate, +1)
            else:
                chosen.remove(candidate)
        return chosen

    # -- small helpers -------------------------------------------------------------

    def _pool_name(self, request: Request) -> str:
        return request.pool or self._default_pool

    def _mark_all_dirty(self) -> None:
        for pool in self._pools.values():
            pool.dirty = True


def _add(free: dict[str, list[int]], run: _Running, sign: int) -> None:
    for allocation in run.allocations:
        values = free.get(allocation.node)
        if values is not None:
            unit = _unit(allocation.resources)
            delta = [unit.cpu_m, unit.memory, len(allocation.gpu_ids), len(allocation.cpu_ids)]
            _subtract(values, [-sign * d for d in delta])


def _subtract(values: list[int], delta: list[int]) -> None:
    for i, d in enumerate(delta):
        values[i] -= d


def _new_pool(name: str, nodes: list[_NodeState]) -> _Pool:
    nodes = sorted(nodes, key=lambda n: n.name)
    totals = [sum(n.capacity[i] for n in nodes) for i in range(3)]
    inverse = tuple(1 / t if t > 0 else 0.0 for t in totals)
    pool = _Pool(
        name=name,
        nodes=nodes,
        cpu_first=sorted(nodes, key=lambda n: (len(n.gpu_slots), n.name)),
        inverse_capacity=(inverse[0], inverse[1], inverse[2]),
        free=[sum(n.capacity[i] for n in nodes) for i in range(4)],
    )
    for node in nodes:
        node.pool_free = pool.free
    return pool
