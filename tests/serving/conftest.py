"""Real servers for the serving tests: each a process on a free loopback port, killed
(by its own pid) at the end of the module whatever the tests did."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.processes import REPO, child_env
from tests.services import free_port


class Served:
    """A running server process and small helpers to call it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            payload = raw if raw is not None else (None if body is None else json.dumps(body))
            sent = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=payload, headers=sent)
            response = conn.getresponse()
            data = response.read()
            kind = response.getheader("content-type") or ""
            parsed = json.loads(data) if kind.startswith("application/json") else data.decode()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
        finally:
            conn.close()

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return self.request("POST", path, body, **kw)

    def get(self, path: str) -> tuple[int, dict[str, str], Any]:
        return self.request("GET", path)

    def concurrently(self, path: str, bodies: list[Any]) -> list[tuple[int, dict[str, str], Any]]:
        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(lambda body: self.post(path, body), bodies))

    def metric(self, name: str) -> float:
        """``NAME`` or ``NAME{label="value",…}`` read from /metrics: the sum of the
        samples of that name whose labels include those given (0 when none), so that
        ``plinth_serving_errors_total{code="400"}`` counts every version's."""
        from prometheus_client.parser import text_string_to_metric_families

        wanted_name, _, labels = name.partition("{")
        wanted = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        return sum(
            float(sample.value)
            for family in text_string_to_metric_families(self.get("/metrics")[2])
            for sample in family.samples
            if sample.name == wanted_name and wanted.items() <= sample.labels.items()
        )


@contextmanager
def served(args: list[str], tmp: Path, timeout: float = 60.0, **env: str) -> Iterator[Served]:
    """Start ``args`` (a command that takes ``--port``) with ``env`` added to its
    environment, wait until /ready answers."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*args, "--port", str(port)],
            cwd=REPO,
            env=child_env(**env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Served(proc, port, log)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(server: Served, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{server.log.read_text()}")
        try:
            if server.get("/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server was not ready in {timeout}s:\n{server.log.read_text()}")


def fake_server(*options: str) -> list[str]:
    return [sys.executable, "-m", "tests.serving.fake_server", *options]


IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def log_iris(client: Any, *strengths: float) -> None:
    """Versions 1, 2, … of model ``iris`` in project ``iris``: a logistic regression
    on iris for each regularisation strength ``C`` given (one of C=1 by default)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    frame = load_iris(as_frame=True).frame
    features = frame.drop(columns="target").set_axis(list(IRIS_ROW), axis=1)
    run = client.create_run("iris")
    for c in strengths or (1.0,):
        model = LogisticRegression(C=c, max_iter=500).fit(features, frame["target"])
        example = features.iloc[:5]
        client.log_model(run.id, model, "iris", input_example=example, artifact_path=f"m{c}")


def deployment_ready(client: Any, project: str, name: str) -> Any:
    """The deployment once every replica is ready (90 s at most)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        d = client.get_deployment(project, name)
        if d.replicas and all(r.state == "ready" for r in d.replicas):
            return d
        time.sleep(0.3)
    raise AssertionError(f"replicas not ready: {d.replicas}")
