"""What the Ray executor runs on the cluster: one launcher actor per Ray node, and the
Ray task that runs one worker.

This module is shipped to the Ray cluster *by value* (cloudpickle), so a Ray node needs
nothing of Plinth installed (except to fetch snapshots, below): it imports only the
standard library and Ray (``psutil`` too, for a memory limit), and nothing here may
import ``plinth``.

- ``run_worker`` is a plain Ray task: it starts the worker's argv as a subprocess in
  its own session, waits for it (enforcing its memory limit and carrying out a stop)
  and returns the exit code and reason. A task runs in one of Ray's pooled worker
  processes, so a short worker costs what a raw Ray task costs, not a new process of
  its own as an actor would.
- ``Launcher`` is a detached, named actor (``plinth-launcher-<node id>``, 0 CPUs,
  pinned to its node) that *owns* the tasks it submits: they outlive the Plinth server
  that asked for them, and a restarted server asks the same launcher about them by
  name. It keeps each worker's result (for hours), learning it from Ray as the task
  ends, so a status call reads memory and nothing else. Each end also gets a number
  in the order of ends, so a poller that keeps the number of its last answer is told
  only what ended since (``changes``), not the state of every worker it watches.
- Where the nodes do not share the Plinth server's disk (the executor's
  ``shared_filesystem=False``), a task works in a private directory of its own on its
  node: it fetches the job's snapshot there from the server (``python -m
  plinth.compute.fetch``, with the job's URL and token), runs the worker in it, and
  appends its output to a log beside it, which the executor reads back through the
  launchers (``read_log``) while the worker runs and once it has ended; the directory
  goes once its log has been read to its end (or six hours after the worker ended).
- A **stop** is a small file on the node where the worker runs (a private directory
  under the temporary directory, named by a hash of the worker's name): the launcher
  writes it on the worker's node (every node, for a worker Ray placed), and the task,
  which looks for it every tenth of a second, sends SIGTERM to the process group and
  SIGKILL when the grace ends. No call goes from a task to a launcher.

A worker's identity is its name (``plinth-<job>-<attempt>-<rank>``) and a random token
made at launch: a query with another token is told the worker is lost, and a stop with
another token stops nothing.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

NAMESPACE = "plinth"
KEEP_SECONDS = 6 * 3600  # an ended worker's result, for a server that was down a while
ABANDONED_SECONDS = 7 * 86400  # a worker directory with no end and no output this long
LOST = "its Ray task is gone without an exit record (its node or its process died)"
UNKNOWN = "its launcher does not know it (the launcher was restarted, or another worker)"
NOT_SHARED = "the job's working directory is not on this Ray node"
STOPPED_EARLY = "stopped before it started"
FETCH_FAILED = "fetching the job's snapshot from the Plinth server failed"
_NOT_SHARED_LOG = (
    "plinth: the job's working directory {cwd} is not on this Ray node: a Ray pool's "
    "nodes must share the Plinth server's disk (its home), see docs/ray.md\n"
)


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (Ray's carry whole remote tracebacks)."""
    return (str(exc).strip().splitlines() or [""])[0]


def token_digest(token: str) -> str:
    """What a list of ends says of a worker's token (the token itself stays private)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def launcher_name(node_id: str) -> str:
    return f"plinth-launcher-{node_id}"


@cache
def _launcher_class() -> Any:
    import ray

    return ray.remote(Launcher)


def launcher_on(node_id: str) -> Any:
    """The launcher of Ray node ``node_id``, made there (detached, no CPUs) if it is
    not yet: every caller gets the same one by its name."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return (
        _launcher_class()
        .options(
            name=launcher_name(node_id),
            namespace=NAMESPACE,
            get_if_exists=True,
            lifetime="detached",
            num_cpus=0,
            max_restarts=0,
            max_concurrency=8,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        )
        .remote()
    )


# -- the worker task --------------------------------------------------------------------


def run_worker(
    argv: list[str],
    env: dict[str, str],
    cwd: str | None,
    log_path: str | None,
    memory_bytes: int | None,
    snapshot: str | None,
    name: str,
    token: str,
) -> dict[str, Any]:
    """Run one worker to its end: ``{"code": N, "reason": why Plinth ended it | None}``.
    While it runs, it carries out a stop asked for on this node (``ask_stop``) and
    its memory limit. ``cwd`` None: the nodes do not share the server's disk, so the
    worker gets a directory of its own on this node, with ``snapshot`` (PROJECT/DIGEST)
    fetched into it, and its log beside it."""
    stop = _stop_path(name)
    if _stop_asked(stop, token) is not None:
        return {"code": 128 + signal.SIGTERM, "reason": STOPPED_EARLY}
    shipped = cwd is None
    proc = None
    try:
        try:
            if cwd is None or log_path is None:
                cwd, log_path = _own_dir(name, token)
            started = _start(argv, env, cwd, log_path, snapshot, shipped, stop, token)
        except (OSError, RuntimeError) as exc:  # a full disk, a folder not ours
            why = f"the worker could not be set up on its Ray node: {first_line(exc)}"
            return {"code": 127, "reason": why[:500]}
        if isinstance(started, dict):  # it never started
            return started
        proc = started
        return _watch(proc, memory_bytes, stop, token)
    finally:
        if proc is not None:
            _signal_group(proc.pid, signal.SIGKILL)  # what it left behind is freed too
        with contextlib.suppress(OSError):
            os.unlink(stop)
        if shipped and cwd is not None:  # the log stays until it is read
            shutil.rmtree(cwd, ignore_errors=True)
            with contextlib.suppress(OSError), open(_ended_marker(os.path.dirname(cwd)), "w"):
                pass


def _start(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    log_path: str,
    snapshot: str | None,
    shipped: bool,
    stop: str,
    token: str,
) -> subprocess.Popen[bytes] | dict[str, Any]:
    """The worker's process, started in ``cwd`` (fetched first when ``shipped``) with
    its output appended to ``log_path``; or its end, when it cannot start."""
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if shipped:
            fetched = _fetch(snapshot, cwd, env, out, stop, token)
            if fetched is not None:
                return fetched
        elif not os.path.isdir(cwd):
            os.write(out, _NOT_SHARED_LOG.format(cwd=cwd).encode())
            return {"code": 127, "reason": NOT_SHARED}
        try:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: a stop reaches its children
            )
        except OSError as exc:
            os.write(out, f"plinth: cannot start {argv[0]!r}: {exc}\n".encode())
            return {"code": 127, "reason": None}
    finally:
        os.close(out)


def _fetch(
    snapshot: str | None, cwd: str, env: dict[str, str], out: int, stop: str, token: str
) -> dict[str, Any] | None:
    """The job's snapshot fetched from the Plinth server into ``cwd`` (an empty
    ``cwd`` for a job without one); None when done, else the worker's end."""
    if not snapshot:
        os.makedirs(cwd, exist_ok=True)
        return None
    command = [sys.executable, "-m", "plinth.compute.fetch", cwd]
    own = os.path.dirname(cwd)  # its temporary files go with the worker's directory
    try:
        proc = subprocess.Popen(
            command,
            env={**env, "PLINTH_SNAPSHOT": snapshot, "TMPDIR": own},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        os.write(out, f"plinth: cannot fetch the job's snapshot: {exc}\n".encode())
        return {"code": 127, "reason": FETCH_FAILED}
    try:
        ended = _watch(proc, None, stop, token)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
    if ended["code"] == 0:
        return None
    if ended["reason"] is None and _stop_asked(stop, token) is not None:
        return {"code": ended["code"], "reason": STOPPED_EARLY}
    return {"code": ended["code"], "reason": ended["reason"] or FETCH_FAILED}


def _watch(
    proc: subprocess.Popen[bytes], memory_bytes: int | None, stop: str, token: str
) -> dict[str, Any]:
    """Wait for the process, checking every tenth of a second for a stop (SIGTERM at
    once, SIGKILL at its deadline) and for its memory use going over the limit."""
    ended = threading.Event()

    def wait() -> None:
        proc.wait()
        ended.set()

    threading.Thread(target=wait, name="plinth-worker", daemon=True).start()
    reason: str | None = None
    termed = False
    while not ended.wait(0.1):
        if reason is not None:
            continue
        asked = _stop_asked(stop, token)
        if asked is not None:
            deadline, no_grace = asked
            if time.time() >= deadline:
                reason = (
                    "killed: stopped with no grace period (0 s)"
                    if no_grace
                    else "killed: still running when the stop's grace period ended"
                )
                _signal_group(proc.pid, signal.SIGKILL)
            elif not termed:
                termed = True
                _signal_group(proc.pid, signal.SIGTERM)
        if memory_bytes and reason is None and (used := _group_rss(proc.pid)) > memory_bytes:
            reason = f"memory limit exceeded ({_size(used)} over {_size(memory_bytes)})"
            _signal_group(proc.pid, signal.SIGKILL)
    code = proc.returncode
    return {"code": 128 - code if code < 0 else code, "reason": reason}


# -- stop requests: a small file per worker, on the node where it runs -------------------


def _node_path(folder: str, name: str) -> str:
    """Worker ``name``'s entry in ``folder``, a private directory of this user under
    this node's temporary directory; the name is hashed, never a path."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return os.path.join(tempfile.gettempdir(), f"{folder}-{os.getuid()}", digest)


def _stop_path(name: str) -> str:
    """Where a stop for worker ``name`` is asked on this node."""
    return _node_path("plinth-ray", name)


def _private(folder: str) -> bool:
    """Whether ``folder`` is a directory of this user that nobody else may enter: one
    made first by somebody else under a shared temporary directory is never used."""
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _stop_asked(path: str, token: str) -> tuple[float, bool] | None:
    """(deadline, asked with no grace) of the stop asked for this worker, or None."""
    if not _private(os.path.dirname(path)):
        return None
    try:
        with open(path) as f:
            asked = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(asked, dict) or asked.get("token") != token:
        return None
    return float(asked["deadline"]), bool(asked["no_grace"])


def ask_stop(name: str, token: str, grace_seconds: float) -> None:
    """Ask the worker on this node to stop: SIGTERM now, SIGKILL once the grace ends.
    A later request with a later deadline changes nothing."""
    path = _stop_path(name)
    deadline = time.time() + max(grace_seconds, 0.0)
    earlier = _stop_asked(path, token)
    if earlier is not None and earlier[0] <= deadline:
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if not _private(folder):
        raise RuntimeError(f"{folder} is not a private directory of this user: not used")
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(out, "w") as f:
        json.dump({"token": token, "deadline": deadline, "no_grace": grace_seconds <= 0}, f)
    os.replace(tmp, path)


def _prune_stops(older_than: float) -> None:
    """Remove stop requests no worker came to read (asked on every node for a worker
    that ran on one)."""
    for entry in _entries(os.path.dirname(_stop_path("x"))):
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < older_than:
                os.unlink(entry.path)


def _entries(folder: str) -> list[os.DirEntry[str]]:
    """What ``folder`` holds, when it is a private directory of this user."""
    if not _private(folder):
        return []
    try:
        return list(os.scandir(folder))
    except OSError:
        return []


# -- a worker's own directory, where the nodes do not share the server's disk ------------


def _own_path(name: str) -> str:
    """Where worker ``name`` works on this node."""
    return _node_path("plinth-ray-work", name)


def _own_dir(name: str, token: str) -> tuple[str, str]:
    """(cwd, log) of worker ``name`` on this node, made afresh, with its token beside
    them: only a reader with the token reads the log."""
    where = _own_path(name)
    folder = os.path.dirname(where)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if not _private(folder):
        raise RuntimeError(f"{folder} is not a private directory of this user: not used")
    shutil.rmtree(where, ignore_errors=True)  # an earlier run's, under the same name
    os.makedirs(where, mode=0o700)
    with open(os.path.join(where, "token"), "w") as f:
        f.write(token)
    return os.path.join(where, "work"), os.path.join(where, "log")


def read_log_here(name: str, token: str, offset: int, limit: int, drop: bool) -> bytes | None:
    """Up to ``limit`` bytes of the log of worker ``name`` on this node from ``offset``;
    None when it has no log here (or another token). ``drop``: the worker has ended,
    so its directory goes when a read finds nothing more (the reader had it all)."""
    where = _own_path(name)
    if not _private(os.path.dirname(where)):
        return None
    try:
        with open(os.path.join(where, "token")) as f:
            if f.read() != token:
                return None
        with open(os.path.join(where, "log"), "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except OSError:
        return None
    if drop and not data:  # read to its end, and written where it was asked for
        shutil.rmtree(where, ignore_errors=True)
    return data


def _ended_marker(where: str) -> str:
    """The file a worker's own directory gets when the worker has ended."""
    return os.path.join(where, "ended")


def _prune_own(ended_before: float, abandoned_before: float) -> None:
    """Remove the directories of workers whose log nobody came to read: ended before
    ``ended_before``, or without an end (their task died) and untouched since
    ``abandoned_before``. A worker still running is never touched."""
    for entry in _entries(os.path.dirname(_own_path("x"))):
        with contextlib.suppress(OSError):
            marker = _ended_marker(entry.path)
            if os.path.exists(marker):
                old = os.stat(marker).st_mtime < ended_before
            else:
                old = os.stat(os.path.join(entry.path, "log")).st_mtime < abandoned_before
            if old:
                shutil.rmtree(entry.path, ignore_errors=True)


# -- the launcher -----------------------------------------------------------------------


@dataclass
class _Worker:
    name: str
    token: str
    ref: Any  # the task's ObjectRef
    here: bool  # pinned to this launcher's node (else anywhere: stops go to every node)
    result: dict[str, Any] | None = None
    ended_at: float = 0.0


class Launcher:
    """Submits, owns, answers for and stops the workers it launched (see the module)."""

    def __init__(self) -> None:
        import ray

        self._node = ray.get_runtime_context().get_node_id()
        self._task: Any = ray.remote(max_retries=0)(run_worker)
        self._submitters: dict[tuple[Any, ...], Any] = {}  # by resources and placement
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._seq = 0  # the number of the latest end
        # (number, name, token digest, result, when): each end, in order, kept as long
        # as its worker; every end up to ``_forgotten`` is no longer in it
        self._ends: collections.deque[tuple[int, str, str, dict[str, Any], float]] = (
            collections.deque()
        )
        self._forgotten = 0
        self._log_nodes: dict[str, str] = {}  # worker name -> the node its log is on
        self._pruned_at = time.time()

    def launch(self, items: list[tuple[str, str, tuple[Any, ...], dict[str, Any], Any]]) -> None:
        """Submit each worker's task. An item: (name, token, args, options, placement);
        ``args``: ``run_worker``'s first six; ``options``: Ray's resources for it;
        ``placement``: ``{"node": id}`` (pinned here), ``{"group": pg, "bundle": i}``
        (a gang's), or empty (Ray chooses)."""
        for name, token, args, options, placement in items:
            submit = self._submitter(options, placement)
            ref = submit.remote(*args, name, token)  # keyword arguments: 4x dearer
            worker = _Worker(name, token, ref, here=placement.get("node") == self._node)
            with self._lock:
                self._prune()
                self._workers[name] = worker
            ref.future().add_done_callback(partial(self._settle, worker))

    def _submitter(self, options: dict[str, Any], placement: dict[str, Any]) -> Any:
        """The task with these resources and this placement, made once for each (1,000
        workers of one shape use one): Ray's ``options`` merges and validates them anew
        on every call, and its submits measured dearer than a reused one's."""
        from ray.util.scheduling_strategies import (
            NodeAffinitySchedulingStrategy,
            PlacementGroupSchedulingStrategy,
        )

        group = placement.get("group")
        key = (
            tuple(sorted(options.items())),
            placement.get("node"),
            None if group is None else group.id.hex(),
            placement.get("bundle"),
        )
        found = self._submitters.get(key)
        if found is None:
            options = dict(options)
            if "node" in placement:
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                    placement["node"], soft=False
                )
            elif group is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=placement["bundle"]
                )
            if len(self._submitters) >= 1024:  # gangs' groups come and go
                self._submitters.clear()
            found = self._submitters[key] = self._task.options(**options)
        return found

    def status(self, queries: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
        """Each (name, token)'s state, in order: running, exited (code, reason) or lost.
        A token of None matches any worker under the name (to see whether a gang still
        runs)."""
        with self._lock:
            return self._answers(queries)

    def changes(
        self, since: int | None, queries: list[tuple[str, str | None]]
    ) -> tuple[int, list[tuple[str, str, dict[str, Any]]] | None, list[dict[str, Any]]]:
        """For a poller that keeps count: (the number of the latest end, each end after
        end ``since`` as (name, ``token_digest``, result), the ``status`` of each of
        ``queries``), all as of one moment. The ends are None when ``since`` is None
        or older than the oldest end kept: the poller must ask about each worker."""
        with self._lock:
            ends = None
            if since is not None and since >= self._forgotten:
                after: int = since
                newer = itertools.takewhile(lambda end: end[0] > after, reversed(self._ends))
                ends = [(name, digest, result) for _, name, digest, result, _ in newer][::-1]
            return self._seq, ends, self._answers(queries)

    def stop(self, name: str, token: str, grace_seconds: float) -> None:
        """Ask the worker to stop where it runs (this node when it was pinned here, else
        every node, since Ray chose); an ended or unknown worker: nothing."""
        import ray

        with self._lock:
            worker = self._workers.get(name)
            if worker is None or worker.token != token or worker.result is not None:
                return
        if worker.here:
            ask_stop(name, token, grace_seconds)
            return
        for node in ray.nodes():
            if not node["Alive"]:
                continue
            if node["NodeID"] == self._node:
                ask_stop(name, token, grace_seconds)
            else:
                launcher_on(node["NodeID"]).ask_stop.remote(name, token, grace_seconds)

    def ask_stop(self, name: str, token: str, grace_seconds: float) -> None:
        """A stop for a worker that may run on this node (see ``ask_stop``)."""
        ask_stop(name, token, grace_seconds)

    def read_log(self, name: str, token: str, offset: int, limit: int, drop: bool) -> bytes | None:
        """The worker's log from ``offset`` (``read_log_here``), read on this node, or
        through the launcher of the node where Ray ran it; None: on no node (yet).
        Raises when a node that may have it did not answer."""
        import ray

        found = read_log_here(name, token, offset, limit, drop)
        if found is not None:
            return found
        with self._lock:
            worker = self._workers.get(name)
            where = self._log_nodes.get(name)
        if worker is not None and worker.here:
            return None
        nodes = [where] if where else [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        asked = {
            launcher_on(node).read_log_here.remote(name, token, offset, limit, drop): node
            for node in nodes
            if node != self._node
        }
        ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=3.0) if asked else ([], [])
        for ref in ready:
            with contextlib.suppress(ray.exceptions.RayError):
                found = ray.get(ref)
                if found is not None:
                    with self._lock:
                        self._log_nodes[name] = asked[ref]
                    return found
        if len(ready) < len(asked):  # not here, and not known to be nowhere: ask again
            raise TimeoutError(f"a node's launcher did not answer for the log of {name}")
        return None

    def read_log_here(
        self, name: str, token: str, offset: int, limit: int, drop: bool
    ) -> bytes | None:
        """The worker's log on this node (see ``read_log_here``)."""
        with self._lock:
            self._prune()  # a node whose launcher launches nothing still forgets old logs
        return read_log_here(name, token, offset, limit, drop)

    # -- inside ---------------------------------------------------------------------------

    def _answers(self, queries: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
        """``status`` (the caller holds the lock)."""
        answers = []
        for name, token in queries:
            worker = self._workers.get(name)
            if worker is None or token not in (None, worker.token):
                answers.append({"state": "lost", "reason": UNKNOWN})
            else:
                answers.append(worker.result or {"state": "running"})
        return answers

    def _settle(self, worker: _Worker, done: Future[Any]) -> None:
        """Keep the outcome of a worker's task (called by Ray when it is known)."""
        try:
            outcome = done.result()
            result = {"state": "exited", "code": outcome["code"], "reason": outcome["reason"]}
        except Exception as exc:  # its Ray worker process (or its node) died
            result = {"state": "lost", "reason": f"{LOST}: {first_line(exc)}"[:500]}
        with self._lock:
            worker.result, worker.ended_at = result, time.time()
            self._seq += 1
            digest = token_digest(worker.token)
            self._ends.append((self._seq, worker.name, digest, result, worker.ended_at))

    def _prune(self) -> None:
        """Forget results kept longer than KEEP_SECONDS, and stop requests as old, at
        most once a minute (the caller holds the lock)."""
        now = time.time()
        if now - self._pruned_at < 60:
            return
        self._pruned_at = now
        old = now - KEEP_SECONDS
        for name in [n for n, w in self._workers.items() if w.result and w.ended_at < old]:
            del self._workers[name]
            self._log_nodes.pop(name, None)
        while self._ends and self._ends[0][4] < old:
            self._forgotten = self._ends.popleft()[0]
        _prune_stops(old)
        _prune_own(old, now - ABANDONED_SECONDS)


# -- processes --------------------------------------------------------------------------


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_rss(pgid: int) -> int:
    import psutil

    total = 0
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid:
                total += proc.memory_info().rss
    return total


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
