"""The Ray executor: each worker a detached, named Ray actor that runs the job's argv.

A pool ``executor: ray`` with ``address`` runs here. Each worker is an actor
(``_ray_actor.WorkerActor``) named ``plinth-<job>-<attempt>-<rank>`` in the ``plinth``
namespace and detached, so it outlives the Plinth server that started it: a restarted
server's new executor finds it *by name* (adoption). The actor starts the argv as a
subprocess, never through a shell, with exactly the given environment plus
``CUDA_VISIBLE_DEVICES`` from Plinth's placement; the actor asks Ray for the same
CPUs, GPUs and memory so that Ray's accounting agrees with Plinth's.

Where a worker runs:
- a gang (``WORLD_SIZE`` > 1 in its environment, as ``launch.workers`` sets) gets a
  detached placement group, one bundle per unit (a unit's processes share it), made on
  the first launch of the attempt and waited for up to ``gang_timeout``: all of it is
  reserved or the launch fails and nothing of it stays (Ray places a group atomically).
  Strategy ``STRICT_SPREAD`` (each unit on its own Ray node, as Plinth placed units on
  distinct nodes), configurable. The group is removed once every worker of the gang has
  ended, by the poll that finds the last one ended;
- a single worker whose Plinth node is named by a Ray node's IP is pinned to that node
  (Ray's ``node:<ip>`` resource); otherwise Ray chooses.

Limitation of this slice: the Ray nodes share the filesystem with the Plinth server
(one machine, or a shared mount): the working-directory snapshot (``cwd``), the log and
the exit record (``<log>.exit``, written by the actor) are paths on it. A later slice
ships the snapshot as a ``runtime_env`` ``working_dir`` and streams logs back.

Connection: ``ray.init(address=…, namespace="plinth")`` once per process, lazily, on
first use; Ray allows one connection per process, shared by every instance here.
``close()`` releases this instance's share and disconnects with the last one,
leaving the actors running. Ray's token auth comes from the environment
(``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), as for any Ray process.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from plinth.compute.executors import Handle, Launch, Status
from plinth.errors import InvalidInput

log = logging.getLogger(__name__)

NAMESPACE = "plinth"
_LOST = "its Ray actor is gone without an exit record (its node or its process died)"
_ANSWER_SECONDS = 5.0  # a status call slower than this: the actor is busy, not gone
_STRATEGIES = ("STRICT_SPREAD", "SPREAD", "PACK", "STRICT_PACK")


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the dev install has it
        raise InvalidInput("the Ray executor needs Ray: pip install 'plinth[ray]'") from exc
    return ray


class _Connection:
    """The process's one Ray connection, shared by executors by reference count."""

    lock = threading.Lock()
    address: str | None = None
    users = 0
    actor_class: Any = None

    @classmethod
    def acquire(cls, address: str, node_ip_address: str | None) -> Any:
        ray = _ray()
        with cls.lock:
            if cls.users and cls.address != address:
                raise InvalidInput(
                    f"this process is connected to the Ray cluster at {cls.address}: "
                    f"one process reaches one Ray cluster, not also {address}"
                )
            if not ray.is_initialized():
                options: dict[str, Any] = {}
                if node_ip_address:
                    options["_node_ip_address"] = node_ip_address
                ray.init(
                    address=address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    **options,
                )
            if cls.actor_class is None:
                from ray import cloudpickle

                from plinth.compute.executors import _ray_actor

                cloudpickle.register_pickle_by_value(_ray_actor)  # nodes need no Plinth
                cls.actor_class = ray.remote(_ray_actor.WorkerActor)
            cls.address = address
            cls.users += 1
            return cls.actor_class

    @classmethod
    def release(cls) -> None:
        ray = _ray()
        with cls.lock:
            cls.users = max(0, cls.users - 1)
            if cls.users == 0 and ray.is_initialized():
                ray.shutdown()
                cls.address = None


class RayExecutor:
    """Workers as detached Ray actors on the cluster at ``address`` (``host:port`` of
    its GCS, or ``ray://host:port`` through Ray Client). ``node_ip_address``: this
    machine's address as the cluster knows it, when Ray cannot tell on its own."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        node_ip_address: str | None = None,
        gang_strategy: str = "STRICT_SPREAD",
        gang_timeout: float = 60.0,
    ) -> None:
        if not address:
            raise InvalidInput("a Ray pool needs `address`: its cluster's host:port")
        if gang_strategy not in _STRATEGIES:
            raise InvalidInput(f"gang_strategy must be one of {', '.join(_STRATEGIES)}")
        self.address = address
        self._node_ip = node_ip_address
        self._strategy = gang_strategy
        self._gang_timeout = gang_timeout
        self._actor_class: Any = None
        self._actors: dict[str, Any] = {}  # name -> handle, looked up once
        self._groups: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- connection ---------------------------------------------------------------

    def _connect(self) -> Any:
        with self._lock:
            if self._actor_class is None:
                self._actor_class = _Connection.acquire(self.address, self._node_ip)
            return self._actor_class

    def close(self) -> None:
        """Disconnect (with the last executor of this process); actors keep running."""
        with self._lock:
            connected, self._actor_class = self._actor_class is not None, None
            self._actors.clear()
            self._groups.clear()
        if connected:
            _Connection.release()

    # -- the interface --------------------------------------------------------------

    def launch(self, spec: Launch) -> Handle:
        """Create the worker's actor; returns once Ray has registered it (it may still
        wait for resources). A gang's first launch reserves its placement group and
        raises if Ray cannot reserve all of it within ``gang_timeout``."""
        actor_class = self._connect()
        name = actor_name(spec.job_id, spec.attempt, spec.rank)
        world, per_unit = _gang_shape(spec)
        cpus = float(len(spec.cpu_ids) or 1)
        options: dict[str, Any] = {
            "name": name,
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "max_restarts": 0,
            "max_concurrency": 4,
            "num_cpus": cpus,
            "num_gpus": len(spec.gpu_ids),
        }
        if spec.memory_bytes:
            options["memory"] = spec.memory_bytes
        data: dict[str, Any] = {"name": name, "exit": str(_exit_path(spec.log_path))}
        if world > 1:
            group = self._group(spec, world, per_unit, cpus)
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=spec.rank // per_unit
            )
            data["gang"] = {"group": _group_name(spec), "world": world}
        elif _is_ip(spec.node):
            options["resources"] = {f"node:{spec.node}": 0.001}
        env = dict(spec.env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in spec.gpu_ids)
        actor = actor_class.options(**options).remote(
            list(spec.argv),
            env,
            str(spec.cwd),
            str(spec.log_path),
            spec.memory_bytes,
        )
        data["actor"] = actor._actor_id.hex()
        with self._lock:
            self._actors[name] = actor
        return Handle(self.name, name, data)

    def poll(self, handle: Handle) -> Status:
        self._connect()
        ray = _ray()
        actor = self._find(handle)
        if actor is not None:
            try:
                now = ray.get(actor.status.remote(), timeout=_ANSWER_SECONDS)
            except ray.exceptions.GetTimeoutError:
                return Status("running")  # waiting for resources, or busy: not gone
            except ray.exceptions.RayActorError:
                now = None  # it ended between the lookup and the call
            if now is not None and now["code"] is None:
                return Status("running")
        # Gone (or ending): the record it writes before it leaves says how it ended.
        record = _read_record(Path(handle.data["exit"]))
        self._ended(handle)
        if record is None or record.get("actor") != handle.data.get("actor"):
            return Status("lost", reason=_LOST)
        return Status("exited", int(record["code"]), record.get("reason"))

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        self._connect()
        actor = self._find(handle)
        if actor is not None:
            actor.stop.remote(float(grace_seconds))  # fire and forget: SIGTERM, then KILL

    # -- actors and groups ------------------------------------------------------------

    def _find(self, handle: Handle) -> Any:
        """The live actor of this handle, or None: gone, or a different actor under
        the same name (never signalled)."""
        ray = _ray()
        name = handle.data.get("name", handle.ident)
        with self._lock:
            actor = self._actors.get(name)
        if actor is None:
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                return None
        if actor._actor_id.hex() != handle.data.get("actor"):
            return None  # another actor under this name: not ours to touch
        with self._lock:
            self._actors[name] = actor
        return actor

    def _ended(self, handle: Handle) -> None:
        """Forget the actor; a gang's last ended worker removes the gang's group."""
        name = handle.data.get("name", handle.ident)
        with self._lock:
            self._actors.pop(name, None)
        gang = handle.data.get("gang")
        if not gang:
            return
        prefix, own = name.rsplit("-", 1)
        for rank in range(int(gang["world"])):
            if str(rank) != own and self._still_running(f"{prefix}-{rank}"):
                return
        self._remove_group(gang["group"])

    def _still_running(self, name: str) -> bool:
        ray = _ray()
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
            return ray.get(actor.status.remote(), timeout=_ANSWER_SECONDS)["code"] is None
        except (ValueError, ray.exceptions.RayActorError):
            return False  # gone (or never started)
        except ray.exceptions.GetTimeoutError:
            return True

    def _group(self, spec: Launch, world: int, per_unit: int, cpus: float) -> Any:
        """The attempt's placement group, reserved all at once or not at all."""
        ray = _ray()
        pg = _pg()
        name = _group_name(spec)
        with self._lock:
            group = self._groups.get(name)
        if group is not None:
            return group
        try:
            group = pg.get_placement_group(name)
        except ValueError:
            units = -(-world // per_unit)
            bundle: dict[str, float] = {"CPU": cpus * per_unit}
            if spec.gpu_ids:
                bundle["GPU"] = float(len(spec.gpu_ids) * per_unit)
            if spec.memory_bytes:
                bundle["memory"] = float(spec.memory_bytes * per_unit)
            group = pg.placement_group(
                [dict(bundle) for _ in range(units)],
                strategy=self._strategy,
                name=name,
                lifetime="detached",
            )
        try:
            ray.get(group.ready(), timeout=self._gang_timeout)
        except ray.exceptions.GetTimeoutError:
            pg.remove_placement_group(group)
            raise RuntimeError(
                f"Ray could not reserve the gang of job {spec.job_id} "
                f"({world} workers, {self._strategy}) within {self._gang_timeout:g} s: "
                "none of it was started"
            ) from None
        with self._lock:
            self._groups[name] = group
        return group

    def _remove_group(self, name: str) -> None:
        pg = _pg()

        with self._lock:
            group = self._groups.pop(name, None)
        if group is None:
            try:
                group = pg.get_placement_group(name)
            except ValueError:
                return
        try:
            pg.remove_placement_group(group)
        except Exception as exc:  # already removed by another server: fine
            log.debug("removing placement group %s: %s", name, exc)


def _pg() -> Any:
    import importlib

    return importlib.import_module("ray.util.placement_group")


def actor_name(job_id: str, attempt: int, rank: int) -> str:
    return f"plinth-{job_id}-{attempt}-{rank}"


def _group_name(spec: Launch) -> str:
    return f"plinth-{spec.job_id}-{spec.attempt}-gang"


def _gang_shape(spec: Launch) -> tuple[int, int]:
    """(processes in the gang, processes per unit) from the rendezvous environment."""
    try:
        world = int(spec.env.get("WORLD_SIZE", "1"))
        per_unit = int(spec.env.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        return 1, 1
    return max(world, 1), max(per_unit, 1)


def _is_ip(node: str) -> bool:
    parts = node.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _exit_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".exit")


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "code" in record else None
