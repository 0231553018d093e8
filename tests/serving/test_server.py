"""``plinth serve`` over a real scikit-learn model (LogisticRegression on iris, saved
with ``save_model``), as a real server process: both protocols, health, metrics, the
version header, and every refusal (400 naming the field, 404, 413, 415)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.conftest import Served, served

pytestmark = pytest.mark.slow
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
PREDICT = "/v1/models/iris:predict"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from plinth.registry.flavors import save_model

    frame = load_iris(as_frame=True).frame
    features = frame.drop(columns="target").set_axis(COLUMNS, axis=1)
    model = LogisticRegression(max_iter=500).fit(features, frame["target"])
    directory = tmp_path_factory.mktemp("iris") / "model"
    save_model(model, directory, input_example=features.iloc[:5])
    return directory


def plinth_serve(directory: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "plinth.serving", str(directory), "--name", "iris", *options]


@pytest.fixture(scope="module")
def iris(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    args = plinth_serve(iris_dir, "--max-body-bytes", "4096")
    with served(args, tmp_path_factory.mktemp("serve")) as server:
        yield server


def test_v1_predicts_records_and_columns(iris: Served) -> None:
    status, headers, body = iris.post(PREDICT, {"instances": [ROW, {**ROW, "petal_length": 6}]})
    assert status == 200 and headers["x-plinth-model-version"] == "iris/local"
    assert body["predictions"][0] == 0 and len(body["predictions"]) == 2
    columns = {name: [value] for name, value in ROW.items()}
    assert iris.post(PREDICT, {"inputs": columns})[2] == {"predictions": [0]}


def test_v2_infer_metadata_and_health(iris: Served) -> None:
    inputs = [
        {"name": name, "shape": [2], "datatype": "FP64", "data": [value, value]}
        for name, value in ROW.items()
    ]
    status, headers, body = iris.post("/v2/models/iris/infer", {"id": "q1", "inputs": inputs})
    assert status == 200 and headers["x-plinth-model-version"] == "iris/local"
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "local", "q1")
    [output] = body["outputs"]
    assert output["shape"] == [2] and output["data"] == [0, 0]
    status, _, meta = iris.get("/v2/models/iris")
    assert status == 200 and meta["platform"] == "sklearn" and meta["versions"] == ["local"]
    assert [spec["name"] for spec in meta["inputs"]] == COLUMNS
    assert {spec["datatype"] for spec in meta["inputs"]} == {"FP64"}
    for path in ("/v2/models/iris/ready", "/v2/health/ready", "/v2/health/live", "/healthz"):
        status, headers, _ = iris.get(path)
        assert status == 200 and headers["x-plinth-model-version"] == "iris/local"
    assert iris.get("/ready")[0] == 200


def test_a_web_page_whose_name_leads_here_gets_no_prediction(iris: Served) -> None:
    """DNS rebinding: a page of evil.example, its name made to lead to 127.0.0.1, sends
    its own Host header; a server on loopback answers loopback names only."""
    body = {"instances": [ROW]}
    for host in ("evil.example", f"evil.example:{iris.port}", "127.0.0.1.evil.example"):
        status, _, answer = iris.request("POST", PREDICT, body, headers={"Host": host})
        assert status == 400 and "Host header" in answer["error"]["message"], host
        assert iris.request("GET", "/metrics", headers={"Host": host})[0] == 400
    for host in (f"localhost:{iris.port}", f"127.0.0.1:{iris.port}", "LOCALHOST"):
        assert iris.request("POST", PREDICT, body, headers={"Host": host})[0] == 200, host


def test_allowed_hosts_can_be_named(iris_dir: Path, tmp_path: Path) -> None:
    args = plinth_serve(iris_dir, "--allowed-host", "*.models.example")
    with served(args, tmp_path) as server:
        body = {"instances": [ROW]}
        ok = server.request("POST", PREDICT, body, headers={"Host": "a.models.example"})
        assert ok[0] == 200
        assert server.request("POST", PREDICT, body, headers={"Host": "localhost"})[0] == 200
        assert server.request("POST", PREDICT, body, headers={"Host": "models.example"})[0] == 400


def test_a_bad_field_is_a_400_that_names_it(iris: Served) -> None:
    missing = {k: v for k, v in ROW.items() if k != "petal_width"}
    status, headers, body = iris.post(PREDICT, {"instances": [missing]})
    assert status == 400 and body["error"]["type"] == "InvalidInput"
    assert "petal_width" in body["error"]["message"]
    assert headers["x-plinth-model-version"] == "iris/local"
    status, _, body = iris.post(PREDICT, {"instances": [{**ROW, "sepal_length": "long"}]})
    assert status == 400 and "sepal_length" in body["error"]["message"]
    status, _, body = iris.post(PREDICT, {"instances": [{**ROW, "colour": 1}]})
    assert status == 400 and "colour" in body["error"]["message"]
    status, _, body = iris.post(PREDICT, raw=b"{not json")
    assert status == 400 and "JSON" in body["error"]["message"]


def test_refusals_unknown_model_large_body_pickle(iris: Served) -> None:
    status, headers, body = iris.post("/v1/models/churn:predict", {"instances": [ROW]})
    assert status == 404 and body["error"]["type"] == "NotFound"
    assert headers["x-plinth-model-version"] == "iris/local"
    assert iris.get("/v2/models/churn")[0] == 404
    assert iris.post("/v2/models/churn/infer", {"inputs": []})[0] == 404
    status, _, body = iris.post(PREDICT, {"instances": [ROW] * 100})  # over 4096 bytes
    assert status == 413 and body["error"]["type"] == "PayloadTooLarge"
    # a few bytes that would make millions of empty rows; a body in UTF-16 or UTF-32,
    # which the depth and surrogate checks, reading bytes, do not see as they are
    tensor = {"name": COLUMNS[0], "shape": [30_000_000, 0], "datatype": "FP64", "data": []}
    huge = {"inputs": [tensor]}
    status, _, body = iris.post("/v2/models/iris/infer", huge)
    assert status == 400 and "holds no values" in body["error"]["message"]
    for encoding in ("utf-16", "utf-32"):
        wide = json.dumps({"instances": [ROW]}).encode(encoding)
        status, _, body = iris.post(PREDICT, None, raw=wide)
        assert status == 400 and "UTF-8" in body["error"]["message"]
    for kind in ("application/python-pickle", "application/x-pickle", "application/pickle"):
        pickled = b"\x80\x04\x95\x00cos\nsystem\n."  # never parsed, let alone unpickled
        status, _, body = iris.post(PREDICT, None, raw=pickled, headers={"Content-Type": kind})
        assert status == 415 and "never unpickled" in body["error"]["message"]


def test_metrics_are_exposed_and_count(iris: Served) -> None:
    errors = iris.metric('plinth_serving_errors_total{code="400"}')
    answered = iris.metric('plinth_serving_requests_total{code="200",protocol="v1"}')
    iris.post(PREDICT, {"instances": [ROW]})
    iris.post(PREDICT, {"instances": [{"sepal_length": 1}]})
    status, headers, text = iris.get("/metrics")
    assert status == 200 and headers["x-plinth-model-version"] == "iris/local"
    for name in (
        "plinth_serving_request_duration_seconds_bucket",
        "plinth_serving_batch_size_bucket",
        "plinth_serving_queue_depth",
        "plinth_serving_in_flight",
    ):
        assert name in text
    assert iris.metric('plinth_serving_errors_total{code="400"}') == errors + 1
    assert iris.metric('plinth_serving_requests_total{code="200",protocol="v1"}') == answered + 1


def test_the_ready_line_prints_a_curl_command(iris: Served) -> None:
    import time

    deadline = time.monotonic() + 10  # /ready answers a moment before the line is flushed
    while "curl -s" not in (log := iris.log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"http://127.0.0.1:{iris.port}" in log
    assert "curl -s" in log and "/v1/models/iris:predict" in log and "sepal_length" in log


def test_two_workers_each_load_the_model(iris_dir: Path, tmp_path: Path) -> None:
    with served(plinth_serve(iris_dir, "--workers", "2"), tmp_path) as server:
        pids = set()
        deadline = time.monotonic() + 60  # the second worker may still be loading
        while time.monotonic() < deadline:  # new connections land on either worker
            body = server.get("/healthz")[2]
            pids.add(body["pid"])
            if len(pids) == 2:
                break
            time.sleep(0.02)
        assert len(pids) == 2 and server.proc.pid not in pids
        assert server.post(PREDICT, {"instances": [ROW]})[2] == {"predictions": [0]}


def test_a_directory_without_a_model_is_refused_in_one_line(tmp_path: Path) -> None:
    import subprocess

    from tests.processes import REPO, child_env

    result = subprocess.run(
        [sys.executable, "-m", "plinth.serving", str(tmp_path), "--port", "0"],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no saved model (no MLmodel.json)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_pickled_model_loads_only_when_asked_and_only_in_a_worker(tmp_path: Path) -> None:
    import subprocess

    from plinth.registry.flavors import save_model
    from tests.processes import REPO, child_env
    from tests.serving.fakes import Adder

    directory = tmp_path / "adder"
    save_model(Adder(), directory, flavor="python")
    refused = subprocess.run(
        [sys.executable, "-m", "plinth.serving", str(directory), "--port", "0"],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "unsafe_pickle" in refused.stderr and "--unsafe-pickle" in refused.stderr
    args = [sys.executable, "-m", "plinth.serving", str(directory), "--unsafe-pickle"]
    with served(args, tmp_path) as server:
        assert server.get("/healthz")[2]["pid"] != server.proc.pid  # loaded in a worker
        body = {"instances": [{"a": 1, "b": 2}]}
        assert server.post("/v1/models/adder:predict", body)[2] == {"predictions": [3]}


def test_a_stalled_body_gets_408_and_holds_nothing_up(iris_dir: Path, tmp_path: Path) -> None:
    import http.client
    import socket

    args = plinth_serve(iris_dir, "--body-idle-seconds", "1")
    with served(args, tmp_path) as server:
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = (
            "POST /v1/models/iris:predict HTTP/1.1\r\nHost: localhost\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        stalled.sendall(head.encode())
        assert server.post(PREDICT, {"instances": [ROW]})[0] == 200  # others go on
        answer = http.client.HTTPResponse(stalled)  # read whole, however it arrives
        answer.begin()
        body = answer.read().decode()
        stalled.close()
        assert answer.status == 408 and "no request bytes" in body
