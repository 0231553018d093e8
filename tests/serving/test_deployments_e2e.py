"""One deployment end to end: a real sklearn model served by real replica processes
behind one URL, a 90/10 canary answering in both versions, a rollback under a steady
stream of requests with no request failed, and a delete that leaves no replica."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from plinth import Client
from plinth.serving.records import read_records
from tests.conftest import make_settings
from tests.serving.conftest import IRIS_ROW, deployment_ready, log_iris

pytestmark = pytest.mark.slow


def _predict(port: int, host: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = json.dumps({"instances": [IRIS_ROW]})
        headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
        conn.request("POST", "/v1/models/iris:predict", body, headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status, answer.getheader("x-plinth-model-version") or ""
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except OSError:
        return False


def test_a_deployment_canaries_rolls_back_under_load_and_goes(tmp_path: Path) -> None:
    with Client(settings=make_settings(tmp_path / "home")) as client:
        log_iris(client, 1.0, 0.5)
        client.set_model_alias("iris", "iris", "champion", 1)
        champion = "models:/iris/iris@champion"
        d = client.create_deployment("iris", "iris-svc", champion, replicas=2, min_replicas=2)
        pids: list[int] = []
        try:
            d = deployment_ready(client, "iris", "iris-svc")
            pids = [r.pid for r in d.replicas if r.pid]
            assert len(set(pids)) == 2
            assert _predict(d.port) == (200, "iris/1")

            d = client.update_deployment(
                "iris", "iris-svc", canary="models:/iris/iris/2", weight=10
            )
            seen = {_predict(d.port)[1] for _ in range(200)}
            assert seen == {"iris/1", "iris/2"}

            failures: list[Any] = []
            answered: list[str] = []
            stop = threading.Event()

            def steady() -> None:
                while not stop.is_set():
                    try:
                        status, version = _predict(d.port)
                    except OSError as exc:
                        failures.append(exc)
                        continue
                    (answered if status == 200 else failures).append(version or status)

            streams = [threading.Thread(target=steady) for _ in range(2)]
            for stream in streams:
                stream.start()
            time.sleep(0.5)
            client.rollback_deployment("iris", "iris-svc", reason="canary regressed")
            after = len(answered)
            time.sleep(0.5)
            stop.set()
            for stream in streams:
                stream.join()
            assert failures == [] and len(answered) > after
            assert set(answered[after + 8 :]) == {"iris/1"}  # the rollback took
            assert [r.pid for r in client.get_deployment("iris", "iris-svc").replicas] == pids
        finally:
            client.delete_deployment("iris", "iris-svc")
        assert not any(_alive(pid) for pid in pids)
        assert os.path.exists(tmp_path / "home")


def test_a_killed_replica_is_restarted_and_serves_again(tmp_path: Path) -> None:
    import signal

    with Client(settings=make_settings(tmp_path / "home")) as client:
        log_iris(client)
        d = client.create_deployment("iris", "crashy", "models:/iris/iris/1", record_sample=1.0)
        try:
            d = deployment_ready(client, "iris", "crashy")
            [first] = [r.pid for r in d.replicas if r.pid]
            os.kill(first, signal.SIGKILL)  # the OOM killer, say
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:  # the embedded supervisor ticks every second
                [replica] = client.get_deployment("iris", "crashy").replicas
                if replica.pid not in (None, first) and replica.state == "ready":
                    break
                time.sleep(0.3)
            assert replica.pid != first and replica.restarts >= 1, replica
            assert _predict(d.port) == (200, "iris/1")
            assert _predict(d.port, "evil.example")[0] == 400  # DNS rebinding
            records: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            while not records and time.monotonic() < deadline:  # written off the request path
                time.sleep(0.3)
                for folder in (tmp_path / "home" / "serving" / "records").glob("*"):
                    records += list(read_records(folder))
            assert records and {r["version"] for r in records} == {"1"}
        finally:
            client.delete_deployment("iris", "crashy")
