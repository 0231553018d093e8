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

A replica serves its versions from the deployment's own folder (``versions/N``: the
supervisor links or copies them there from its cache, read-only), and answers its
control plane on a socket in a folder of the deployment's own (``socket_dir``). The
admin secret never lies in a replica's environment (where ``/proc/PID/environ`` would
keep it): it comes through a pipe (``--secret-fd``) that the replica reads to its end
and closes, followed by the pid its control plane knows it by.

On a server with sign-in (``ReplicaPlan.sandbox``, with ``hidden`` what the server
keeps) a replica runs in the jobs' sandbox (compute/executors/sandbox.py), since a model
an editor registered is that project's code (a pickle, a TensorFlow graph's file ops):
its namespaces, every file system read-only, the home and the other hidden paths
covered, a ``/tmp`` and ``/dev`` of its own, no capabilities, user 65534 under a root
server, an environment of its own (``replica_env``), none of the server's, and no
network (a namespace with no interface). Bound back in: the deployment's folder
read-only (its config and the versions it serves: another deployment's files are not
there, and none it can change), its working folder and ``/tmp`` (``replica-N/``, made
afresh at each start) and its records folder, writable. Its two listening sockets, the
deployment's port and its admin socket, are made here and handed down as descriptors
(``--listen-fd``, ``--admin-fd``): it needs no network, and the folder of the admin
sockets is not in its view. A replica whose sandbox cannot be made does not start
(``ReplicaStartError``): never unsandboxed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from plinth.errors import ServiceUnavailable

# a replica started by hand (not by its control plane) may take its secret from here
SECRET_ENV = "PLINTH_REPLICA_SECRET"
ALIVE = ("starting", "ready")
# what of the server's environment a sandboxed replica keeps: nothing secret
REPLICA_ENV = ("PYTHONPATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES")


class ReplicaStartError(ServiceUnavailable):
    """A replica could not be started at all (no sandbox can be made here)."""


class Sandbox(Protocol):
    """The jobs' sandbox (compute/executors/sandbox.py ``Provider``), handed to serving
    by compute's dispatcher: serving may not import compute (compute imports serving,
    through governance)."""

    @property
    def machinery_env(self) -> Mapping[str, str]: ...  # the sandbox's own programs'

    def server_paths(self) -> tuple[Path, ...]: ...  # what it hides: the server's

    def command(
        self,
        hidden: Sequence[Path],
        work: Path,
        tmp: Path,
        *,
        readable: Sequence[Path],
        writable: Sequence[Path],
        network: bool,
        who: str,
    ) -> list[str]: ...  # raises OSError where none can be made

    def environment(self, env: Mapping[str, str]) -> int: ...


@dataclass(frozen=True)
class ReplicaPlan:
    """What one deployment's replicas run: plain values, written to a config file."""

    deployment_id: str
    port: int
    secret: str
    config: dict[str, Any]  # name, generation, versions (directories), split, shadow
    directory: Path  # the deployment's own folder under the home (config, versions, logs)
    sandbox: Sandbox | None = None  # None: the replicas run as the server's user
    hidden: tuple[Path, ...] = ()  # what the sandbox hides from them

    @property
    def records_dir(self) -> Path:
        """Where the replicas' prediction records go (records.py)."""
        from plinth.serving.records import deployment_records_dir

        return deployment_records_dir(self.directory.parent.parent, self.deployment_id)

    @property
    def versions_dir(self) -> Path:
        """Where the replicas find the files of the versions they serve."""
        return self.directory / "versions"

    def socket_path(self, replica: int) -> Path:
        return self.socket_dir() / f"{replica}.sock"

    def socket_dir(self) -> Path:
        """The folder of the deployment's admin sockets: short (a Unix socket's path
        has at most 107 bytes), in a folder of this user's only."""
        folder = Path(tempfile.gettempdir()) / f"plinth-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        found = os.lstat(folder)  # made by someone else first? never trust it
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
            raise ServiceUnavailable(
                f"{folder} is not a private folder of this user (owner, mode or a link): "
                "remove it so Plinth can make its own"
            )
        return folder / self.deployment_id


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
        """Start the replica; raises ReplicaStartError where its sandbox cannot be made."""
        prepare_folder(plan.directory)
        config = plan.directory / "config.json"
        written = {"records_dir": str(plan.records_dir), **plan.config, "port": plan.port}
        _write_file(config, json.dumps(written), 0o644)  # no secret: the replica reads it
        sock = plan.socket_path(replica)
        public, admin = _listening_sockets(plan.port, sock)  # made here, handed down
        secret_in, secret_out = os.pipe()
        command = [sys.executable, "-m", "plinth.serving", "--replica", str(config)]
        command += ["--socket", str(sock), "--deployment", plan.deployment_id]
        command += ["--secret-fd", str(secret_in)]
        command += ["--listen-fd", str(public.fileno()), "--admin-fd", str(admin.fileno())]
        env: dict[str, str] = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
        stdin: int = subprocess.DEVNULL
        cwd: Path | None = None
        try:
            if plan.sandbox is not None:
                cwd = _replica_folders(plan, replica)
                prefix = _sandbox_command(plan.sandbox, plan, replica)
                env = dict(plan.sandbox.machinery_env)
                stdin = plan.sandbox.environment(replica_env(env["PATH"]))
                command[:0] = prefix
            with open(plan.directory / f"replica-{replica}.log", "ab") as log:
                child = subprocess.Popen(
                    command,
                    env=env,
                    cwd=cwd,
                    stdin=stdin,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(secret_in, public.fileno(), admin.fileno()),
                    start_new_session=True,
                )
            # the secret, then the pid the replica is known by (its own is another in
            # the sandbox's PID namespace): the replica reads them to the pipe's end
            _write_all(secret_out, f"{plan.secret}\n{child.pid}\n".encode())
        finally:
            public.close()
            admin.close()
            for fd in (secret_in, secret_out, *([stdin] if stdin >= 0 else [])):
                os.close(fd)
        self._children[child.pid] = child
        return child.pid

    def stop(self, plan: ReplicaPlan, replica: int, pid: int | None) -> None:
        if pid is None or not self._serves(plan, pid):
            return
        # the whole group: in a sandbox the replica is below unshare, which ignores it;
        # uvicorn finishes the requests it holds
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self._serves(plan, pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._serves(plan, pid):
            _signal_group(pid, signal.SIGKILL)
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

        sock = _listening(plan, replica)
        if sock is None:
            return None
        transport = httpx.HTTPTransport(uds=str(sock))
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


def _listening(plan: ReplicaPlan, replica: int) -> Path | None:
    """The replica's admin socket, if there is one (made here, in a folder no replica
    sees; anything there but a socket is not connected to)."""
    sock = plan.socket_path(replica)
    try:
        return sock if stat.S_ISSOCK(os.lstat(sock).st_mode) else None
    except OSError:
        return None


def _admin(plan: ReplicaPlan, replica: int, method: str, body: Any = None) -> Any:
    """The replica's answer on its admin endpoint, or None when it does not answer."""
    import httpx

    sock = _listening(plan, replica)
    if sock is None:
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


def _write_file(path: Path, text: str, mode: int) -> None:
    scratch = path.with_suffix(".tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), mode)  # whatever the umask, or an older file's mode
        out.write(text)
    os.replace(scratch, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _signal_group(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, signum)  # a replica leads its own session and group


def prepare_folder(directory: Path) -> None:
    """The deployment's folder, open to the replicas' user (65534 under a root server)
    to read, in a folder (``serving/deployments``) that only this user may enter."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(directory.parent, 0o700)
    directory.mkdir(exist_ok=True)
    os.chmod(directory, 0o755)


def replica_env(system_path: str) -> dict[str, str]:
    """A sandboxed replica's whole environment: none of the server's settings, tokens,
    database URLs or cloud credentials; ``HOME`` and ``TMPDIR`` its own ``/tmp``."""
    path = f"{Path(sys.executable).parent}:{system_path}"
    env = {"PATH": path, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
    env.update({name: os.environ[name] for name in REPLICA_ENV if name in os.environ})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _replica_folders(plan: ReplicaPlan, replica: int) -> Path:
    """A sandboxed replica's working folder, made afresh (its ``/tmp`` beside it), and
    its records folder; returns the working folder."""
    run = plan.directory / f"replica-{replica}"
    shutil.rmtree(run, ignore_errors=True)
    (run / "work").mkdir(parents=True)
    (run / "tmp").mkdir(mode=0o700)
    plan.records_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return run / "work"


def _sandbox_command(sandbox: Sandbox, plan: ReplicaPlan, replica: int) -> list[str]:
    """The argv prefix of the jobs' sandbox around a replica (sandbox.py): the
    deployment's folder read-only, its records and socket folders writable."""
    run = plan.directory / f"replica-{replica}"
    try:
        return sandbox.command(
            plan.hidden,
            run / "work",
            run / "tmp",
            readable=[plan.directory],
            writable=[plan.records_dir],
            network=False,  # its sockets are handed down: it needs no network
            who="replicas of deployments",
        )
    except OSError as exc:
        raise ReplicaStartError(str(exc)) from None


def _listening_sockets(port: int, admin_path: Path) -> tuple[socket.socket, socket.socket]:
    """A replica's two listening sockets, made by its control plane and handed down: the
    deployment's port (``SO_REUSEPORT``, one per replica) and its admin socket (mode
    0600, in a folder of this user's that no replica sees). A sandboxed replica has no
    network of its own, so it could bind neither, nor any other port."""
    try:
        public = reuse_port_socket("127.0.0.1", port)
    except OSError as exc:
        raise ReplicaStartError(f"cannot listen on port {port}: {exc.strerror}") from None
    try:
        admin_path.parent.mkdir(mode=0o700, exist_ok=True)
        admin_path.unlink(missing_ok=True)
        admin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            admin.bind(str(admin_path))
            os.chmod(admin_path, 0o600)
            admin.listen(64)
        except BaseException:
            admin.close()
            raise
    except BaseException:
        public.close()
        raise
    return public, admin


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that every replica of the deployment binds too."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    return listener


def read_secret(fd: int | None) -> tuple[str | None, int | None]:
    """The secret and the pid the control plane knows this replica by, read from the
    pipe ``fd`` to its end (then closed); without one (a replica started by hand) the
    secret of ``SECRET_ENV``, taken out of this process's environment."""
    if fd is None:
        return os.environ.pop(SECRET_ENV, None), None
    data = b""
    try:
        while chunk := os.read(fd, 4096):
            data += chunk
    finally:
        os.close(fd)
    secret, _, pid = data.decode().partition("\n")
    return secret, int(pid) if pid.strip().isdecimal() else None


def replica_main(
    config_path: str,
    socket_path: str,
    secret_fd: int | None = None,
    listen_fd: int | None = None,
    admin_fd: int | None = None,
) -> None:
    """A replica: load every version of the config, serve them on the shared port and
    on the admin socket until SIGTERM. Its control plane hands both sockets down
    (``listen_fd``, ``admin_fd``); one started by hand binds them itself."""
    import uvicorn

    from plinth.serving.app import LOOPBACK_HOSTS, AppLimits, ServingApp
    from plinth.serving.records import Recorder, RecordSettings
    from plinth.serving.split import from_config

    secret, known_pid = read_secret(secret_fd)
    if not secret:
        raise SystemExit("a replica needs its secret from the control plane")
    config = json.loads(Path(config_path).read_text())
    recorder = None
    if config.get("records_dir"):  # always there, so that sampling can start live
        sample = float(config.get("record_sample") or 0.0)
        settings = RecordSettings(Path(config["records_dir"]), sample, process=known_pid)
        recorder = Recorder(settings)
    limits = AppLimits(allowed_hosts=(*LOOPBACK_HOSTS, *config.get("allowed_hosts", [])))
    app = ServingApp(from_config(config), limits, admin_secret=secret, recorder=recorder)
    if listen_fd is not None and admin_fd is not None:
        public = socket.socket(fileno=listen_fd)
        admin = socket.socket(fileno=admin_fd)
    else:
        public, admin = _listening_sockets(int(config["port"]), Path(socket_path))
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
