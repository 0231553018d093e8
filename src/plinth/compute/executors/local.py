"""The local executor: each worker a process on this machine, the embedded default.

A worker runs under a constant one-line ``/bin/sh`` wrapper that waits for the user's
command and writes its exit code to a file (``<log>.exit``, next to the log). The
wrapper is what lets a *new* server learn the real exit code of a worker that an
earlier server started and then lost (killed, restarted): the code is on disk, not in
the dead server's ``waitpid``. The user's argv is passed to the wrapper as positional
parameters, never interpolated into the script, so no shell ever parses it.

Each worker is the leader of its own session and process group, so a stop reaches its
children too. The wrapper traps SIGTERM and the like with a no-op (the job itself keeps
the default actions, since trapped signals are reset on exec) and so survives a group
SIGTERM to record ``128+N``. SIGKILL takes the wrapper down with the job; whoever sends
it (escalation after the grace period, the memory guard) writes ``137`` in its place.
A worker whose wrapper is gone without a record is ``lost``.

Files beside ``log_path`` (the dispatcher chooses it; one per worker and attempt):
``<log>.exit`` the exit code, ``<log>.stop`` the SIGKILL deadline of a stop in progress
(so a restarted server still escalates), ``<log>.reason`` why Plinth killed it.
POSIX only (``/bin/sh``, process groups).

A worker whose Launch names ``hidden`` paths (a server with sign-in) runs its argv in a
sandbox (``sandbox.py``) inside the wrapper: the wrapper, outside it, still records the
exit code where the server reads it. The wrapper and the sandbox's set-up then run with
the sandbox's own fixed environment; the job's reaches the job through a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from plinth.compute.executors import Handle, Launch, Status, _procs, sandbox
from plinth.errors import InvalidInput

log = logging.getLogger(__name__)

# Constant: $0 is the exit file, "$@" the user's argv. `unset PWD` keeps the job's
# environment exactly what it was given (dash would otherwise export one).
# $0 is what the shell names itself in its messages ("plinth-job: 1: x: not found"),
# $1 the exit record's path, kept in a variable no worker's environment may name.
_EXIT_VARIABLE = "PLINTH_EXIT_RECORD"
_WRAPPER = (
    f'trap : HUP INT QUIT TERM USR1 USR2; unset PWD; {_EXIT_VARIABLE}=$1; shift; "$@"; '
    f'code=$?; printf %s "$code" > "${_EXIT_VARIABLE}"; exit "$code"'
)
_WRAPPER_WITH_PWD = _WRAPPER.replace(" unset PWD;", "")
_LOST = (
    "the worker vanished without an exit record (its wrapper was killed, or the machine restarted)"
)
_KILLED = 128 + signal.SIGKILL
# What a POSIX shell passes on unchanged: it drops other names and rewrites these three.
_CARRIED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHELL_OWNED = frozenset({"IFS", "PPID", "OPTIND"})


@dataclass(frozen=True)
class _Worker:
    """What ``Handle.data`` holds, typed."""

    pid: int  # the wrapper: session, process group leader (pgid == pid)
    start: tuple[float, float]  # its start stamp lies in here: a reused pid never does
    exit_path: Path
    memory_bytes: int | None

    @classmethod
    def of(cls, handle: Handle) -> _Worker:
        d = handle.data
        memory = d.get("memory_bytes")
        low, high = d["start"]
        start = (float(low), float(high))
        return cls(int(d["pid"]), start, Path(d["exit"]), memory and int(memory))

    def sibling(self, suffix: str) -> Path:
        return _sibling(self.exit_path, suffix)


class LocalExecutor:
    """Workers as local processes. ``watch_interval``: how often a background thread
    checks memory limits and stop deadlines of the workers this instance started or
    stopped (``poll`` checks the same for any worker, adopted ones included)."""

    name = "local"

    def __init__(self, watch_interval: float = 0.2) -> None:
        self._interval = watch_interval
        self._clock_brackets: bool | None = None  # checked on the first launch
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # to reap what we started
        self._watched: dict[Path, _Worker] = {}
        self._swept: set[Path] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    # -- the interface -------------------------------------------------------------

    def launch(self, spec: Launch) -> Handle:
        """Start the worker; raises OSError when the OS refuses (no such ``cwd``, no
        ``/bin/sh``, out of processes), InvalidInput for an environment variable the
        wrapper cannot pass on exactly. A missing program is not an error here: the
        worker exits 127 with the shell's message in its log."""
        _check_env(spec.env)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        exit_path = spec.log_path.with_name(spec.log_path.name + ".exit")
        worker_files = [exit_path, *(_sibling(exit_path, s) for s in (".stop", ".reason"))]
        for stale in worker_files:  # a relaunch on the same log must not read old records
            stale.unlink(missing_ok=True)
        env = dict(spec.env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in spec.gpu_ids)
        script = _WRAPPER_WITH_PWD if "PWD" in spec.env else _WRAPPER
        argv = list(spec.argv)
        passed: tuple[int, ...] = ()
        out = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if spec.hidden:  # a server with sign-in: the job must not see what it keeps
                tmp = spec.cwd.parent / "tmp"  # its TMPDIR, removed with the attempt
                tmp.mkdir(mode=0o700, exist_ok=True)
                passed = (sandbox.environment(env),)
                argv[:0] = sandbox.command(spec.hidden, spec.cwd, tmp, spec.memory_bytes)
                env, script = sandbox.MACHINERY_ENV, _WRAPPER  # the job's, from the file
            before = _procs.clock()
            with _pinned(spec.cpu_ids):
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", script, "plinth-job", str(exit_path), *argv],
                    env=env,
                    cwd=spec.cwd,
                    stdin=passed[0] if passed else subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        finally:
            for fd in (out, *passed):
                os.close(fd)
        start = self._start_stamp(proc.pid, before, _procs.clock())
        self._children[proc.pid] = proc
        data = {"pid": proc.pid, "start": list(start), "exit": str(exit_path)}
        if spec.memory_bytes:
            data["memory_bytes"] = spec.memory_bytes
        handle = Handle(self.name, str(proc.pid), data)
        if spec.memory_bytes:
            self._watch(_Worker.of(handle))
        return handle

    def _start_stamp(
        self, pid: int, before: float | None, after: float | None
    ) -> tuple[float, float]:
        """The range the new worker's start stamp lies in: the clock readings around
        its spawn, once the first launch has shown that they do bracket it (they would
        not under a kernel that stamps processes otherwise); else the stamp itself."""
        if before is not None and after is not None and self._clock_brackets is not False:
            if self._clock_brackets:
                return (before, after)
            now = _procs.stat(pid)  # a zombie until we reap it, so always readable
            self._clock_brackets = now is not None and before <= now.start <= after
            if self._clock_brackets:
                return (before, after)
            log.warning("process start stamps do not follow the boot clock: reading each")
        now = _procs.stat(pid)
        return (now.start, now.start) if now else (0.0, 0.0)

    def poll(self, handle: Handle) -> Status:
        worker = _Worker.of(handle)
        self._reap(worker.pid)
        if _procs.is_alive(worker.pid, worker.start) and not self._enforce(worker):
            return Status("running")
        code = _read_code(worker.exit_path)
        self._sweep(worker)
        if code is None:
            return Status("lost", reason=_LOST)
        return Status("exited", code, _read_text(worker.sibling(".reason")))

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        worker = _Worker.of(handle)
        if not _procs.is_alive(worker.pid, worker.start):
            return  # ended, or not ours any more: poll settles it
        deadline = time.time() + max(grace_seconds, 0.0)
        previous = _read_deadline(worker.sibling(".stop"))
        if previous is not None and previous <= deadline:
            self._watch(worker)  # already stopping (maybe by a server since gone)
            return
        _write_atomic(worker.sibling(".stop"), repr(deadline))
        if grace_seconds <= 0:
            self._kill(worker, f"killed: stopped with no grace period ({grace_seconds:g} s)")
            return
        if previous is None:
            _signal_group(worker.pid, signal.SIGTERM)
        self._watch(worker)

    def close(self) -> None:
        """Stop watching; the workers keep running and a later executor adopts them."""
        self._closed.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        with self._lock:
            self._watched.clear()

    # -- enforcing limits and deadlines -------------------------------------------------

    def _enforce(self, worker: _Worker, rss: int | None = None) -> bool:
        """Kill a running worker over its memory limit or past its stop deadline;
        True when it was killed."""
        if worker.memory_bytes:
            used = _group_rss(worker.pid) if rss is None else rss
            if used > worker.memory_bytes:
                over = f"{_size(used)} over {_size(worker.memory_bytes)}"
                self._kill(worker, f"memory limit exceeded ({over})")
                return True
        deadline = _read_deadline(worker.sibling(".stop"))
        if deadline is not None and time.time() >= deadline:
            self._kill(worker, "killed: still running when the stop's grace period ended")
            return True
        return False

    def _kill(self, worker: _Worker, reason: str) -> None:
        """SIGKILL the whole group and what descends from it, recording the reason and,
        in the wrapper's place (it dies too), the code 137 unless the wrapper wrote a
        real one first. Both are written before the kill: a poll that finds the group
        dead finds them."""
        if not _procs.is_alive(worker.pid, worker.start):
            return
        _write_atomic(worker.sibling(".reason"), reason)
        with contextlib.suppress(FileExistsError):
            fd = os.open(worker.exit_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(str(_KILLED))
        members = _procs.group_members([worker.pid])[worker.pid]
        _signal_group(worker.pid, signal.SIGKILL)
        _kill_started_since(worker, members)  # those that left the group (setsid)
        log.info("worker %d %s", worker.pid, reason)
        self._reap(worker.pid)

    def _sweep(self, worker: _Worker) -> None:
        """Once a worker has ended, kill what it left in its group (a background child,
        the job orphaned by a killed wrapper): its resources are released."""
        if worker.exit_path in self._swept:
            return
        self._swept.add(worker.exit_path)
        leader = _procs.stat(worker.pid)
        if leader is not None and not worker.start[0] <= leader.start <= worker.start[1]:
            return  # the pid, hence the group id, belongs to someone else now
        _kill_started_since(worker, _procs.group_members([worker.pid])[worker.pid])

    def _reap(self, pid: int) -> None:
        proc = self._children.get(pid)
        if proc is not None and proc.poll() is not None:
            self._children.pop(pid, None)

    # -- the watcher thread -----------------------------------------------------------

    def _watch(self, worker: _Worker) -> None:
        with self._lock:
            self._watched[worker.exit_path] = worker
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(
                    target=self._watch_loop, name="plinth-local-executor", daemon=True
                )
                self._thread.start()

    def _watch_loop(self) -> None:
        while not self._closed.wait(self._next_wait()):
            with self._lock:
                workers = list(self._watched.values())
                if not workers:
                    self._thread = None
                    return
            groups = _procs.group_members(w.pid for w in workers if w.memory_bytes)
            for worker in workers:
                self._reap(worker.pid)
                rss = sum(map(_procs.rss, groups.get(worker.pid, [])))
                alive = _procs.is_alive(worker.pid, worker.start)
                if not alive or self._enforce(worker, rss):
                    with self._lock:
                        self._watched.pop(worker.exit_path, None)

    def _next_wait(self) -> float:
        with self._lock:
            paths = [w.sibling(".stop") for w in self._watched.values()]
        deadlines = [d for d in map(_read_deadline, paths) if d is not None]
        if not deadlines:
            return self._interval
        return max(0.0, min(self._interval, min(deadlines) - time.time()))


def _check_env(env: dict[str, str]) -> None:
    for name, value in env.items():
        if name in _SHELL_OWNED or name == _EXIT_VARIABLE or not _CARRIED_NAME.fullmatch(name):
            raise InvalidInput(
                f"environment variable {name!r} cannot be given to a local worker: names "
                "are letters, digits and underscores, not starting with a digit, and not "
                f"IFS, PPID, OPTIND or {_EXIT_VARIABLE}"
            )
        if "\0" in value:
            raise InvalidInput(f"environment variable {name!r} holds a NUL character")


@contextlib.contextmanager
def _pinned(cpu_ids: tuple[int, ...]) -> Iterator[None]:
    """Run the block with this thread's CPU affinity set to ``cpu_ids``, so the child
    spawned in it inherits the mask from birth. Cheaper than a ``preexec_fn`` (which
    makes CPython give up its fast vfork) and free of the race of pinning the child
    after it has started its own children."""
    setaffinity = getattr(os, "sched_setaffinity", None)
    if not cpu_ids or setaffinity is None:
        yield
        return
    before = os.sched_getaffinity(0)
    try:
        setaffinity(0, cpu_ids)
    except OSError as e:  # none of them available to this process: run unpinned
        log.warning("cannot pin a worker to CPUs %s (%s): running it unpinned", cpu_ids, e)
        yield
        return
    try:
        yield
    finally:
        setaffinity(0, before)


def _sibling(exit_path: Path, suffix: str) -> Path:
    return exit_path.with_name(exit_path.name.removesuffix(".exit") + suffix)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _kill_started_since(worker: _Worker, pids: list[int]) -> None:
    """SIGKILL each of ``pids`` still running that started no earlier than ``worker``
    (a pid given to another process since is not)."""
    for pid in pids:
        now = _procs.stat(pid)
        if now is not None and now.start >= worker.start[0] and now.state not in "ZX":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _group_rss(pgid: int) -> int:
    return sum(map(_procs.rss, _procs.group_members([pgid])[pgid]))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_code(path: Path) -> int | None:
    text = _read_text(path)
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _read_deadline(path: Path) -> float | None:
    text = _read_text(path)
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
