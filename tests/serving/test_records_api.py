"""Reading a deployment's prediction records through the API, the SDK and the CLI.

With the memory runtime (records written the way replicas write them): viewers read,
an outsider gets the same 404 as for a deployment that does not exist, bad filters are
a 400 naming the field (``query.FIELD``). End to end: a deployment with ``record_sample`` 1.0 and a
shadow answers through its real replica; the SDK and ``plinth deployments records``
read every answer back under the id the caller got, the filters and pages hold, and
after a replica is killed mid-write (its file left with a torn last line) the records
still read."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from plinth import Client
from plinth.core.platform import Platform
from plinth.errors import InvalidInput, NotFound
from plinth.serving import tables as t
from plinth.serving.records import deployment_records_dir, line, stamp_text
from plinth.settings import Settings
from tests.conftest import make_settings, raw_http
from tests.processes import REPO, child_env
from tests.registry.files import model_files

BASE = 1_700_000_000.0
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _root(settings: Settings) -> tuple[Client, str]:
    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
    return Client(settings=settings.model_copy(update={"token": token})), token


def _records_dir(settings: Settings, project: str, name: str) -> Path:
    platform = Platform.open(settings)
    try:
        with platform.db.read() as conn:
            [deployment_id] = conn.execute(
                sa.select(t.deployments.c.id).where(t.deployments.c.name == name)
            ).scalars()
    finally:
        platform.close()
    return deployment_records_dir(settings.home / "serving", deployment_id)


@pytest.fixture
def written(own_settings: Settings, tmp_path: Path) -> Iterator[tuple[Client, dict[str, str]]]:
    """Project "shop" with a memory-runtime deployment "svc" whose record files hold
    six answers of version 1 and their shadow's (version 2); a viewer and an outsider
    (tokens by role)."""
    root, _ = _root(own_settings)
    run = root.create_run("shop")
    for n in (1, 2):
        root.log_artifacts(run.id, model_files(tmp_path / f"m{n}", f"w{n}".encode()), f"m{n}")
        root.register_model(run.id, f"m{n}", "churn")
    root.create_deployment("shop", "svc", "models:/shop/churn/1", runtime="memory")
    rows = []
    for n in range(6):
        answer = {"prediction_id": f"p{n}", "at": BASE + n, "version": "1", "status": 200}
        answer |= {"inputs": [{"x": n}], "outputs": [n], "latency_ms": 1.5, "model": "churn"}
        rows.append(line(answer, 1 << 16, stamp_text(BASE + n + 0.01)))
        shadow = {**answer, "version": "2", "shadow": True}
        rows.append(line(shadow, 1 << 16, stamp_text(BASE + n + 0.02)))
    directory = _records_dir(own_settings, "shop", "svc")
    directory.mkdir(parents=True)
    (directory / "records-host-1-20240101T000000-00000.jsonl").write_text("".join(rows))
    tokens = {role: root.create_user(role).token.token for role in ("viewer", "outsider")}
    root.add_member("shop", "viewer", "viewer")
    yield root, tokens
    root.close()


def test_viewers_read_pages_and_filters(written: tuple[Client, dict[str, str]]) -> None:
    root, tokens = written
    http = raw_http(root)
    auth = {"Authorization": f"Bearer {tokens['viewer']}"}
    answer = http.get("/api/v1/projects/shop/deployments/svc/records", headers=auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(r["prediction_id"], r["shadow"]) for r in body["records"][:2]] == [
        ("p5", True),
        ("p5", False),
    ]
    first = body["records"][1]
    assert first["version"] == 1 and first["inputs"] == [{"x": 5}] and first["outputs"] == [5]
    assert first["status"] == 200 and first["latency_ms"] == 1.5 and first["model"] == "churn"
    assert first["at"].startswith("2023-11-14T22:13:25") and body["next_cursor"] is None
    assert "file" not in first

    page = root.deployment_records("shop", "svc", limit=4, order="asc")
    assert [(r.prediction_id, r.version) for r in page.records] == [
        ("p0", 1),
        ("p0", 2),
        ("p1", 1),
        ("p1", 2),
    ]
    rest = root.deployment_records("shop", "svc", order="asc", cursor=page.next_cursor)
    assert [r.prediction_id for r in rest.records][:2] == ["p2", "p2"] and len(rest.records) == 8
    shadows = root.deployment_records("shop", "svc", shadow=True)
    assert {r.version for r in shadows.records} == {2} and len(shadows.records) == 6
    answers = root.deployment_records("shop", "svc", version=1, since=BASE + 3.5)
    assert [r.prediction_id for r in answers.records] == ["p5", "p4"]
    assert not any(r.shadow for r in answers.records)
    iso = root.deployment_records("shop", "svc", since="2023-11-14T22:13:24", shadow=False)
    assert [r.prediction_id for r in iso.records] == ["p5", "p4"]  # no offset: UTC


def test_an_outsider_gets_the_uniform_404(written: tuple[Client, dict[str, str]]) -> None:
    root, tokens = written
    http = raw_http(root)
    outsider = {"Authorization": f"Bearer {tokens['outsider']}"}
    hidden = http.get("/api/v1/projects/shop/deployments/svc/records", headers=outsider)
    missing = http.get("/api/v1/projects/shop/deployments/nope/records")
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.json()["error"]["message"] == "no deployment 'svc' in project 'shop'"
    assert missing.json()["error"]["message"] == "no deployment 'nope' in project 'shop'"
    with pytest.raises(NotFound):
        root.deployment_records("shop", "nope")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("since=yesterday", "since"),
        ("version=0", "version"),
        ("version=two", "version"),
        ("shadow=maybe", "shadow"),
        ("order=sideways", "order"),
        ("cursor=not-ours", "cursor"),
        (f"cursor={'x' * 1001}", "cursor"),
    ],
)
def test_bad_filters_are_a_400_naming_the_field(
    written: tuple[Client, dict[str, str]], query: str, field: str
) -> None:
    root, _ = written
    answer = raw_http(root).get(f"/api/v1/projects/shop/deployments/svc/records?{query}")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"].startswith(f"query.{field}: "), answer.text
    with pytest.raises(InvalidInput):
        key, value = query.split("=")
        kwargs: dict[str, Any] = {key: int(value) if value.isdigit() else value}
        root.deployment_records("shop", "svc", **kwargs)


@pytest.mark.parametrize(
    ("since", "count"),
    [
        ("9999-12-31T23:59:59.999999", 0),  # no offset: UTC, a microsecond before the end
        ("9999-12-31T23:59:59-01:00", 0),  # past the end once in UTC: nothing is after it
        ("0001-01-01T00:00:00+01:00", 12),  # before the start once in UTC: everything is
    ],
)
def test_since_at_the_ends_of_the_calendar_is_a_page_never_an_error(
    written: tuple[Client, dict[str, str]], since: str, count: int
) -> None:
    root, _ = written
    for order in ("desc", "asc"):
        answer = raw_http(root).get(
            "/api/v1/projects/shop/deployments/svc/records",
            params={"since": since, "order": order},
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["records"]) == count


def test_a_record_no_response_could_carry_costs_only_itself(
    own_settings: Settings, written: tuple[Client, dict[str, str]]
) -> None:
    """Lines an older writer could leave (the writer of now never does): a lone
    surrogate in the inputs is left out and marked; nesting too deep to send, or to
    parse, skips the line and counts it. Every page holding them still answers."""
    root, _ = written
    directory = _records_dir(own_settings, "shop", "svc")
    odd = [
        r'"inputs":["\ud800"]',
        '"inputs":' + "[" * 300 + "]" * 300,
        '"inputs":' + "[" * 990 + "]" * 990,
        '"inputs":' + "[" * 5000 + "]" * 5000,
    ]
    lines = []
    for n, fields in enumerate(odd):
        stamp = stamp_text(BASE + n + 0.015)
        lines.append(f'{{"prediction_id":"odd{n}","version":1,"recorded_at":"{stamp}",{fields}}}\n')
    (directory / "records-host-2-20240101T000000-00000.jsonl").write_text("".join(lines))
    answer = raw_http(root).get("/api/v1/projects/shop/deployments/svc/records")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["skipped"] == 3 and len(body["records"]) == 13
    [kept] = [r for r in body["records"] if r["prediction_id"].startswith("odd")]
    assert (kept["prediction_id"], kept["inputs"], kept["inputs_truncated"]) == ("odd0", None, True)
    paged = [root.deployment_records("shop", "svc", limit=1)]
    while paged[-1].next_cursor is not None:
        paged.append(root.deployment_records("shop", "svc", limit=1, cursor=paged[-1].next_cursor))
    assert [r.prediction_id for p in paged for r in p.records] == [
        r["prediction_id"] for r in body["records"]
    ]


def test_record_files_that_cannot_be_read_are_a_503(
    own_settings: Settings,
    written: tuple[Client, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    from plinth.serving import record_pages

    root, _ = written

    def failing(path: Path) -> Any:  # a disk that fails, not a file that went away
        raise OSError(errno.EIO, "I/O error", path.name)

    monkeypatch.setattr(record_pages, "open_record_file", failing)
    answer = raw_http(root).get("/api/v1/projects/shop/deployments/svc/records")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["message"] == "the prediction records cannot be read now"
    monkeypatch.undo()
    assert raw_http(root).get("/api/v1/projects/shop/deployments/svc/records").status_code == 200


def test_what_a_replica_leaves_in_its_records_folder_is_not_followed(
    own_settings: Settings, written: tuple[Client, dict[str, str]], tmp_path: Path
) -> None:
    """The folder is the replica's to write: a link under a record's name to a file only
    the server may read was served as records, and a FIFO blocked the reader."""
    root, _ = written
    private = tmp_path / "server-only.jsonl"
    stolen = {"prediction_id": "STOLEN", "at": BASE, "version": "1", "status": 200}
    private.write_text(line(stolen | {"inputs": [{"x": 9}]}, 1 << 16, stamp_text(BASE + 0.5)))
    private.chmod(0o600)
    folder = _records_dir(own_settings, "shop", "svc")
    (folder / "records-zzz-1-20990101T000000-00000.jsonl").symlink_to(private)

    def listed() -> list[str]:
        answer = raw_http(root).get("/api/v1/projects/shop/deployments/svc/records")
        assert answer.status_code == 200, answer.text
        return [r["prediction_id"] for r in answer.json()["records"]]

    assert "STOLEN" not in listed() and len(listed()) == 12
    os.mkfifo(folder / "records-zzz-2-20990101T000000-00000.jsonl")  # read, it blocks
    assert len(listed()) == 12


def test_a_cursor_through_a_file_named_outside_ascii_holds(
    own_settings: Settings, written: tuple[Client, dict[str, str]]
) -> None:
    root, _ = written
    directory = _records_dir(own_settings, "shop", "svc")
    [path] = directory.iterdir()
    path.rename(directory / "records-büro-1-20240101T000000-00000.jsonl")  # an older writer's
    ids, cursor = [], None
    while True:
        page = root.deployment_records("shop", "svc", limit=5, cursor=cursor)
        ids += [r.prediction_id for r in page.records]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert ids == [f"p{n}" for n in range(5, -1, -1) for _ in (0, 1)]


# end to end: a real replica ----------------------------------------------------------


def _predict(port: int, row: dict[str, float]) -> tuple[str, str, Any]:
    """The answer's prediction id, the version that gave it, and its predictions."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = json.dumps({"instances": [row]})
        conn.request("POST", "/v1/models/iris:predict", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = json.loads(answer.read())
        assert answer.status == 200, data
        return (
            answer.getheader("x-plinth-prediction-id") or "",
            answer.getheader("x-plinth-model-version") or "",
            data["predictions"],
        )
    finally:
        conn.close()


def _ready(client: Client, project: str, name: str, not_pid: int | None = None) -> Any:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        d = client.get_deployment(project, name)
        states = [(r.state, r.pid) for r in d.replicas]
        if states and all(s == "ready" and pid != not_pid for s, pid in states):
            return d
        time.sleep(0.3)
    raise AssertionError(f"replicas not ready: {d.replicas}")


def _records(client: Client, count: int) -> list[Any]:
    """Every record once ``count`` are written (off the request path)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = client.deployment_records("iris", "svc", limit=1000).records
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{len(found)} records of {count} after 30s")


def _cli(home: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = child_env(PLINTH_HOME=str(home), PLINTH_TOKEN=token, COLUMNS="250")
    command = [sys.executable, "-m", "plinth", "deployments", "records", "svc", "-p", "iris"]
    return subprocess.run(
        [*command, *args], env=env, cwd=REPO, text=True, capture_output=True, timeout=120
    )


@pytest.mark.slow
def test_a_real_replicas_answers_read_back_through_the_sdk_and_the_cli(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    frame = load_iris(as_frame=True).frame
    features = frame.drop(columns="target").set_axis(list(ROW), axis=1)
    settings = make_settings(tmp_path / "home")
    root, token = _root(settings)
    with root:
        run = root.create_run("iris")
        for c in (1.0, 0.01):
            model = LogisticRegression(C=c, max_iter=500).fit(features, frame["target"])
            root.log_model(
                run.id, model, "iris", input_example=features.iloc[:5], artifact_path=f"m{c}"
            )
        root.create_deployment("iris", "svc", "models:/iris/iris/1", record_sample=1.0)
        try:
            root.update_deployment("iris", "svc", shadow="models:/iris/iris/2")
            d = _ready(root, "iris", "svc")
            rows = [{**ROW, "petal_length": 1.0 + n} for n in range(6)]
            answered = {}
            for row in rows:
                prediction_id, version, predictions = _predict(d.port, row)
                assert version == "iris/1"
                answered[prediction_id] = (row, predictions)
            found = _records(root, 12)  # six answers, six shadow answers

            stamps = [r.recorded_at for r in found]
            assert stamps == sorted(stamps, reverse=True)  # newest first
            returned = [r for r in found if not r.shadow]
            assert {r.prediction_id for r in returned} == set(answered)
            for r in returned:
                assert (r.version, r.status, r.model) == (1, 200, "iris")
                assert (r.inputs, r.outputs) == (
                    [answered[r.prediction_id][0]],
                    answered[r.prediction_id][1],
                )
                assert r.latency_ms is not None and r.latency_ms > 0
            shadowed = root.deployment_records("iris", "svc", shadow=True).records
            assert {r.prediction_id for r in shadowed} == set(answered)
            assert {r.version for r in shadowed} == {2}
            assert root.deployment_records("iris", "svc", version=2).records == shadowed
            oldest = root.deployment_records("iris", "svc", order="asc").records
            assert oldest == found[::-1]
            paged, cursor = [], None
            while True:
                page = root.deployment_records("iris", "svc", limit=5, cursor=cursor)
                paged += page.records
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert paged == found
            fourth = sorted(returned, key=lambda r: r.at)[3].at
            later = root.deployment_records("iris", "svc", since=fourth, shadow=False).records
            assert {r.prediction_id for r in later} == {
                r.prediction_id for r in returned if r.at >= fourth
            }

            out = _cli(settings.home, token, "--json", "--limit", "3", "--version", "1")
            assert out.returncode == 0, out.stderr
            printed = json.loads(out.stdout)
            assert [r["prediction_id"] for r in printed["records"]] == [
                r.prediction_id for r in returned[:3]
            ]
            assert printed["next_cursor"]
            out = _cli(settings.home, token, "--no-shadow")
            assert out.returncode == 0, out.stderr
            assert all(p in out.stdout for p in answered) and "prediction" in out.stdout

            # killed mid-write: its file ends in a torn line; the restarted replica
            # writes files of its own, and every record still reads
            [replica] = d.replicas
            assert replica.pid is not None
            os.kill(replica.pid, signal.SIGKILL)
            directory = _records_dir(settings, "iris", "svc")
            [torn] = [f for f in directory.iterdir() if f"-{replica.pid}-" in f.name]
            with open(torn, "ab") as out_file:
                out_file.write(b'{"prediction_id":"torn","inputs":[')
            d = _ready(root, "iris", "svc", not_pid=replica.pid)
            last, _, _ = _predict(d.port, ROW)
            after = _records(root, 14)
            assert after[0].prediction_id == last or after[1].prediction_id == last
            assert [r for r in after if r.prediction_id != last] == found
            assert root.deployment_records("iris", "svc", limit=1000).skipped == 0
        finally:
            root.delete_deployment("iris", "svc")
