"""Traffic per model version: a deployment's replica counts its requests, their latency
and its errors by the version that answered, and what it counted reads back per version
(``serving.observe``), on its own ``/metrics`` and on the deployment's page."""

from __future__ import annotations

import collections
import http.client
import json
import re
from pathlib import Path
from typing import Any

import pytest

from plinth import Client
from plinth.serving import observe
from tests.conftest import make_settings, raw_http
from tests.serving.conftest import IRIS_ROW, deployment_ready, log_iris

pytestmark = pytest.mark.slow
ANSWERED = 200  # good requests
REFUSED = 10  # requests each version's signature refuses (400)


def _predict(port: int, row: dict[str, Any]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = json.dumps({"instances": [row]})
        conn.request("POST", "/v1/models/iris:predict", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        return answer.status, answer.getheader("x-plinth-model-version") or ""
    finally:
        conn.close()


def test_a_90_10_split_is_counted_per_version(tmp_path: Path) -> None:
    with Client(settings=make_settings(tmp_path / "home")) as client:
        log_iris(client, 1.0, 0.5)
        client.create_deployment("iris", "split", "models:/iris/iris/1")
        try:
            d = deployment_ready(client, "iris", "split")
            d = client.update_deployment("iris", "split", canary="models:/iris/iris/2", weight=10)
            # what each answer says answered it: the truth the metrics must match
            good = collections.Counter(_predict(d.port, IRIS_ROW) for _ in range(ANSWERED))
            bad_row = {**IRIS_ROW, "sepal_length": "wide"}
            bad = collections.Counter(_predict(d.port, bad_row) for _ in range(REFUSED))
            assert set(good) == {(200, "iris/1"), (200, "iris/2")}, good
            assert {status for status, _ in bad} == {400}, bad
            requests = {v: good[200, f"iris/{v}"] + bad[400, f"iris/{v}"] for v in ("1", "2")}
            errors = {v: bad[400, f"iris/{v}"] for v in ("1", "2")}

            # the replica's own /metrics (one replica: the deployment's port is its)
            conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
            conn.request("GET", "/metrics")
            totals = observe.parse(conn.getresponse().read().decode())
            conn.close()
            counted = {v: c.requests for v, c in totals.versions.items()}
            assert counted == requests and all(n > 0 for n in counted.values())
            assert sum(counted.values()) == totals.requests == ANSWERED + REFUSED
            assert {v: c.errors for v, c in totals.versions.items()} == errors
            for version in ("1", "2"):
                buckets = totals.versions[version].buckets
                assert buckets[float("inf")] == requests[version]  # a latency for each

            # the deployment's page reads the same through the control plane
            fragment = raw_http(client).get("/projects/iris/deployments/split/traffic").text
            rows = re.findall(
                r'<tr data-version="(\d+)">.*?<td class="num requests">(\d+)</td>', fragment, re.S
            )
            assert {v: float(n) for v, n in rows} == requests
        finally:
            client.delete_deployment("iris", "split")
