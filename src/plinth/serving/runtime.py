"""Where a deployment's replicas run, behind one small interface.

``ReplicaRuntime`` starts, stops, observes and reconfigures one replica; the control
plane (supervisor.py) decides how many should run and calls it. ``LocalProcessRuntime``
runs each replica as a local process of the serving data plane (``python -m
plinth.serving --replica CONFIG``): every replica of a deployment binds the
deployment's one port with SO_REUSEPORT, so the deployment has one URL, and answers
its control plane on a Unix socket of its own. ``MemoryRuntime`` is the fake: replicas
that exist only as records (for tests of the control plane). Ray Serve or Kubernetes
runtimes would join here without touching the control plane.

A replica records a sample of its answers (``record_sample`` in its config, 0 unless
the control plane says otherwise; changed live through the admin endpoint) under the
home's ``serving/records/DEPLOYMENT_ID/`` (``records_dir``), which outlives the
deployment's own folder.

The admin secret reaches a replica through its environment only (the child's, never
this process's), and the replica removes it from its own environment at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from plinth.errors import ServiceUnavailable

SECRET_ENV = "PLINTH_REPLICA_SECRET"
ALIVE = ("starting", "ready")


@dataclass(frozen=True)
class ReplicaPlan:
    """What one deployment's replicas run: plain values, written to a config file."""

    deployment_id: str
    port: int
    secret: str
    config: dict[str, Any]  # name, generation, versions (directories), split, shadow
    directory: Path  # the deployment's own folder under the home (config, sockets, logs)

    @property
    def records_dir(self) -> Path:
        """Where the replicas' prediction records go (records.py)."""
        from plinth.serving.records import deployment_records_dir

        return deployment_records_dir(self.directory.parent.parent, self.deployment_id)

    def socket_path(self, replica: int) -> Path:
        """Short (a Unix socket's path has at most 107 bytes), in a folder of this
        user's only."""
        folder = Path(tempfile.gettempdir()) / f"plinth-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        found = os.lstat(folder)  # made by someone else first? never trust it
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
            raise ServiceUnavailable(
                f"{folder} is not a private folder of this user (owner, mode or a link): "
                "remove it so Plinth can make its own"
            )
        return folder / f"{self.deployment_id}-{replica}.sock"


class ReplicaRuntime(Protocol):
    def start(self, plan: ReplicaPlan, replica: int) -> int | None: ...  # its pid
    def stop(self, plan: ReplicaPlan, replica: int, pid: int | None) -> None: ...
    def status(self, plan: ReplicaPlan, replica: int, pid: int | None) -> str: ...
    def apply_config(self, plan: ReplicaPlan, replica: int) -> bool: ...  # True: it runs it
    def metrics(self, plan: ReplicaPlan, replica: int) -> str | None: ...  # Prometheus text


class MemoryRuntime:
    """Replicas on paper: each is ``ready`` once started, and never crashes. Every
    supervisor over a home (each embedded client has one) agrees on that, so none of
    them writes in the steady state; the configs it was given are kept for tests."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, int], dict[str, Any]] = {}

    def start(self, plan: ReplicaPlan, replica: int) -> int | None:
        self.running[(plan.deployment_id, replica)] = dict(plan.config)
        return None

    def stop(self, plan: ReplicaPlan, replica: int, pid: int | None) -> None:
        self.running.pop((plan.deployment_id, replica), None)

    def status(self, plan: ReplicaPlan, replica: int, pid: int | None) -> str:
        return "ready"

    def apply_config(self, plan: ReplicaPlan, replica: int) -> bool:
        self.running[(plan.deployment_id, replica)] = dict(plan.config)
        return True

    def metrics(self, plan: ReplicaPlan, replica: int) -> str | None:
        return None


class LocalProcessRuntime:
    """Each replica a process of its own session: it outlives an embedded client that
    started it, and a restarted Plinth server adopts it by pid (checked against the
    deployment it serves, so a reused pid is never taken for it)."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, plan: ReplicaPlan, replica: int) -> int | None:
        plan.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = plan.directory / "config.json"
        written = {"records_dir": str(plan.records_dir), **plan.config, "port": plan.port}
        _write_private(config, json.dumps(written))
        sock = plan.socket_path(replica)
        command = [sys.executable, "-m", "plinth.serving", "--replica", str(config)]
        command += ["--socket", str(sock), "--deployment", plan.deployment_id]
        with open(plan.directory / f"replica-{replica}.log", "ab") as log:
            child = subprocess.Popen(
                command,
                env={**os.environ, SECRET_ENV: plan.secret},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[child.pid] = child
        return child.pid

    def stop(self, plan: ReplicaPlan, replica: int, pid: int | None) -> None:
        if pid is None or not self._serves(plan, pid):
            return
        os.kill(pid, signal.SIGTERM)  # uvicorn finishes the requests it holds
        deadline = time.monotonic() + 10
        while self._serves(plan, pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._serves(plan, pid):
            os.kill(pid, signal.SIGKILL)
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait(timeout=5)

    def status(self, plan: ReplicaPlan, replica: int, pid: int | None) -> str:
        if pid is None or not self._serves(plan, pid):
            return "gone"
        answered = _admin(plan, replica, "GET")
        if answered is None:
            return "starting"
        return "ready" if answered.get("generation") == plan.config["generation"] else "stale"

    def apply_config(self, plan: ReplicaPlan, replica: int) -> bool:
        return _admin(plan, replica, "POST", plan.config) is not None

    def metrics(self, plan: ReplicaPlan, replica: int) -> str | None:
        import httpx

        transport = httpx.HTTPTransport(uds=str(plan.socket_path(replica)))
        try:
            with httpx.Client(transport=transport, timeout=2) as http:
                return http.get("http://replica/metrics").text
        except httpx.HTTPError:
            return None

    def _serves(self, plan: ReplicaPlan, pid: int) -> bool:
        """Whether ``pid`` is alive and is a replica of this deployment."""
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            self._children.pop(pid, None)  # reaped: no zombie left behind
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return plan.deployment_id.encode() in cmdline


def _admin(plan: ReplicaPlan, replica: int, method: str, body: Any = None) -> Any:
    """The replica's answer on its admin endpoint, or None when it does not answer."""
    import httpx

    sock = plan.socket_path(replica)
    if not sock.exists():
        return None
    transport = httpx.HTTPTransport(uds=str(sock))
    headers = {"Authorization": f"Bearer {plan.secret}"}
    try:
        timeout = 120 if method == "POST" else 2  # a POST may load a version first
        with httpx.Client(transport=transport, timeout=timeout) as http:
            answer = http.request(method, "http://replica/admin/config", json=body, headers=headers)
    except httpx.HTTPError:
        return None
    return answer.json() if answer.status_code == 200 else None


def _write_private(path: Path, text: str) -> None:
    scratch = path.with_suffix(".tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(scratch, path)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that every replica of the deployment binds too."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    return listener


def replica_main(config_path: str, socket_path: str) -> None:
    """A replica: load every version of the config, serve them on the shared port and
    on the admin socket until SIGTERM."""
    import uvicorn

    from plinth.serving.app import ServingApp
    from plinth.serving.records import Recorder, RecordSettings
    from plinth.serving.split import from_config

    secret = os.environ.pop(SECRET_ENV, None)
    if not secret:
        raise SystemExit("a replica needs its secret from the control plane")
    config = json.loads(Path(config_path).read_text())
    recorder = None
    if config.get("records_dir"):  # always there, so that sampling can start live
        sample = float(config.get("record_sample") or 0.0)
        recorder = Recorder(RecordSettings(Path(config["records_dir"]), sample))
    app = ServingApp(from_config(config), admin_secret=secret, recorder=recorder)
    public = reuse_port_socket("127.0.0.1", int(config["port"]))
    Path(socket_path).unlink(missing_ok=True)
    admin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    admin.bind(socket_path)
    os.chmod(socket_path, 0o600)
    admin.listen(64)
    server_config = uvicorn.Config(
        app,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(server_config).run(sockets=[public, admin])
