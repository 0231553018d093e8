"""Prediction records: a real ``plinth serve`` process records every sampled answer
under the id it returned (and nothing at sample 0); a full queue drops and counts
without failing a request; the shadow's answers are recorded with ``shadow: true``;
large inputs are left out and marked; the reader skips a torn last line."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plinth.errors import InvalidInput
from plinth.serving.app import ServingApp
from plinth.serving.model import ServedModel
from plinth.serving.record_pages import PageQuery, read_page
from plinth.serving.records import Recorder, RecordSettings, read_records, record_files
from plinth.serving.split import Split
from tests.serving.conftest import served
from tests.serving.fakes import Adder, TwoColumns, fake_model
from tests.serving.test_server import PREDICT, ROW, iris_dir, plinth_serve  # noqa: F401

INFER = "/v2/models/iris/infer"


def _v2(row: dict[str, float]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in row.items()
        ]
    }


def _wait_for(directory: Path, count: int) -> list[dict[str, Any]]:
    """The records once ``count`` are written (the writer flushes each batch)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = list(read_records(directory))
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{len(found)} records of {count} after 30s")


@pytest.mark.slow
def test_a_server_records_every_answer_under_the_id_it_returned(
    iris_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    records = tmp_path / "records"
    args = plinth_serve(iris_dir, "--record-dir", str(records), "--record-sample", "1.0")
    answered: dict[str, Any] = {}
    with served(args, tmp_path) as server:
        for n in range(6):
            row = {**ROW, "petal_length": 1.0 + n}
            status, headers, body = server.post(PREDICT, {"instances": [row]})
            assert status == 200
            answered[headers["x-plinth-prediction-id"]] = ([row], body["predictions"])
        status, headers, body = server.post(INFER, _v2(ROW))
        assert status == 200 and body["id"] == headers["x-plinth-prediction-id"]
        answered[body["id"]] = (_v2(ROW)["inputs"], body["outputs"])
        status, headers, body = server.post(INFER, {**_v2(ROW), "id": "mine"})
        assert body["id"] == "mine" and headers["x-plinth-prediction-id"] != "mine"
        answered[headers["x-plinth-prediction-id"]] = (_v2(ROW)["inputs"], body["outputs"])
        assert server.metric("plinth_serving_records_dropped_total") == 0
        found = _wait_for(records, len(answered))
    assert len(found) == len(answered) == 8
    for record in found:
        inputs, outputs = answered[record["prediction_id"]]
        assert (record["inputs"], record["outputs"]) == (inputs, outputs)
        assert (record["model"], record["version"], record["status"]) == ("iris", "local", 200)
        assert record["latency_ms"] > 0 and record["at"].endswith("+00:00")
        assert "shadow" not in record and record["file"] == record_files(records)[0].name
    assert [r["request_id"] for r in found if "request_id" in r] == ["mine"]


@pytest.mark.slow
def test_sample_zero_records_nothing_but_still_names_each_prediction(
    iris_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    records = tmp_path / "records"
    args = plinth_serve(iris_dir, "--record-dir", str(records), "--record-sample", "0")
    with served(args, tmp_path) as server:
        ids = {
            server.post(PREDICT, {"instances": [ROW]})[1]["x-plinth-prediction-id"]
            for _ in range(5)
        }
        assert len(ids) == 5
    # the server has exited: its writer closed its file
    assert record_files(records) and list(read_records(records)) == []


def _call(app: ServingApp, requests: list[tuple[str, Any]]) -> list[Any]:
    """Answers from ``app`` in this process (httpx over ASGI), then its shadow tasks."""
    import httpx

    async def go() -> list[Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            answers = [
                await (
                    http.post(path, content=body, headers={"content-type": "application/json"})
                    if isinstance(body, bytes)  # as sent, where json= would refuse it
                    else http.post(path, json=body)
                )
                for path, body in requests
            ]
            answers.append(await http.get("/metrics"))
        while app._background:  # the shadows answer after the response
            await asyncio.sleep(0.01)
        return answers

    return asyncio.run(go())


def _recorder(tmp_path: Path, hook: Callable[[int], None] | None = None, **kw: Any) -> Recorder:
    return Recorder(RecordSettings(tmp_path / "records", **kw), before_write=hook)


def test_a_full_queue_drops_and_counts_without_failing_a_request(tmp_path: Path) -> None:
    release = threading.Event()
    recorder = _recorder(tmp_path, lambda batch: release.wait(30), max_queue=2)
    app = ServingApp(fake_model(), recorder=recorder)
    body = {"instances": [{"a": 1.0, "b": 2.0}]}
    answers = _call(app, [("/v1/models/adder:predict", body)] * 13)
    assert all(a.status_code == 200 for a in answers[:-1])
    [dropped] = re.findall(r"^plinth_serving_records_dropped_total (\S+)$", answers[-1].text, re.M)
    assert float(dropped) >= 5  # the writer holds one batch, the queue two records
    release.set()
    recorder.close()
    assert len(list(read_records(tmp_path / "records"))) == 13 - float(dropped)


def test_shadow_answers_are_recorded_with_shadow_true(tmp_path: Path) -> None:
    models = {v: ServedModel("adder", v, "python", Adder(), TwoColumns()) for v in ("1", "2")}
    recorder = _recorder(tmp_path)
    app = ServingApp(Split(models, [("1", 100)], "2"), recorder=recorder)
    answers = _call(
        app, [("/v1/models/adder:predict", {"instances": [{"a": n, "b": 1}]}) for n in range(4)]
    )
    ids = {a.headers["x-plinth-prediction-id"] for a in answers[:-1]}
    assert {a.headers["x-plinth-model-version"] for a in answers[:-1]} == {"adder/1"}
    recorder.close()
    found = list(read_records(tmp_path / "records"))
    answered = [r for r in found if not r.get("shadow")]
    shadowed = [r for r in found if r.get("shadow")]
    assert {r["version"] for r in answered} == {"1"} and {r["version"] for r in shadowed} == {"2"}
    assert {r["prediction_id"] for r in answered} == {r["prediction_id"] for r in shadowed} == ids
    assert all(r["shadow"] is True and r["outputs"] == [r["inputs"][0]["a"] + 1] for r in shadowed)


def test_inputs_over_the_cap_are_left_out_and_marked(tmp_path: Path) -> None:
    recorder = _recorder(tmp_path, max_field_bytes=200)
    app = ServingApp(fake_model(), recorder=recorder)
    small = {"instances": [{"a": 1.0, "b": 2.0}]}
    large = {"instances": [{"a": float(n), "b": 0.5} for n in range(50)]}
    answers = _call(app, [("/v1/models/adder:predict", small), ("/v1/models/adder:predict", large)])
    assert [a.status_code for a in answers[:-1]] == [200, 200]
    recorder.close()
    first, second = read_records(tmp_path / "records")
    assert first["inputs"] == small["instances"] and "inputs_truncated" not in first
    assert second["inputs"] is None and second["inputs_truncated"] is True
    assert second["outputs"] == [n + 0.5 for n in range(50)] or second["outputs_truncated"]


def test_a_failed_prediction_is_recorded_with_its_status(tmp_path: Path) -> None:
    recorder = _recorder(tmp_path)
    app = ServingApp(fake_model(), recorder=recorder)
    answers = _call(app, [("/v1/models/adder:predict", {"instances": [{"a": 1.0}]})])
    assert answers[0].status_code == 400
    recorder.close()
    [record] = read_records(tmp_path / "records")
    assert record["status"] == 400 and record["outputs"] is None


def test_a_body_no_model_needs_and_no_record_could_keep_is_a_400(tmp_path: Path) -> None:
    """A lone surrogate, or nesting past json_limits.MAX_DEPTH (however deep: never a
    500 from the parser), is refused before the model sees it; the refusal is
    recorded like any other, and its record reads back a page at a time."""
    recorder = _recorder(tmp_path)
    app = ServingApp(fake_model(), recorder=recorder)
    path = "/v1/models/adder:predict"
    surrogate = rb'{"instances":[{"a":1.0,"b":2.0,"note":"\ud800"}]}'  # else fine
    pair = rb'{"instances":[{"a":1.0,"b":2.0,"note":"\ud83d\ude00"}]}'
    nested = b'{"instances":[{"a":1.0,"b":2.0,"x":' + b"[" * 64 + b"]" * 64 + b"}]}"
    answers = _call(
        app,
        [
            (path, surrogate),
            (path, pair),  # a valid pair: text like any other
            (path, nested),  # 66 deep: over
            (path, b'{"instances":' + b"[" * 5000 + b"]" * 5000 + b"}"),
            (path, b"[" * 100_000),  # not JSON, and deeper than the parser goes
        ],
    )
    statuses = [a.status_code for a in answers[:-1]]
    assert statuses == [400, 200, 400, 400, 400], [a.text for a in answers]
    assert "lone surrogate" in answers[0].json()["error"]["message"]
    assert all("more than 64 deep" in a.json()["error"]["message"] for a in answers[2:-1])
    recorder.close()
    page = read_page(tmp_path / "records", PageQuery(newest_first=False))
    assert [r["status"] for r in page.records] == statuses and page.skipped == 0
    assert page.records[1]["inputs"] == [{"a": 1.0, "b": 2.0, "note": "\U0001f600"}]
    assert all(r["inputs"] is None for r in page.records if r["status"] == 400)


def test_the_reader_skips_a_torn_last_line_and_names_a_bad_one(tmp_path: Path) -> None:
    recorder = _recorder(tmp_path)
    for n in range(3):
        recorder.submit({"prediction_id": str(n), "at": time.time(), "inputs": [n], "outputs": [n]})
    recorder.close()
    [path] = record_files(tmp_path / "records")
    with open(path, "ab") as out:
        out.write(b'{"prediction_id":"3","inputs":[')  # killed mid-write
    found = list(read_records(tmp_path / "records"))
    assert [r["prediction_id"] for r in found] == ["0", "1", "2"]
    assert {r["file"] for r in found} == {path.name}
    with open(path, "ab") as out:
        out.write(b"\n")  # the torn line is no longer the last one: the file is damaged
    with pytest.raises(InvalidInput, match=f"{path.name} line 4"):
        list(read_records(tmp_path / "records"))


def test_a_record_sample_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"0\.0 to 1\.0"):
        RecordSettings(tmp_path, sample=1.5)


@pytest.mark.slow
def test_a_replica_records_to_its_config_dir_and_samples_as_told_live(
    iris_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A replica as runtime.py starts one: records under ``records_dir`` at
    ``record_sample``; the control plane's config POST changes the sample live."""
    import json
    import subprocess
    import sys

    import httpx

    from tests.processes import REPO, child_env
    from tests.services import free_port
    from tests.serving.conftest import Served, _wait_ready

    records, port = tmp_path / "records", free_port()
    config = {
        "name": "iris",
        "generation": 1,
        "versions": [{"version": "1", "directory": str(iris_dir), "digest": _digest(iris_dir)}],
        "split": [{"version": "1", "weight": 100}],
        "shadow": None,
        "port": port,
        "records_dir": str(records),
        "record_sample": 1.0,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    sock = tmp_path / "admin.sock"
    command = [sys.executable, "-m", "plinth.serving", "--replica", str(tmp_path / "config.json")]
    command += ["--socket", str(sock), "--deployment", "records-test"]
    with open(tmp_path / "replica.log", "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=child_env(PLINTH_REPLICA_SECRET="s3cret"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Served(proc, port, tmp_path / "replica.log")
    try:
        _wait_ready(server, 60)
        first = server.post(PREDICT, {"instances": [ROW]})[1]["x-plinth-prediction-id"]
        [record] = _wait_for(records, 1)
        assert (record["prediction_id"], record["version"]) == (first, "1")
        told = {**config, "record_sample": 0}
        secret = {"Authorization": "Bearer s3cret"}
        # the control plane's path exists only on the replica's own socket: on the
        # deployment's public port, even with the secret, there is nothing there
        public = httpx.post(f"http://127.0.0.1:{port}/admin/config", json=told, headers=secret)
        assert public.status_code == 404
        unchecked = {**told, "versions": [{"version": "9", "directory": str(tmp_path)}]}
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport) as http:
            refused = http.post("http://replica/admin/config", json=unchecked, headers=secret)
            assert refused.status_code == 400 and "no digest" in refused.text
            answer = http.post("http://replica/admin/config", json=told, headers=secret)
            assert answer.status_code == 200, answer.text
        for _ in range(3):
            assert server.post(PREDICT, {"instances": [ROW]})[0] == 200
    finally:
        proc.terminate()
        proc.wait(15)
    assert [r["prediction_id"] for r in read_records(records)] == [first]


def _digest(directory: Path) -> str:
    from plinth.registry.manifest import directory_files, manifest_digest

    return manifest_digest(directory_files(directory))
