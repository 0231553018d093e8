"""A deployment's replicas on a server with sign-in run in the jobs' sandbox: a served
model (a pickle a platform admin marked ``unsafe_pickle``, so any code) reads nothing
the server keeps, writes nowhere but its own folders, and sees none of the server's
environment; no replica's ``/proc/PID/environ`` holds the admin secret, sandboxed or
not; a replica whose sandbox cannot be made is ``failed`` and the deployment says why;
and a damaged model cache is fetched again. Serving, a live canary of a new version,
records and metrics still work in the sandbox (runtime.py, supervisor.py)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from plinth import Client
from plinth.compute.executors import sandbox
from plinth.core.platform import Platform
from plinth.serving import tables as t
from plinth.settings import Settings
from tests.conftest import make_settings, raw_http
from tests.serving.conftest import IRIS_ROW, deployment_ready, log_iris

pytestmark = pytest.mark.slow
CANARY = f"canary-{uuid.uuid4().hex}"  # in the server's environment: never a replica's

# What the served model does on each prediction, as its project's editor could make any
# model do (a TensorFlow graph's file ops, a pickle): report what it reaches. Evaluated
# in the replica when the pickle loads; the names in capitals are filled in below.
PROBE = r"""
import errno, glob, json, os, socket

def attempt(call):
    try:
        return call()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def connect(port):
    with socket.create_connection(('127.0.0.1', port), timeout=2):
        return 'connected'

KEPT = []

def steal(port):  # join another deployment's port, to take part of its traffic
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(('127.0.0.1', port))
    listener.listen(16)
    KEPT.append(listener)  # kept listening, unanswered
    return 'bound'

def read(path):
    with open(path, 'rb') as f:
        return f.read(1 << 16).decode('latin-1')

def make(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return 'written'

def append(path):
    with open(path, 'ab') as f:
        f.write(b'x')
    return 'written'

def environments():
    found = {}
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            found[pid] = attempt(lambda: read(f'/proc/{pid}/environ'))
    return found

class Probe:
    def predict(self, rows):
        own = glob.glob(HOME + '/serving/deployments/*/versions/*/*')
        seen = {
            'uid': os.getuid(),
            'environment': dict(os.environ),
            'environments': environments(),
            'database': attempt(lambda: read(DATABASE)),
            'planted': attempt(lambda: read(PLANTED)),
            'home': attempt(lambda: sorted(os.listdir(HOME))),
            'deployments': attempt(lambda: sorted(os.listdir(HOME + '/serving/deployments'))),
            'other': [attempt(lambda p=p: read(p)) for p in OTHER],
            'outside': [attempt(lambda p=p: make(p)) for p in OUTSIDE],
            'own files': own,
            'own model': [attempt(lambda p=p: append(p)) for p in own],
            'own folder': [attempt(lambda p=p: make(os.path.dirname(p) + '/new')) for p in own],
            'tmp': attempt(lambda: make('/tmp/probe')),
            'cwd': attempt(lambda: make('probe')),
            'database server': attempt(lambda: connect(DATABASE_PORT)),
            'plinth server': attempt(lambda: connect(SERVER_PORT)),
            'neighbour port': attempt(lambda: steal(NEIGHBOUR_PORT)),
            'sockets': attempt(lambda: os.listdir(SOCKETS)),
        }
        return [json.dumps(seen)] * len(rows)

model = Probe()
"""


class Hostile:
    """Pickles to code that the replica runs as it loads the model."""

    def __init__(self, code: str) -> None:
        self.code = code

    def predict(self, rows: Any) -> Any:  # the python flavor takes what has predict
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        program = f"(lambda ns: (exec({self.code!r}, ns), ns['model'])[1])({{}})"
        return (eval, (program,))


def _root(settings: Settings) -> tuple[Client, str]:
    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
    return Client(settings=settings.model_copy(update={"token": token})), token


def _deployment(settings: Settings, name: str) -> Any:
    """The deployment's row: its id and its secret."""
    platform = Platform.open(settings)
    try:
        with platform.db.read() as conn:
            d = t.deployments
            return conn.execute(sa.select(d).where(d.c.name == name)).one()
    finally:
        platform.close()


def _post(port: int, model: str, rows: list[Any]) -> tuple[int, str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = json.dumps({"instances": rows})
        conn.request(
            "POST", f"/v1/models/{model}:predict", body, {"Content-Type": "application/json"}
        )
        answer = conn.getresponse()
        data = json.loads(answer.read())
        return answer.status, answer.getheader("x-plinth-model-version") or "", data
    finally:
        conn.close()


def _group(pid: int) -> list[int]:
    """The replica's processes: its process group (a sandbox's are below unshare)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pid:  # pgrp
                found.append(int(entry.name))
    return found


def _environ_holds(pid: int, secret: str) -> bool:
    processes = _group(pid)
    assert processes, f"no process of replica {pid}"
    held = []
    for process in processes:
        try:
            held.append(Path(f"/proc/{process}/environ").read_bytes())
        except OSError:
            continue
    return any(secret.encode() in data for data in held)


@pytest.fixture
def canary_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Credentials in the server's environment, as a cloud host gives them."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    monkeypatch.setenv("PLINTH_PROBE_SETTING", CANARY)
    yield


def test_a_served_model_reaches_nothing_the_server_keeps(tmp_path: Path, canary_env: None) -> None:
    home = tmp_path / "home"
    settings = make_settings(home)
    planted = home / "planted-secret.txt"
    planted.write_text("do not read me")
    root, _ = _root(settings)
    outside = [Path(p, f"plinth-replica-probe-{uuid.uuid4().hex}") for p in ("/etc", home)]
    with root, socket.create_server(("127.0.0.1", 0)) as listening:
        log_iris(root)  # another project's model, served by another deployment
        root.create_deployment("iris", "neighbour", "models:/iris/iris/1")
        neighbour = _deployment(settings, "neighbour")
        neighbours = home / "serving" / "deployments" / neighbour.id / "versions" / "1"
        cached = home / "serving" / "models" / "iris" / "iris" / "1"
        code = PROBE
        names = {
            "HOME": str(home),
            "DATABASE": str(home / "plinth.db"),
            "PLANTED": str(planted),
            "OTHER": [str(cached / "MLmodel.json"), str(neighbours / "MLmodel.json")],
            "OUTSIDE": [str(p) for p in outside],
            "DATABASE_PORT": 5432,  # a Postgres that trusts local connections, in CI
            "SERVER_PORT": listening.getsockname()[1],  # a server of the machine's
            "NEIGHBOUR_PORT": neighbour.port,
            "SOCKETS": str(Path(tempfile.gettempdir(), f"plinth-{os.getuid()}")),
        }
        for name, value in names.items():
            code = f"{name} = {value!r}\n" + code
        run = root.create_run("probe")
        version = root.log_model(run.id, Hostile(code), "probe", flavor="python")
        root.update_model_version(version.uri, unsafe_pickle=True)
        try:
            root.create_deployment("probe", "svc", version.uri, record_sample=1.0)
            probe = _deployment(settings, "svc")
            d = deployment_ready(root, "probe", "svc")
            deployment_ready(root, "iris", "neighbour")
            status, answered_by, body = _post(d.port, "probe", [{"x": 1}])
            assert status == 200, body
            assert answered_by == "probe/1"
            seen = json.loads(body["predictions"][0])

            # nothing the server keeps: its database, the home, other projects' models
            errors = [seen["database"], seen["planted"], *seen["other"]]
            assert all(e.isupper() and e.startswith("E") for e in errors), errors
            assert seen["home"] in ("ENOENT", ["serving"]), seen["home"]
            assert seen["deployments"] == [probe.id]
            # no write outside its folders, its own model files and config included
            assert all(e.startswith("E") for e in seen["outside"]), seen["outside"]
            assert not any(p.exists() for p in outside)
            assert seen["own files"], seen
            assert all(e in ("EROFS", "EACCES") for e in seen["own model"]), seen["own model"]
            assert all(e in ("EROFS", "EACCES") for e in seen["own folder"]), seen["own folder"]
            # … but where it must write
            assert (seen["tmp"], seen["cwd"]) == ("written", "written")
            if os.geteuid() == 0 and sandbox._job_uid():
                assert seen["uid"] == sandbox.JOB_UID
            # no network: no database, no program of the machine, no other deployment's
            # port to join (its own sockets were handed to it), no admin sockets
            network = [seen[k] for k in ("database server", "plinth server")]
            assert all(e.isupper() and e.startswith("E") for e in network), network
            assert seen["sockets"] == "ENOENT", seen["sockets"]
            # whatever it bound is in its own network: the neighbour answers all its own
            answers = {_post(neighbour.port, "iris", [IRIS_ROW])[:2] for _ in range(40)}
            assert answers == {(200, "iris/1")}, (seen["neighbour port"], answers)
            # none of the server's environment, and no other process's to read
            environment = seen["environment"]
            assert not [k for k in environment if k.startswith("PLINTH")], environment
            assert CANARY not in json.dumps(seen)
            assert probe.secret not in json.dumps(seen)
            assert environment["HOME"] == "/tmp"
            assert len(seen["environments"]) < 10  # its own processes only

            # the secret is in no replica process's environment, seen from outside
            for project, row in (("probe", probe), ("iris", neighbour)):
                for r in root.get_deployment(project, row.name).replicas:
                    assert r.pid is not None and not _environ_holds(r.pid, row.secret)

            # serving works: records, metrics, a live canary of a new version
            found: list[Any] = []
            deadline = time.monotonic() + 30
            while not found and time.monotonic() < deadline:
                found = root.deployment_records("probe", "svc").records
                time.sleep(0.2)
            assert found and found[0].version == 1
            version2 = root.log_model(
                run.id, Hostile(code + "# 2\n"), "probe", flavor="python", artifact_path="m2"
            )
            root.update_model_version(version2.uri, unsafe_pickle=True)
            pids = [r.pid for r in d.replicas]
            d = root.update_deployment("probe", "svc", canary=version2.uri, weight=50)
            d = deployment_ready(root, "probe", "svc")
            labels = {_post(d.port, "probe", [{"x": 1}])[1] for _ in range(60)}
            assert labels == {"probe/1", "probe/2"}
            assert [r.pid for r in d.replicas] == pids  # taken live, no restart
            fragment = raw_http(root).get("/projects/probe/deployments/svc/traffic").text
            assert 'data-version="2"' in fragment, fragment
        finally:
            for name, project in (("svc", "probe"), ("neighbour", "iris")):
                with contextlib.suppress(Exception):  # the other one still goes
                    root.delete_deployment(project, name)
    for path in outside:
        path.unlink(missing_ok=True)


def test_no_replica_environment_holds_the_secret_without_the_sandbox(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    with Client(settings=settings) as client:  # no sign-in: no sandbox
        log_iris(client)
        client.create_deployment("iris", "plain", "models:/iris/iris/1")
        try:
            d = deployment_ready(client, "iris", "plain")
            assert _post(d.port, "iris", [IRIS_ROW])[0] == 200
            secret = _deployment(settings, "plain").secret
            [replica] = d.replicas
            assert replica.pid is not None and not _environ_holds(replica.pid, secret)
            assert secret.encode() not in Path(f"/proc/{replica.pid}/cmdline").read_bytes()
        finally:
            client.delete_deployment("iris", "plain")


def test_a_replica_without_a_sandbox_fails_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "_programs", lambda: "unshare (util-linux) not installed")
    settings = make_settings(tmp_path / "home")
    root, _ = _root(settings)
    with root:
        log_iris(root)
        root.create_deployment("iris", "svc", "models:/iris/iris/1")
        try:
            d = root.get_deployment("iris", "svc")
            assert [(r.state, r.pid) for r in d.replicas] == [("failed", None)]
            [event] = [e for e in root.deployment_history("iris", "svc") if "sandbox" in e.reason]
            assert "unshare (util-linux) not installed" in event.reason
            assert "replicas of deployments" in event.reason
        finally:
            root.delete_deployment("iris", "svc")


def test_a_damaged_model_cache_is_fetched_again(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    cached = settings.home / "serving" / "models" / "iris" / "iris" / "1"
    with Client(settings=settings) as client:
        log_iris(client)
        client.create_deployment("iris", "first", "models:/iris/iris/1")
        try:
            deployment_ready(client, "iris", "first")
        finally:
            client.delete_deployment("iris", "first")
        [weights] = [p for p in cached.iterdir() if p.name != "MLmodel.json"]
        weights.chmod(0o644)
        weights.write_bytes(b"not the registered bytes")  # after it was fetched
        client.create_deployment("iris", "second", "models:/iris/iris/1")
        try:
            d = deployment_ready(client, "iris", "second")
            assert _post(d.port, "iris", [IRIS_ROW])[:2] == (200, "iris/1")
            # damaged under a running replica (the served files are links to the
            # cache's): once it stops, its files are linked afresh, fetched again
            served = settings.home / "serving" / "deployments" / _deployment(settings, "second").id
            [linked] = [p for p in (served / "versions" / "1").iterdir() if p.name == weights.name]
            linked.chmod(0o644)
            linked.write_bytes(b"damaged again")
            [replica] = d.replicas
            assert replica.pid is not None
            os.kill(replica.pid, signal.SIGKILL)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                [now] = client.get_deployment("iris", "second").replicas
                if now.pid not in (None, replica.pid) and now.state == "ready":
                    break
                time.sleep(0.3)
            assert now.state == "ready" and now.pid != replica.pid, now
            assert _post(d.port, "iris", [IRIS_ROW])[:2] == (200, "iris/1")
        finally:
            client.delete_deployment("iris", "second")
