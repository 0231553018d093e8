"""The Ray executor: each worker a Ray task, submitted and owned by a detached
launcher actor on the cluster, which answers for it by name.

A pool ``executor: ray`` with ``address`` runs here. Plinth decides what runs and when;
Ray hosts the processes. The pieces that run on the cluster are in ``_ray_launcher``
(shipped by value, so Ray nodes need nothing of Plinth but, without a shared
filesystem, its snapshot fetcher):

- each Ray node that runs Plinth work gets one **launcher**, a detached actor named
  ``plinth-launcher-<node id>`` in the ``plinth`` namespace, with no CPUs of its own;
- each worker (``plinth-<job>-<attempt>-<rank>``) is a plain Ray **task** that its
  launcher submits with the worker's CPUs, GPUs and memory (so Ray's accounting agrees
  with Plinth's) and that runs the argv as a subprocess, never through a shell, with
  exactly the given environment plus ``CUDA_VISIBLE_DEVICES`` from Plinth's placement.
  A task runs in one of Ray's pooled worker processes, so a short worker costs about
  what a raw Ray task does. The launcher owns the task, so it outlives the Plinth
  server that asked for it; a restarted server's executor asks the launcher named in
  the handle (adoption), and checks the launcher's actor id and the worker's token.

Where a worker runs:
- a gang (``WORLD_SIZE`` > 1 in its environment, as ``launch.workers`` sets) gets a
  detached placement group, one bundle per unit (a unit's processes share it), made on
  the first launch of the attempt and waited for up to ``gang_timeout``: all of it is
  reserved or the launch fails and nothing of it stays (Ray places a group atomically).
  Strategy ``STRICT_SPREAD`` (each unit on its own Ray node, as Plinth placed units on
  distinct nodes), configurable. The group is removed once every worker of the gang has
  ended, by the poll that finds the last one ended;
- a single worker whose Plinth node is named by a Ray node's IP is pinned to that node,
  and launched by that node's launcher (a node that dies takes only its own work with
  it); otherwise Ray chooses, and the launcher on this process's own node launches it.

Polls are answered in batches: one call to a launcher answers for every worker this
executor watches there, and an answer is reused for ``FRESH_SECONDS`` (a worker first asked
about meanwhile counts as running until the next: a round of polls over 100 new
workers makes one call, not 100). A call asks about the workers the launcher has not
yet said it runs, and learns what ended since the last call (``Launcher.changes``): it
costs what changed, not what is watched (1,000 running workers are not sent and
answered 50 times a second).

Where the work is: with ``shared_filesystem`` (the default) the Ray nodes see the
Plinth server's disk at the same paths (one machine, or a shared mount), and the
worker's ``cwd`` (the unpacked snapshot) and log are paths on it. Without, each task
fetches the job's snapshot from the server into a private directory on its node (as a
Kubernetes pod's init container does, with the job's URL and token), and its log,
written beside it, is read back through the launchers by ``poll``: every
``log_interval`` seconds while it runs, and to its end once it has ended, into the
server's log path; then the node's directory goes.

Connection: ``ray.init(address=…, namespace="plinth")`` once per process, lazily, on
first use; Ray allows one connection per process, shared by every instance here.
``close()`` releases this instance's share and disconnects with the last one,
leaving the workers running. Ray's token auth comes from the environment
(``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), as for any Ray process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plinth.compute.executors import Handle, Launch, Status
from plinth.compute.executors import _ray_launcher as remote
from plinth.errors import InvalidInput

log = logging.getLogger(__name__)

NAMESPACE = remote.NAMESPACE
BATCH_SECONDS = 0.002  # launches to one launcher this close together go in one call
BATCH_SIZE = 64
FRESH_SECONDS = 0.02  # a launcher's answer is reused this long for the other polls
_ANSWER_SECONDS = 5.0  # a call slower than this: the launcher is busy, not gone
LOG_CHUNK = 4 << 20  # a worker's log is read back this much per call at most
LOG_GIVE_UP_SECONDS = 30.0  # an ended worker's log end unreadable this long: ended without
_OLD_HANDLE = "it was started by an earlier Plinth (one Ray actor per worker)"
_STRATEGIES = ("STRICT_SPREAD", "SPREAD", "PACK", "STRICT_PACK")
_RUNNING = Status("running")
_RAY_MODULE: Any = None
_Answer = dict[str, Any]
_Key = tuple[str, str | None]  # (worker name, token)


@dataclass
class _View:
    """What this executor knows of the workers it watches at one launcher (one actor:
    a launcher made anew under the same name is another view)."""

    watched: set[_Key] = field(default_factory=set)
    by_digest: dict[tuple[str, str | None], _Key] = field(default_factory=dict)  # ends' keys
    new: set[_Key] = field(default_factory=set)  # neither said running nor ended yet
    running: set[_Key] = field(default_factory=set)  # said running by the launcher
    ended: dict[_Key, _Answer] = field(default_factory=dict)
    seq: int | None = None  # the number of the launcher's latest end it told of
    at: float = 0.0  # when it last answered

    def watch(self, key: _Key) -> None:
        if key not in self.watched:
            self.watched.add(key)
            self.new.add(key)
            self.by_digest[_digested(key)] = key

    def forget(self, key: _Key) -> None:
        if key in self.watched:
            self.watched.discard(key)
            self.by_digest.pop(_digested(key), None)
        for known in (self.new, self.running):
            known.discard(key)
        self.ended.pop(key, None)

    def learn(
        self,
        seq: int | None,
        ends: list[tuple[str, str, _Answer]] | None,
        queries: list[_Key],
        answers: list[_Answer],
    ) -> None:
        """Take a launcher's ``changes`` (``seq`` None: its ``status``, from a launcher
        that keeps no count, whose workers are all asked about each time). Ends of None
        after an earlier answer: the launcher kept too few to say what ended since, so
        every worker not known to have ended is asked about anew."""
        counted = seq is not None
        lapsed = counted and ends is None and self.seq is not None
        for key, answer in zip(queries, answers, strict=True):
            if key not in self.watched:  # its poll went final meanwhile
                continue
            if answer["state"] != "running":
                self.new.discard(key)
                self.ended[key] = answer
            elif counted:
                self.new.discard(key)
                self.running.add(key)
        for name, digest, result in ends or ():
            for found in (self.by_digest.get((name, digest)), self.by_digest.get((name, None))):
                if found is not None:
                    self.new.discard(found)
                    self.running.discard(found)
                    self.ended[found] = result
        if lapsed:
            self.new |= self.running
            self.running.clear()
        self.seq = None if lapsed else seq
        self.at = time.monotonic()


def _digested(key: _Key) -> tuple[str, str | None]:
    """A watched worker as a launcher's list of ends names it."""
    name, token = key
    return name, None if token is None else remote.token_digest(token)


def _ray() -> Any:
    """The ``ray`` module, imported on first use (once whole: every poll asks for it)."""
    global _RAY_MODULE
    if _RAY_MODULE is None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - the dev install has it
            raise InvalidInput("the Ray executor needs Ray: pip install 'plinth[ray]'") from exc
        _RAY_MODULE = ray
    return _RAY_MODULE


class _Connection:
    """The process's one Ray connection, shared by executors by reference count."""

    lock = threading.Lock()
    address: str | None = None
    users = 0

    @classmethod
    def acquire(cls, address: str, node_ip_address: str | None) -> None:
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
                from ray import cloudpickle

                cloudpickle.register_pickle_by_value(remote)  # nodes need no Plinth
            cls.address = address
            cls.users += 1

    @classmethod
    def release(cls) -> None:
        ray = _ray()
        with cls.lock:
            cls.users = max(0, cls.users - 1)
            if cls.users == 0 and ray.is_initialized():
                ray.shutdown()
                cls.address = None


class RayExecutor:
    """Workers as Ray tasks on the cluster at ``address`` (``host:port`` of its GCS,
    or ``ray://host:port`` through Ray Client). ``node_ip_address``: this machine's
    address as the cluster knows it, when Ray cannot tell on its own."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        node_ip_address: str | None = None,
        gang_strategy: str = "STRICT_SPREAD",
        gang_timeout: float = 60.0,
        shared_filesystem: bool = True,
        log_interval: float = 1.0,
    ) -> None:
        if not address:
            raise InvalidInput("a Ray pool needs `address`: its cluster's host:port")
        if gang_strategy not in _STRATEGIES:
            raise InvalidInput(f"gang_strategy must be one of {', '.join(_STRATEGIES)}")
        self.address = address
        self._node_ip = node_ip_address
        self._strategy = gang_strategy
        self._gang_timeout = gang_timeout
        self._shared = shared_filesystem
        self._log_interval = log_interval
        self._log_read: dict[_Key, float] = {}  # when a shipped log was last read back
        self._log_calls: dict[_Key, tuple[Any, int]] = {}  # a read on its way, its offset
        self._log_failing: dict[_Key, float] = {}  # since when an ended log's end fails
        self._connected = False
        self._lock = threading.Lock()
        self._nodes: dict[str, str] = {}  # Ray node IP -> node id
        self._launchers: dict[str, Any] = {}  # launcher name -> actor handle
        self._heard: set[str] = set()  # launchers that answered this executor
        self._sending: dict[_Key, Any] = {}  # launch calls not yet known to have arrived
        self._outbox: dict[str, tuple[Any, list[Any], list[_Key]]] = {}  # to send, by launcher
        self._timer: threading.Timer | None = None  # sends the outbox
        self._flushed_at = 0.0  # when the outbox was last sent
        self._groups: dict[str, Any] = {}
        self._views: dict[str, _View] = {}  # launcher actor id -> its workers asked about
        self._final: dict[_Key, Status] = {}

    # -- connection ---------------------------------------------------------------

    def _connect(self) -> None:
        if self._connected:
            return
        with self._lock:
            if not self._connected:
                _Connection.acquire(self.address, self._node_ip)
                self._connected = True

    def close(self) -> None:
        """Disconnect (with the last executor of this process); workers keep running.
        Launch calls still on their way are given a moment to arrive first."""
        self._flush()
        with self._lock:
            sending = list(self._sending.values())
        if sending:
            _ray().wait(sending, num_returns=len(sending), timeout=_ANSWER_SECONDS)
        with self._lock:
            connected, self._connected = self._connected, False
            for cache in (self._nodes, self._launchers, self._groups, self._views):
                cache.clear()
            for logs in (self._log_read, self._log_calls, self._log_failing):
                logs.clear()
            self._heard.clear()
            self._sending.clear()
            self._final.clear()
        if connected:
            _Connection.release()

    # -- the interface --------------------------------------------------------------

    def launch(self, spec: Launch) -> Handle:
        """Hand the worker to its launcher; returns once the launcher has submitted its
        task (it may still wait for resources). A gang's first launch reserves its
        placement group and raises if Ray cannot reserve all of it within
        ``gang_timeout``."""
        self._connect()
        ray = _ray()
        name = worker_name(spec.job_id, spec.attempt, spec.rank)
        world, per_unit = _gang_shape(spec)
        cpus = float(len(spec.cpu_ids) or 1)
        options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": len(spec.gpu_ids)}
        if spec.memory_bytes:
            options["memory"] = spec.memory_bytes
        data: dict[str, Any] = {"name": name, "token": uuid.uuid4().hex}
        placement: dict[str, Any] = {}
        if world > 1:
            group = self._group(spec, world, per_unit, cpus)
            placement = {"group": group, "bundle": spec.rank // per_unit}
            data["gang"] = {"group": _group_name(spec), "world": world}
        env = dict(spec.env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in spec.gpu_ids)
        args: tuple[Any, ...] = (
            list(spec.argv),
            env,
            str(spec.cwd),
            str(spec.log_path),
            spec.memory_bytes,
            None,
        )
        if not self._shared:
            if spec.snapshot and not env.get("PLINTH_URL"):
                raise InvalidInput(
                    "a Ray pool without a shared filesystem fetches each job's snapshot "
                    "from the Plinth server, and this job has no server URL: run a "
                    "`plinth server` with sign-in on and set compute.server_url"
                )
            args = (list(spec.argv), env, None, None, spec.memory_bytes, spec.snapshot)
            data["log"] = str(spec.log_path)
        for last_try in (False, True):  # once more after a launcher or node went away
            node = self._node_id(spec.node) if _is_ip(spec.node) and world == 1 else None
            item = (name, data["token"], args, options, {"node": node} if node else placement)
            home: str = node or ray.get_runtime_context().get_node_id()
            launcher, known = self._launcher(home)
            if known:  # a launcher this executor has heard from: sent with others, soon
                self._post(remote.launcher_name(home), launcher, item, _key_of(data))
                break
            try:
                ray.get(launcher.launch.remote([item]))
                with self._lock:
                    self._heard.add(remote.launcher_name(home))
                break
            except ray.exceptions.RayError:
                if last_try:
                    raise
                self._forget_launchers()
        data["launcher"] = remote.launcher_name(home)
        data["launcher_id"] = launcher._actor_id.hex()
        return Handle(self.name, name, data)

    def poll(self, handle: Handle) -> Status:
        self._connect()
        key = _key_of(handle.data, handle.ident)
        with self._lock:
            final = self._final.get(key)
            if final is not None:
                return final
            if self._still_running(handle, key):
                return _RUNNING
        failed = self._sent(key, 0.0)
        if failed == "":
            return _RUNNING  # its launch is still on its way to the launcher
        answer = {"state": "lost", "reason": failed} if failed else self._answer(handle, key)
        if answer["state"] == "running":
            if "log" in handle.data:
                self._read_log(handle, key, final=False)
            return _RUNNING
        if "log" in handle.data and not self._read_log(handle, key, final=True):
            with self._lock:
                failing = self._log_failing.setdefault(key, time.monotonic())
            if time.monotonic() - failing < LOG_GIVE_UP_SECONDS:
                return Status("running")  # ended, but its log's end is still to come
            log.warning("the end of %s's log could not be read back: ending without it", key[0])
        with self._lock:
            self._log_failing.pop(key, None)
        if answer["state"] == "exited":
            status = Status("exited", int(answer["code"]), answer.get("reason"))
        else:
            status = Status("lost", reason=answer.get("reason") or remote.LOST)
        self._ended(handle)
        with self._lock:
            if len(self._final) >= 10_000:
                self._final.pop(next(iter(self._final)))
            self._final[key] = status
            view = self._views.get(handle.data.get("launcher_id", ""))
            if view is not None:
                view.forget(key)
        return status

    def _still_running(self, handle: Handle, key: _Key) -> bool:
        """Whether the launcher's fresh answer says the worker runs, with nothing else
        to do for it (no launch to send, no log to read back): a poll's quick way,
        for the lock's holder."""
        if self._outbox or key in self._sending or "log" in handle.data:
            return False
        view = self._views.get(handle.data.get("launcher_id", ""))
        return (
            view is not None and key in view.running and time.monotonic() - view.at < FRESH_SECONDS
        )

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        self._connect()
        key = _key_of(handle.data, handle.ident)
        self._sent(key, _ANSWER_SECONDS)  # the launcher has the worker before the stop
        launcher = self._launcher_of(handle)
        if launcher is not None:  # fire and forget: SIGTERM now, SIGKILL after the grace
            launcher.stop.remote(*key, float(grace_seconds))

    def _read_log(self, handle: Handle, key: _Key, final: bool) -> bool:
        """Append what is new of a worker's node-local log to its log here: while it
        runs, one call at a time every ``log_interval`` seconds, its answer taken by a
        later poll (a poll never waits for it); once it has ended, all of it, waited
        for. Where reading goes on is the length of the log here, so a restarted
        server goes on where the last one stopped. False: the end could not be read."""
        ray = _ray()
        path = Path(handle.data["log"])
        with self._lock:
            pending = self._log_calls.pop(key, None)
        if pending is not None:
            call, offset = pending
            ready, _ = ray.wait([call], timeout=_ANSWER_SECONDS if final else 0)
            if not ready and not final:
                with self._lock:
                    self._log_calls[key] = pending
                return True
            with contextlib.suppress(ray.exceptions.RayError):
                _append(path, offset, ray.get(call, timeout=0) if ready else None)
        launcher = self._launcher_of(handle)
        if not final:
            now = time.monotonic()
            with self._lock:
                due = now - self._log_read.get(key, 0.0) >= self._log_interval
                if due:
                    self._log_read[key] = now
            if due and launcher is not None:
                offset = _size(path)
                call = launcher.read_log.remote(*key, offset, LOG_CHUNK, False)
                with self._lock:
                    self._log_calls[key] = (call, offset)
            return True
        with self._lock:
            self._log_read.pop(key, None)
        if launcher is None:
            return False
        while True:
            offset = _size(path)
            try:
                call = launcher.read_log.remote(*key, offset, LOG_CHUNK, True)
                data = ray.get(call, timeout=_ANSWER_SECONDS)
            except ray.exceptions.RayError as exc:
                log.debug("reading the log of %s: %s", key[0], remote.first_line(exc))
                return False
            if not data:  # read to its end (and dropped there), or on no node at all
                return True
            _append(path, offset, data)

    def _post(self, name: str, launcher: Any, item: tuple[Any, ...], key: _Key) -> None:
        """Queue a launch for ``launcher``: sent at once after a quiet spell, else with
        the launches of the next BATCH_SECONDS (or BATCH_SIZE of them) in one call."""
        with self._lock:
            box = self._outbox.setdefault(name, (launcher, [], []))
            box[1].append(item)
            box[2].append(key)
            full = len(box[1]) >= BATCH_SIZE
            # the first launch after a quiet spell goes at once; those right behind it wait
            # for the next call (a burst of 100 launches takes a few calls, not 100)
            first = self._timer is None and time.monotonic() - self._flushed_at >= BATCH_SECONDS
            if self._timer is None and not (full or first):
                self._timer = threading.Timer(BATCH_SECONDS, self._flush)
                self._timer.daemon = True
                self._timer.start()
        if full or first:
            self._flush()

    def _flush(self) -> None:
        """Send the queued launches, one call per launcher."""
        with self._lock:  # held while sending, so a launch is always queued or sent
            boxes, self._outbox = self._outbox, {}
            timer, self._timer = self._timer, None
            if boxes:
                self._flushed_at = time.monotonic()
            for launcher, items, keys in boxes.values():
                sent = launcher.launch.remote(items)
                for key in keys:
                    self._sending[key] = sent
        if timer is not None:
            timer.cancel()

    def _sent(self, key: _Key, timeout: float) -> str | None:
        """Whether the launch call of this worker reached its launcher: None (yes, or
        not sent from here), "" (still on its way after ``timeout``) or why it failed."""
        ray = _ray()
        self._flush()  # a launch still in the outbox goes now
        with self._lock:
            sent = self._sending.get(key)
        if sent is None:
            return None
        ready, _ = ray.wait([sent], timeout=timeout)
        if not ready:
            return ""
        with self._lock:
            self._sending.pop(key, None)
        try:
            ray.get(sent)
        except ray.exceptions.RayError as exc:
            self._forget_launchers()
            return f"its launcher did not take it: {remote.first_line(exc)}"[:500]
        return None

    def _forget_launchers(self) -> None:
        with self._lock:
            self._nodes.clear()
            self._launchers.clear()
            self._heard.clear()

    # -- launchers --------------------------------------------------------------------

    def _launcher(self, node_id: str) -> tuple[Any, bool]:
        """The launcher on ``node_id`` (made there if it is not yet), and whether this
        executor has heard from it."""
        name = remote.launcher_name(node_id)
        with self._lock:
            known = self._launchers.get(name)
            heard = name in self._heard
        if known is None:
            known = remote.launcher_on(node_id)
            with self._lock:
                self._launchers[name] = known
        return known, heard

    def _launcher_of(self, handle: Handle) -> Any:
        """The live launcher that launched this worker, or None: gone, or another
        actor under its name (which never heard of the worker)."""
        ray = _ray()
        name = handle.data.get("launcher")
        if not name:
            return None
        with self._lock:
            launcher = self._launchers.get(name)
        if launcher is None:
            try:
                launcher = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                return None
        if launcher._actor_id.hex() != handle.data.get("launcher_id"):
            return None
        with self._lock:
            self._launchers[name] = launcher
        return launcher

    def _answer(self, handle: Handle, key: _Key) -> _Answer:
        """This worker's state, from what the launcher told last when that is fresh (a
        worker first asked about now counts as running until the next answer), else
        from a new answer: about the workers it has not yet said it runs, and of every
        end since the last. A worker stays watched until its poll is final."""
        ray = _ray()
        ident = handle.data.get("launcher_id")
        if not handle.data.get("launcher") or not ident:
            return {"state": "lost", "reason": _OLD_HANDLE}
        with self._lock:
            view = self._views.setdefault(ident, _View())
            view.watch(key)
            if key in view.ended:
                return view.ended[key]
            if time.monotonic() - view.at < FRESH_SECONDS:
                return {"state": "running"}
            queries = list(view.new)
            since = view.seq
        launcher = self._launcher_of(handle)
        if launcher is None:
            return {"state": "lost", "reason": remote.LOST}
        try:
            if hasattr(launcher, "changes"):
                call = launcher.changes.remote(since, queries)
                seq, ends, answers = ray.get(call, timeout=_ANSWER_SECONDS)
            else:  # a launcher made by an earlier Plinth: asked about every worker, each time
                with self._lock:
                    queries = [k for k in view.watched if k not in view.ended]
                seq, ends = None, None
                answers = ray.get(launcher.status.remote(queries), timeout=_ANSWER_SECONDS)
        except ray.exceptions.GetTimeoutError:
            return {"state": "running"}  # busy, not gone
        except ray.exceptions.RayActorError:
            with self._lock:
                self._launchers.pop(handle.data["launcher"], None)
            return {"state": "lost", "reason": remote.LOST}
        with self._lock:
            self._heard.add(handle.data["launcher"])
            if view.seq == since:  # not overtaken by another poll's answer meanwhile
                view.learn(seq, ends, queries, answers)
            return view.ended.get(key) or {"state": "running"}

    # -- gangs ------------------------------------------------------------------------

    def _ended(self, handle: Handle) -> None:
        """A gang's last ended worker removes the gang's placement group."""
        ray = _ray()
        gang = handle.data.get("gang")
        if not gang:
            return
        name = handle.data.get("name", handle.ident)
        prefix = name.rsplit("-", 1)[0]
        ranks = (f"{prefix}-{rank}" for rank in range(int(gang["world"])))
        others: list[tuple[str, str | None]] = [(rank, None) for rank in ranks if rank != name]
        launcher = self._launcher_of(handle)
        if launcher is not None and others:
            try:
                found = ray.get(launcher.status.remote(others), timeout=_ANSWER_SECONDS)
            except ray.exceptions.GetTimeoutError:
                return  # asked again by the next poll
            except ray.exceptions.RayActorError:
                found = []
            if any(answer["state"] == "running" for answer in found):
                return
        self._remove_group(gang["group"])

    def _node_id(self, ip: str) -> str:
        """The id of the live Ray node at ``ip``."""
        with self._lock:
            known = self._nodes.get(ip)
        if known is not None:
            return known
        alive = {n["NodeManagerAddress"]: n["NodeID"] for n in _ray().nodes() if n["Alive"]}
        if ip not in alive:
            raise RuntimeError(f"no live Ray node has the address {ip}")
        with self._lock:
            self._nodes.update(alive)
        return alive[ip]

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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _append(path: Path, offset: int, data: bytes | None) -> None:
    """``data`` read from ``offset`` of a node's log, appended here when this log is
    that long (an answer overtaken by a later read is dropped, never written twice)."""
    if not data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        if out.tell() == offset:
            out.write(data)


def _pg() -> Any:
    import importlib

    return importlib.import_module("ray.util.placement_group")


def worker_name(job_id: str, attempt: int, rank: int) -> str:
    return f"plinth-{job_id}-{attempt}-{rank}"


def _key_of(data: dict[str, Any], ident: str = "") -> _Key:
    return data.get("name", ident), data.get("token")


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
    return len(parts) == 4 and all(p.isdecimal() and int(p) < 256 for p in parts)
