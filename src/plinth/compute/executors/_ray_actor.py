"""The Ray actor that runs one worker: a subprocess it starts, watches and stops.

This module is shipped to the Ray cluster *by value* (cloudpickle), so a Ray node needs
nothing of Plinth installed: it imports only the standard library, Ray and ``psutil`` (a
dependency of Ray), and nothing here may import ``plinth``.

The actor writes the worker's exit record next to the log (``<log>.exit``, JSON with
the code, the reason and the actor's own id) and then ends itself, which frees its Ray
resources at once. A poll that finds the actor gone reads that record: present, the
worker *exited*; absent, the actor died without one (its node, its process) and the
worker is *lost*. The record is on the filesystem that this slice assumes the Ray
nodes share with the Plinth server, like the log and the working directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from typing import Any

_KILLED = 128 + signal.SIGKILL
_NOT_SHARED = (
    "plinth: the job's working directory {cwd} is not on this Ray node: a Ray pool's "
    "nodes must share the Plinth server's disk (its home), see docs/ray.md\n"
)


class WorkerActor:
    """Starts ``argv`` in its own session with exactly ``env``, appending its output to
    ``log_path``. ``status()`` and ``stop()`` are served while it runs (the actor is
    created with several concurrent calls allowed)."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        log_path: str,
        memory_bytes: int | None,
    ) -> None:
        import ray

        self._id = ray.get_runtime_context().get_actor_id()
        self._exit_path = log_path + ".exit"
        self._memory = memory_bytes
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._reason: str | None = None
        self._code: int | None = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._exit_path)  # a relaunch on the same log reads no old record
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._proc: subprocess.Popen[bytes] | None
        if not os.path.isdir(cwd):  # this slice: Ray nodes share the server's disk
            os.write(out, _NOT_SHARED.format(cwd=cwd).encode())
            os.close(out)
            self._proc = None
            self._finish(127, "the job's working directory is not on this Ray node")
            return
        try:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: stop reaches its children
            )
        except OSError as exc:
            message = f"plinth: cannot start {argv[0]!r}: {exc}\n"
            os.write(out, message.encode())
            self._proc = None
            self._finish(127, None)
            return
        finally:
            os.close(out)
        threading.Thread(target=self._watch, name="plinth-worker", daemon=True).start()

    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def status(self) -> dict[str, Any]:
        """``{"code": None}`` while it runs; the exit code and reason once it ended."""
        with self._lock:
            return {"code": self._code, "reason": self._reason}

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM the group now and SIGKILL it when the grace ends; a later stop with
        a later deadline changes nothing."""
        deadline = time.time() + max(grace_seconds, 0.0)
        with self._lock:
            if self._code is not None or self._proc is None:
                return
            first = self._deadline is None
            if not first and self._deadline is not None and self._deadline <= deadline:
                return
            self._deadline = deadline
        if grace_seconds <= 0:
            self._kill(f"killed: stopped with no grace period ({grace_seconds:g} s)")
        elif first:
            _signal_group(self._proc.pid, signal.SIGTERM)

    # -- the watcher thread -----------------------------------------------------------

    def _watch(self) -> None:
        proc = self._proc
        assert proc is not None
        while True:
            try:
                code = proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            with self._lock:
                deadline = self._deadline
            if deadline is not None and time.time() >= deadline:
                self._kill("killed: still running when the stop's grace period ended")
            elif self._memory and (used := _group_rss(proc.pid)) > self._memory:
                self._kill(f"memory limit exceeded ({_size(used)} over {_size(self._memory)})")
        _signal_group(proc.pid, signal.SIGKILL)  # what it left behind is freed too
        self._finish(128 - code if code < 0 else code, self._reason)

    def _kill(self, reason: str) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
        if self._proc is not None:
            _signal_group(self._proc.pid, signal.SIGKILL)

    def _finish(self, code: int, reason: str | None) -> None:
        """Record the exit beside the log, then end this actor (freeing its
        resources): a poll then reads the record."""
        record = {"code": code, "reason": reason, "actor": self._id}
        tmp = f"{self._exit_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, self._exit_path)
        with self._lock:
            self._code = code
        threading.Thread(target=_end_self, daemon=True).start()


def _end_self() -> None:
    """Give a status() call in flight a moment to answer, then leave: killed by Ray
    at its own request, an intended exit (no restart, no error reported)."""
    import ray

    time.sleep(0.2)
    try:
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
    except Exception:
        os._exit(0)


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
