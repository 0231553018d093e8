"""A real two-node Ray cluster for the tests, alone in a network namespace, token auth
on, stopped by PID; and the driver process through which the tests use it.

Ray's servers (GCS, raylets, agents) listen on every interface, whatever the node
address. So the cluster lives in a network namespace of its own whose only interface
is loopback (``unshare --net`` + ``ip link set lo up``, held by one ``sleep``
process): nothing in it is reachable from outside. Both nodes are ``ray start
--block`` processes joined to it with ``nsenter``, the head on 127.0.0.2 and the
second node on 127.0.0.3 (not 127.0.0.1: a joining node rewrites that to the
machine's external address). Ports are Ray's choice inside the namespace (empty of
anything else, so 6379 and the worker range are free). Every Ray process gets
``RAY_AUTH_MODE=token`` and one ``RAY_AUTH_TOKEN``; the head and drivers
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the second node ``1`` (else it may not join).
Stopping sends SIGTERM to each ``--block`` PID (never ``ray stop``, which kills every
Ray process on the machine), then SIGKILL to what is left of its process group.

The test process is outside the namespace, so an executor runs in a *driver* process
inside it (this module run as a program), answering JSON lines: the tests' ``Executor``
is a ``RemoteExecutor`` that forwards each call. The PID namespace and the filesystem
are shared, so a test sees the workers' processes, logs and files as its own.

Ray missing is an error when ``CI`` is set, never a skip; elsewhere the Ray tests skip
with the command that installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

HEAD_IP = "127.0.0.2"
SECOND_IP = "127.0.0.3"
GCS_PORT = 6380  # the namespace is empty: any port outside Ray's worker range will do
START_TIMEOUT = 120.0  # ~10 s when idle; the shared test machines can be far slower
_STARTED = "This command will now block forever"
NODE_ENV = {
    "RAY_agent_register_timeout_ms": "120000",  # a busy machine starts agents slowly
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_health_check_period_ms": "500",  # a killed node is known dead in seconds
    "RAY_health_check_failure_threshold": "4",
}


def client_env(token: str) -> dict[str, str]:
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def require_ray() -> Path:
    """The ``ray`` command next to this interpreter; a skip outside CI when absent."""
    ray = Path(sys.executable).parent / "ray"
    try:
        import ray as _  # noqa: F401
    except ImportError:
        ray = Path("/nonexistent")
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is needed to keep the test Ray cluster on loopback")
    if not ray.is_file():
        message = "Ray is missing: pip install 'plinth[ray]'"
        if os.environ.get("CI"):
            raise RuntimeError(message)
        import pytest

        pytest.skip(message)
    return ray


@dataclass
class RayCluster:
    address: str  # host:port of the GCS, inside the namespace
    token: str
    netns: str  # /proc/<pid>/ns/net of the namespace's holder
    head: subprocess.Popen[bytes]
    second: subprocess.Popen[bytes]
    temp_dir: Path

    def enter(self) -> list[str]:
        """The argv prefix that runs a command inside the cluster's namespace."""
        return ["nsenter", f"--net={self.netns}"]

    def add_node(self, ip: str, resource: str) -> subprocess.Popen[bytes]:
        """Another node (1 CPU, custom resource ``resource``) joining the cluster;
        the caller stops it with ``stop_node``."""
        ray = require_ray()
        venv = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            **client_env(self.token),
            **NODE_ENV,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            "PATH": venv + os.pathsep + os.environ.get("PATH", ""),
        }
        cmd = [str(ray), "start", "--block", f"--address={self.address}"]
        cmd += [f"--node-ip-address={ip}", f'--resources={{"{resource}": 1}}']
        cmd += ["--num-cpus=1", "--num-gpus=0", "--dashboard-agent-listen-port=52367"]
        cmd += ["--disable-usage-stats", "--include-log-monitor=false"]
        cmd += ["--object-store-memory=80000000"]
        log_path = self.temp_dir / f"{resource}.log"
        proc = _start([*self.enter(), *cmd], env, log_path)
        _wait_started(proc, log_path)
        return proc

    def driver(self) -> RemoteDriver:
        """A new driver process: what a freshly started Plinth server would be."""
        return RemoteDriver(self)


@contextlib.contextmanager
def ray_cluster(cpus: int = 4, gpus: int = 4) -> Iterator[RayCluster]:
    """A running two-node cluster (each ``cpus`` CPUs and ``gpus`` declared GPUs; the
    second also has the custom resource ``second``) until the block ends."""
    ray = require_ray()
    token = secrets.token_hex(16)
    temp_dir = Path(tempfile.mkdtemp(prefix="plinth-ray-", dir="/tmp"))
    holder = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 86400"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != b"up":
            raise RuntimeError("could not make a network namespace with loopback up")
        netns = f"/proc/{holder.pid}/ns/net"
        enter = ["nsenter", f"--net={netns}"]
        venv = str(Path(sys.executable).parent)
        base = {
            **os.environ,
            **client_env(token),
            **NODE_ENV,
            "PATH": venv + os.pathsep + os.environ.get("PATH", ""),
        }
        base.pop("RAY_ADDRESS", None)
        common = ["--block", "--disable-usage-stats", "--include-log-monitor=false"]
        common += ["--object-store-memory=80000000", f"--num-cpus={cpus}", f"--num-gpus={gpus}"]
        address = f"{HEAD_IP}:{GCS_PORT}"
        head_cmd = [str(ray), "start", "--head", f"--node-ip-address={HEAD_IP}"]
        head_cmd += [f"--port={GCS_PORT}", "--include-dashboard=false", f"--temp-dir={temp_dir}"]
        procs.append(_start([*enter, *head_cmd, *common], base, temp_dir / "head.log"))
        _wait_started(procs[0], temp_dir / "head.log")
        second_cmd = [str(ray), "start", f"--address={address}", f"--node-ip-address={SECOND_IP}"]
        second_cmd += ['--resources={"second": 1}', "--dashboard-agent-listen-port=52366"]
        # The second node's temporary directory is its own, as another machine's would
        # be: the workers' private directories there are out of the head's sight.
        second_tmp = temp_dir / "t2"
        second_tmp.mkdir()
        second_env = {**base, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "TMPDIR": str(second_tmp)}
        procs.append(_start([*enter, *second_cmd, *common], second_env, temp_dir / "second.log"))
        _wait_started(procs[1], temp_dir / "second.log")
        yield RayCluster(address, token, netns, procs[0], procs[1], temp_dir)
    finally:
        for proc in reversed(procs):
            stop_node(proc)
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the raylet, GCS … stop with it
        )


def _wait_started(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until ``ray start --block`` says it blocks: by then its node has registered
    with the GCS (``ray start`` waits for that before it blocks)."""
    deadline = time.monotonic() + START_TIMEOUT
    while _STARTED not in _tail(log_path):
        if proc.poll() is not None:
            raise RuntimeError(
                f"a Ray node exited with {proc.returncode} while starting:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"a Ray node did not start within {START_TIMEOUT} s:\n{_tail(log_path)}"
            )
        time.sleep(0.1)


def stop_node(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the ``--block`` process (it stops its node's processes), then SIGKILL
    whatever is left of its process group."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


# -- one cluster for the whole test session -------------------------------------------


@dataclass
class RaySetup:
    cluster: RayCluster
    driver: RemoteDriver  # shared by the tests; a test that needs a fresh one makes it


_shared: tuple[contextlib.ExitStack, RaySetup] | None = None
_shared_lock = threading.Lock()


def shared() -> RaySetup:
    """The session's cluster and driver, started by the first test that needs them."""
    global _shared
    with _shared_lock:
        if _shared is None:
            stack = contextlib.ExitStack()
            try:
                cluster = stack.enter_context(ray_cluster())
                driver = cluster.driver()
                stack.callback(driver.close)
            except BaseException:
                stack.close()
                raise
            _shared = (stack, RaySetup(cluster, driver))
        return _shared[1]


def stop_shared() -> None:
    global _shared
    with _shared_lock:
        if _shared is not None:
            stack, _shared = _shared[0], None
            stack.close()


def ray_setup_fixture() -> Iterator[RaySetup]:
    """Body of the session fixture ``ray_setup`` (declared where it is used): every
    declaration shares the one cluster, and the first teardown stops it."""
    yield shared()
    stop_shared()


# -- the driver: executors inside the namespace, called from the test process --------


class RemoteDriver:
    """A process inside the cluster's namespace holding RayExecutors; one JSON line
    per call each way. It keeps one executor of its own connected, so that tests'
    executors come and go without reconnecting each time."""

    def __init__(self, cluster: RayCluster) -> None:
        env = {
            **os.environ,
            **client_env(cluster.token),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        self._proc = subprocess.Popen(
            [*cluster.enter(), sys.executable, "-m", "tests.compute.ray_cluster"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        self._lock = threading.Lock()
        self.call("connect", address=cluster.address, node_ip_address=HEAD_IP)

    def call(self, op: str, **args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            self._proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Ray driver process ended (code {self._proc.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{answer['type']}: {answer['error']}")
        return answer["ok"]

    def executor(self, **options: Any) -> RemoteExecutor:
        return RemoteExecutor(self, self.call("new", options=options))

    def close(self) -> None:
        """End the driver process; its actors (detached) keep running."""
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class RemoteExecutor:
    """An ``Executor`` whose calls run in a RemoteDriver's RayExecutor."""

    name = "ray"

    def __init__(self, driver: RemoteDriver, ident: int) -> None:
        self._driver, self._id = driver, ident

    def launch(self, spec: Any) -> Any:
        from plinth.compute.executors import Handle

        fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()}
        return Handle(**self._driver.call("launch", id=self._id, spec=fields))

    def poll(self, handle: Any) -> Any:
        from plinth.compute.executors import Status

        return Status(**self._driver.call("poll", id=self._id, handle=asdict(handle)))

    def stop(self, handle: Any, grace_seconds: float) -> None:
        self._driver.call("stop", id=self._id, handle=asdict(handle), grace=grace_seconds)

    def close(self) -> None:
        self._driver.call("close", id=self._id)


def _serve(stdin: IO[str], stdout: IO[str]) -> None:
    from plinth.compute.executors import Handle, Launch
    from plinth.compute.executors.ray import RayExecutor

    executors: dict[int, RayExecutor] = {}
    connection: dict[str, Any] = {}
    for line in stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            if op == "connect":
                connection.update(request)
                keeper = RayExecutor(**connection)
                keeper._connect()  # held until the driver ends
                answer: Any = None
            elif op == "new":
                executors[len(executors)] = RayExecutor(**connection, **request["options"])
                answer = len(executors) - 1
            elif op == "launch":
                fields = dict(request["spec"])
                for key in ("argv", "cpu_ids", "gpu_ids"):
                    fields[key] = tuple(fields[key])
                for key in ("cwd", "log_path"):
                    fields[key] = Path(fields[key])
                answer = asdict(executors[request["id"]].launch(Launch(**fields)))
            elif op == "poll":
                status = executors[request["id"]].poll(Handle(**request["handle"]))
                answer = asdict(status)
            elif op == "stop":
                executors[request["id"]].stop(Handle(**request["handle"]), request["grace"])
                answer = None
            elif op == "groups":
                from ray.util import placement_group_table

                table = placement_group_table().values()
                answer = {g["name"]: g["state"] for g in table if g["name"]}
            elif op == "close":
                executors[request["id"]].close()
                answer = None
            else:
                raise ValueError(f"unknown op {op!r}")
            stdout.write(json.dumps({"ok": answer}) + "\n")
        except Exception as exc:
            stdout.write(json.dumps({"error": str(exc), "type": type(exc).__name__}) + "\n")
        stdout.flush()


if __name__ == "__main__":
    # Answers go to the real stdout; anything Ray prints goes to stderr instead.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    _serve(sys.stdin, answers)
