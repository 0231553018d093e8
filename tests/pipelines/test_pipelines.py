"""Pipelines run by the server over the real store: each step a compute job (a real
local process), outputs as artifacts, steps reused only when their key (code, values,
upstream outputs, dataset versions) is unchanged; failures resumed; triggers that fire
once; roles and the uniform 404."""

from __future__ import annotations

import contextlib
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from plinth import Client
from plinth.api.blocking import Blocking
from plinth.api.context import Services
from plinth.core.access import LOCAL
from plinth.core.platform import Platform
from plinth.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from plinth.pipelines import schemas as s
from plinth.pipelines import tables as t
from plinth.pipelines.service import PipelineService
from plinth.pipelines.triggers import TriggerService
from plinth.server.app import build_services
from plinth.settings import ComputeSettings, Settings
from tests.conftest import make_settings, raw_http

WAIT = 180.0

FLOW = """
import json
from pathlib import Path

import plinth

SCALE = 2


def helper(x):
    return x * SCALE


@plinth.step
def load(n: int, data):
    rows = json.loads((data / "rows.json").read_text())
    return rows[:n]


@plinth.step
def double(xs, factor=1):
    return [helper(x) * factor for x in xs]


@plinth.step
def total(xs, ys, gate=None):
    if gate is not None and not Path(gate).exists():
        raise RuntimeError(f"the gate {gate} is closed")
    return {"xs": sum(xs), "ys": sum(ys)}


@plinth.pipeline
def flow(n: int = 3, factor: int = 1, gate: str = ""):
    xs = load(n, plinth.dataset("numbers"))
    ys = double(xs, factor=factor)
    return total(xs, ys, gate=gate or None)
"""


class Flow:
    """A pipeline module in a working directory of its own, editable between runs."""

    def __init__(self, root: Path, source: str = FLOW) -> None:
        self.root = root
        self.module = f"flow_{uuid.uuid4().hex[:8]}"
        self.file = root / f"{self.module}.py"
        root.mkdir(parents=True, exist_ok=True)
        self.file.write_text(source)

    @property
    def ref(self) -> str:
        return f"{self.module}:flow"

    def edit(self, old: str, new: str) -> None:
        text = self.file.read_text()
        assert old in text
        self.file.write_text(text.replace(old, new))

    def run(self, client: Client, project: str, **kw: Any) -> s.PipelineRun:
        params = kw.pop("params", {})
        return client.run_pipeline(
            project, self.ref, params, workdir=self.root, wait=True, timeout=WAIT, **kw
        )


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[Flow]:
    found = Flow(tmp_path / "work")
    yield found
    sys.modules.pop(found.module, None)


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[Client]:
    with Client(settings=make_settings(tmp_path / "home")) as c:
        yield c


def _numbers(client: Client, project: str, tmp_path: Path, rows: list[int]) -> str:
    folder = tmp_path / f"numbers-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "rows.json").write_text(str(rows))
    return client.push_dataset(project, "numbers", [folder / "rows.json"]).ref


def _output(client: Client, run: s.PipelineRun, step: str, tmp_path: Path) -> Any:
    from plinth.pipelines import values

    found = run.step(step)
    assert found.run_id is not None
    dest = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    return values.load(client.download_artifact(found.run_id, "outputs/0", dest))


def _states(run: s.PipelineRun) -> dict[str, str]:
    return {step.name: step.status for step in run.steps}


@contextlib.contextmanager
def another_server(settings: Settings) -> Iterator[Services]:
    """The services of a second process over the same home and database (its loops not
    started): what another server, or this one after a restart, would do."""
    platform = Platform.open(settings)
    try:
        yield build_services(platform, Blocking(inline=True))
    finally:
        platform.close()


def test_steps_run_as_jobs_and_an_unchanged_pipeline_runs_nothing(
    client: Client, project: str, flow: Flow, tmp_path: Path
) -> None:
    _numbers(client, project, tmp_path, [1, 2, 3, 4])
    first = flow.run(client, project, params={"n": 3})
    assert first.status == "succeeded", first
    assert _states(first) == {"load": "succeeded", "double": "succeeded", "total": "succeeded"}
    assert _output(client, first, "total", tmp_path) == {"xs": 6, "ys": 12}
    assert first.step("load").datasets == {"data": "numbers@1"}
    jobs = {step.job_id for step in first.steps}
    assert None not in jobs and len(jobs) == 3
    for step in first.steps:
        assert client.get_job(project, step.job_id).status == "succeeded"  # type: ignore[arg-type]
    job_runs = client.search_runs(project).runs
    tagged = {r.tags.get("plinth.step") for r in job_runs}
    assert {"load", "double", "total"} <= tagged

    again = flow.run(client, project, params={"n": 3})
    assert again.status == "succeeded"
    assert _states(again) == dict.fromkeys(("load", "double", "total"), "cached")
    assert all(step.job_id is None and step.cached_from == first.id for step in again.steps)
    assert [step.cache_key for step in again.steps] == [step.cache_key for step in first.steps]
    assert _output(client, again, "total", tmp_path) == {"xs": 6, "ys": 12}
    assert len(client.list_jobs(project).jobs) == 3  # nothing ran the second time

    forced = flow.run(client, project, params={"n": 3}, no_cache=True)
    assert _states(forced) == dict.fromkeys(("load", "double", "total"), "succeeded")
    assert len(client.list_jobs(project).jobs) == 6

    page = client.list_pipeline_runs(project)
    assert [r.id for r in page.runs] == [forced.id, again.id, first.id]
    assert (page.runs[1].cached, page.runs[1].steps) == (3, 3)

    graph = client.lineage(f"runs:/{first.step('load').run_id}", project=project)
    uris = {node.uri for node in graph.nodes}
    assert f"datasets:/{project}/numbers@1" in uris
    assert f"runs:/{first.step('double').run_id}" in uris  # load's run fed double's


def test_a_step_reruns_when_its_code_a_parameter_a_dataset_or_an_upstream_output_changes(
    sqlite_client: Client, project: str, flow: Flow, tmp_path: Path
) -> None:
    client = sqlite_client
    _numbers(client, project, tmp_path, [1, 2, 3, 4])
    base = flow.run(client, project)
    assert base.status == "succeeded"

    # its code: a constant the helper double calls reads
    flow.edit("SCALE = 2", "SCALE = 3")
    code = flow.run(client, project)
    assert _states(code) == {"load": "cached", "double": "succeeded", "total": "succeeded"}
    assert _output(client, code, "total", tmp_path) == {"xs": 6, "ys": 18}

    # a parameter only double takes
    param = flow.run(client, project, params={"factor": 2})
    assert _states(param) == {"load": "cached", "double": "succeeded", "total": "succeeded"}

    # an input dataset: a new version of it
    assert _numbers(client, project, tmp_path, [5, 6, 7, 8]) == "numbers@2"
    data = flow.run(client, project, params={"factor": 2})
    assert _states(data)["load"] == "succeeded"
    assert data.step("load").datasets == {"data": "numbers@2"}
    assert _output(client, data, "total", tmp_path) == {"xs": 18, "ys": 108}

    # an upstream output: double reruns (its code changed) but makes the same output, so
    # total, whose own inputs are then unchanged, is reused; when double's output does
    # change, total reruns though nothing of its own changed
    flow.edit(
        "    return [helper(x) * factor for x in xs]", "    return [factor * helper(x) for x in xs]"
    )
    same = flow.run(client, project, params={"factor": 2})
    assert _states(same) == {"load": "cached", "double": "succeeded", "total": "cached"}
    assert same.step("double").outputs_digest == data.step("double").outputs_digest
    changed = flow.run(client, project, params={"factor": 3})
    assert _states(changed) == {"load": "cached", "double": "succeeded", "total": "succeeded"}
    assert changed.step("total").cache_key != same.step("total").cache_key


def test_a_failed_run_resumes_from_the_failed_step(
    sqlite_client: Client, project: str, flow: Flow, tmp_path: Path
) -> None:
    client = sqlite_client
    _numbers(client, project, tmp_path, [1, 2, 3])
    gate = tmp_path / "gate"
    failed = flow.run(client, project, params={"gate": str(gate)})
    assert failed.status == "failed" and "total" in (failed.reason or "")
    assert _states(failed) == {"load": "succeeded", "double": "succeeded", "total": "failed"}
    reason = failed.step("total").reason or ""
    assert reason.startswith("RuntimeError: the gate") and "exited with code 1" in reason
    log = client.job_logs(project, failed.step("total").job_id).text  # type: ignore[arg-type]
    assert "the gate" in log and "is closed" in log

    with pytest.raises(Conflict):
        client.resume_pipeline_run(project, _succeeded(client, project, flow).id)

    gate.write_text("open")
    resumed = client.resume_pipeline_run(project, failed.id[:10])
    assert resumed.id == failed.id and resumed.status == "running"
    done = client.wait_pipeline_run(project, failed.id, timeout=WAIT)
    assert done.status == "succeeded"
    assert done.step("load").job_id == failed.step("load").job_id  # not run again
    assert done.step("double").job_id == failed.step("double").job_id
    assert done.step("total").job_id != failed.step("total").job_id


def _succeeded(client: Client, project: str, flow: Flow) -> s.PipelineRun:
    ok = flow.run(client, project)
    assert ok.status == "succeeded"
    return ok


KINDS = """
from pathlib import Path

import numpy as np
import pandas as pd
import plinth


@plinth.step(outputs=2)
def make(n: int):
    x = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    frame = pd.DataFrame({"y": [i % 2 for i in range(n)]})
    return x, frame


@plinth.step
def files(tag: str):
    out = Path("made")
    (out / "deep").mkdir(parents=True, exist_ok=True)
    (out / "deep" / "note.txt").write_text(tag)
    return out


@plinth.step
def fit(x, frame):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(x, frame["y"])


@plinth.step
def check(x, frame, folder, model, raw: bytes = None):
    return {
        "shape": list(x.shape),
        "rows": len(frame),
        "note": (folder / "deep" / "note.txt").read_text(),
        "predicts": model.predict(x).tolist(),
    }


@plinth.pipeline
def flow(n: int = 4):
    x, frame = make(n)
    return check(x, frame, files("hello"), fit(x, frame))
"""


def test_outputs_pass_between_steps_in_safe_formats(
    sqlite_client: Client, project: str, tmp_path: Path
) -> None:
    kinds = Flow(tmp_path / "kinds", KINDS)
    try:
        run = kinds.run(sqlite_client, project)
    finally:
        sys.modules.pop(kinds.module, None)
    assert run.status == "succeeded", [(x.name, x.reason) for x in run.steps]
    result = _output(sqlite_client, run, "check", tmp_path)
    assert result["shape"] == [4, 2] and result["rows"] == 4 and result["note"] == "hello"
    assert len(result["predicts"]) == 4
    outputs = sqlite_client.list_artifacts(run.step("fit").run_id, "outputs")  # type: ignore[arg-type]
    assert [a.path.rsplit("/", 1)[-1] for a in outputs] == ["model.skops", "trusted.json"]
    assert not any(a.path.endswith((".pkl", ".pickle")) for a in outputs)


def test_a_cancelled_run_stops_its_jobs(
    sqlite_client: Client, project: str, tmp_path: Path
) -> None:
    slow = Flow(
        tmp_path / "slow",
        textwrap.dedent(
            """
            import time
            import plinth

            @plinth.step
            def wait(seconds: int):
                time.sleep(seconds)
                return seconds

            @plinth.step
            def after(x):
                return x

            @plinth.pipeline
            def flow():
                return after(wait(120))
            """
        ),
    )
    try:
        run = sqlite_client.run_pipeline(project, slow.ref, workdir=slow.root)
    finally:
        sys.modules.pop(slow.module, None)
    deadline = 60.0
    import time

    start = time.monotonic()
    while sqlite_client.get_pipeline_run(project, run.id).step("wait").job_id is None:
        assert time.monotonic() - start < deadline
        time.sleep(0.2)
    sqlite_client.cancel_pipeline_run(project, run.id)
    done = sqlite_client.wait_pipeline_run(project, run.id, timeout=WAIT)
    assert done.status == "cancelled"
    assert _states(done) == {"wait": "cancelled", "after": "cancelled"}
    job = sqlite_client.get_job(project, done.step("wait").job_id)  # type: ignore[arg-type]
    assert job.status == "cancelled"


def test_triggers_fire_once_per_new_version_and_per_cron_time(
    project: str, flow: Flow, tmp_path: Path
) -> None:
    # This app fires nothing itself (it does not dispatch): the two "servers" below do.
    held = ComputeSettings(dispatch=False, handoff=False)
    settings = make_settings(tmp_path / "home", compute=held)
    with (
        Client(settings=settings) as client,
        another_server(settings) as one,
        another_server(settings) as two,
    ):
        _triggers(client, one.get(TriggerService), two.get(TriggerService), project, flow, tmp_path)


def _triggers(
    client: Client,
    service: TriggerService,
    other: TriggerService,
    project: str,
    flow: Flow,
    tmp_path: Path,
) -> None:
    _numbers(client, project, tmp_path, [1, 2])
    with pytest.raises(NotFound, match="push its first version"):
        client.create_pipeline_trigger(project, "t", flow.ref, dataset="nope", workdir=flow.root)
    with pytest.raises(InvalidInput):
        client.create_pipeline_trigger(project, "t", flow.ref, cron="61 * * * *", workdir=flow.root)
    with pytest.raises(InvalidInput, match="not both"):
        client.create_pipeline_trigger(
            project, "t", flow.ref, cron="* * * * *", dataset="numbers", workdir=flow.root
        )
    on_data = client.create_pipeline_trigger(
        project, "on-numbers", flow.ref, dataset="numbers", workdir=flow.root
    )
    assert on_data.seen_version == 1
    with pytest.raises(Conflict):
        client.create_pipeline_trigger(
            project, "on-numbers", flow.ref, dataset="numbers", workdir=flow.root
        )
    assert service.fire_triggers() == 0  # nothing new since it was made

    _numbers(client, project, tmp_path, [3, 4])
    # Two servers watching (or one restarted mid-way): the version fires once.
    fired: list[int] = []
    threads = [
        threading.Thread(target=lambda x=x: fired.append(x.fire_triggers()))
        for x in (service, other)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(fired) == [0, 1]
    assert service.fire_triggers() == 0
    [run] = client.list_pipeline_runs(project).runs
    assert run.trigger == "on-numbers"
    started = client.get_pipeline_run(project, run.id)
    assert started.step("load").datasets == {"data": "numbers@2"}  # pinned as it started

    cron = client.create_pipeline_trigger(
        project, "nightly", flow.ref, cron="0 3 * * *", workdir=flow.root
    )
    assert cron.next_at is not None and cron.next_at > cron.created_at
    assert service.fire_triggers(now=cron.next_at - 1) == 0
    assert service.fire_triggers(now=cron.next_at + 86_400 * 3) == 1  # missed ones: once
    assert service.fire_triggers(now=cron.next_at + 86_400 * 3) == 0
    nightly = {x.name: x for x in client.list_pipeline_triggers(project)}["nightly"]
    assert nightly.fired == 1 and nightly.next_at > cron.next_at + 86_400 * 3  # type: ignore[operator]

    client.delete_pipeline_trigger(project, "nightly")
    assert [x.name for x in client.list_pipeline_triggers(project)] == ["on-numbers"]
    events = [e for e in client.audit_events(project=project) if e.action.startswith("pipelines.")]
    actions = {e.action for e in events}
    assert {"pipelines.triggers.create", "pipelines.triggers.fire"} <= actions
    assert "pipelines.triggers.delete" in actions


def test_bad_runs_are_refused_and_change_nothing(
    sqlite_client: Client, project: str, flow: Flow, tmp_path: Path
) -> None:
    client = sqlite_client
    with pytest.raises(NotFound, match="numbers"):
        flow.run(client, project)  # reads a dataset that does not exist
    _numbers(client, project, tmp_path, [1])
    spec = client.trace_pipeline(flow.ref, workdir=flow.root)
    snapshot = client.upload_snapshot(project, flow.root)
    http = raw_http(client)
    url = f"/api/v1/projects/{project}/pipelines/runs"
    body = s.PipelineRunCreate(spec=spec, snapshot=snapshot).model_dump(mode="json")
    body["spec"]["steps"][1]["inputs"]["xs"] = {"kind": "output", "step": "total"}
    assert http.post(url, json=body).status_code == 400  # reads a later step
    body = s.PipelineRunCreate(spec=spec, snapshot=snapshot).model_dump(mode="json")
    body["snapshot"]["digest"] = "0" * 64
    assert http.post(url, json=body).status_code in (400, 404, 409)
    body["snapshot"] = snapshot.model_dump()
    body["spec"]["steps"][0]["function"] = "../../etc:passwd"
    assert http.post(url, json=body).status_code == 400
    assert client.list_pipeline_runs(project).runs == []
    for bad in ("not-a-run", "0" * 32, "../" * 5):
        with pytest.raises((NotFound, InvalidInput)):
            client.get_pipeline_run(project, bad)


def test_outsiders_get_the_uniform_404_and_viewers_cannot_run(
    own_settings: Settings, project: str, flow: Flow, tmp_path: Path
) -> None:
    # Nothing dispatches here: the run's rows are what the roles are checked against.
    settings = own_settings.model_copy(
        update={"compute": ComputeSettings(handoff=False, dispatch=False)}
    )
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        root.create_run(project)
        users = {name: root.create_user(name).token.token for name in ("ed", "vic", "out")}
        root.add_member(project, "ed", "editor")
        root.add_member(project, "vic", "viewer")
        _numbers(root, project, tmp_path, [1, 2])
        with as_user(users["ed"]) as ed:
            run = ed.run_pipeline(project, flow.ref, workdir=flow.root)
            assert run.user == "ed" and run.status == "running"
            trigger = ed.create_pipeline_trigger(
                project, "nightly", flow.ref, cron="0 3 * * *", workdir=flow.root
            )
            assert trigger.user == "ed"
        with as_user(users["vic"]) as vic:
            assert vic.get_pipeline_run(project, run.id).id == run.id
            assert [x.name for x in vic.list_pipeline_triggers(project)] == ["nightly"]
            for call in (
                lambda: vic.run_pipeline(project, flow.ref, workdir=flow.root),
                lambda: vic.cancel_pipeline_run(project, run.id),
                lambda: vic.delete_pipeline_trigger(project, "nightly"),
            ):
                with pytest.raises(PermissionDenied):
                    call()
        with as_user(users["out"]) as out:
            for call in (
                lambda: out.get_pipeline_run(project, run.id),
                lambda: out.list_pipeline_runs(project),
                lambda: out.cancel_pipeline_run(project, run.id),
                lambda: out.resume_pipeline_run(project, run.id),
                lambda: out.list_pipeline_triggers(project),
                lambda: out.delete_pipeline_trigger(project, "nightly"),
            ):
                with pytest.raises(NotFound):
                    call()
        events = [e for e in root.audit_events(project=project) if e.action.startswith("pipel")]
        ok = [(e.actor, e.action, e.object) for e in events if e.outcome == "ok"]
        assert ok == [
            ("ed", "pipelines.run", run.id),
            ("ed", "pipelines.triggers.create", "nightly"),
        ]
        refused = {(e.actor, e.action) for e in events if e.outcome == "refused"}
        assert {("vic", "pipelines.cancel"), ("vic", "pipelines.triggers.delete")} <= refused


def test_steps_are_not_started_twice_by_two_advancing_processes(
    project: str, flow: Flow, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "home")
    with (
        Client(settings=settings) as client,
        another_server(settings) as one,
        another_server(settings) as two,
    ):
        _numbers(client, project, tmp_path, [1, 2, 3])
        run = client.run_pipeline(project, flow.ref, workdir=flow.root)
        services = [one.get(PipelineService), two.get(PipelineService)] * 2
        rounds = [threading.Thread(target=service.advance) for service in services]
        for thread in rounds:
            thread.start()
        for thread in rounds:
            thread.join()
        done = client.wait_pipeline_run(project, run.id, timeout=WAIT)
        assert done.status == "succeeded"
        with one.platform.db.read() as conn:
            jobs = conn.execute(
                sa.select(sa.func.count())
                .select_from(t.pipeline_steps)
                .where(t.pipeline_steps.c.run_id == run.id, t.pipeline_steps.c.job_id.is_not(None))
            ).scalar()
        assert jobs == 3 and len(client.list_jobs(project).jobs) == 3


def test_a_run_in_flight_survives_a_restart_of_the_app(project: str, tmp_path: Path) -> None:
    """The run is rows: an app that stops mid-run (its step's job still running) and a
    new one over the same home carry it on to the end, each step run once."""
    import time

    slow = Flow(
        tmp_path / "restart",
        textwrap.dedent(
            """
            import time
            import plinth

            @plinth.step
            def first(seconds: float):
                time.sleep(seconds)
                return seconds

            @plinth.step
            def second(x):
                return x * 2

            @plinth.pipeline
            def flow():
                return second(first(3.0))
            """
        ),
    )
    settings = make_settings(tmp_path / "home")
    try:
        with Client(settings=settings) as before:
            run = before.run_pipeline(project, slow.ref, workdir=slow.root)
            start = time.monotonic()
            while before.get_pipeline_run(project, run.id).step("first").job_id is None:
                assert time.monotonic() - start < 60
                time.sleep(0.1)
    finally:
        sys.modules.pop(slow.module, None)
    with Client(settings=settings) as after:
        done = after.wait_pipeline_run(project, run.id, timeout=WAIT)
        assert done.status == "succeeded", done
        assert _output(after, done, "second", tmp_path) == 6.0
        assert len(after.list_jobs(project).jobs) == 2


def test_a_spec_whose_code_digest_lies_runs_nothing_and_poisons_no_cache(
    sqlite_client: Client, project: str, flow: Flow, tmp_path: Path
) -> None:
    """The worker hashes the code in the snapshot again: a spec claiming another
    digest (edited, or made from other files) fails its step before any user code
    runs, so no outputs are stored under a key they do not match."""
    client = sqlite_client
    _numbers(client, project, tmp_path, [1, 2])
    spec = client.trace_pipeline(flow.ref, workdir=flow.root)
    snapshot = client.upload_snapshot(project, flow.root)
    body = s.PipelineRunCreate(spec=spec, snapshot=snapshot).model_dump(mode="json")
    body["spec"]["steps"][0]["code_digest"] = "0" * 64
    made = raw_http(client).post(f"/api/v1/projects/{project}/pipelines/runs", json=body)
    assert made.status_code == 201, made.text
    done = client.wait_pipeline_run(project, made.json()["id"], timeout=WAIT)
    assert _states(done) == {"load": "failed", "double": "skipped", "total": "skipped"}
    log = client.job_logs(project, done.step("load").job_id).text  # type: ignore[arg-type]
    assert "is not the code that was traced" in log
    honest = flow.run(client, project)
    assert honest.status == "succeeded" and not any(step.cached for step in honest.steps)


def test_a_step_is_lent_only_outputs_its_snapshot_or_its_user_made(
    own_settings: Settings, project: str, flow: Flow, tmp_path: Path
) -> None:
    """A cache key's code digest is the client's word, checked inside the job, which
    runs code the snapshot's submitter chose: another user's run in another snapshot
    could have claimed the digest. Its outputs are lent to runs in the same snapshot,
    or of the same user, only."""
    settings = own_settings.model_copy(
        update={"compute": ComputeSettings(handoff=False, dispatch=False)}
    )
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    other = Flow(tmp_path / "other", flow.file.read_text())  # another snapshot, whose
    other.module = flow.module  # steps hash the same: a module none of them uses differs
    other.file.rename(other.root / flow.file.name)
    (other.root / "unused.py").write_text("anything = 'at all'\n")
    with as_user(root_token) as root:
        _numbers(root, project, tmp_path, [1, 2])
        ed_token = root.create_user("ed").token.token
        root.add_member(project, "ed", "editor")
        with as_user(ed_token) as ed:
            made = ed.run_pipeline(project, flow.ref, workdir=flow.root)
        with another_server(settings) as server:
            pipelines = server.get(PipelineService)
            pipelines.advance()  # its first step gets its key, and a job
            st = t.pipeline_steps
            with pipelines.db.write() as conn:  # as if that job succeeded
                conn.execute(
                    st.update()
                    .where(st.c.run_id == made.id, st.c.name == "load")
                    .values(status="succeeded", outputs="[]", outputs_digest="0" * 64)
                )
            runs = {
                "root, other snapshot": root.run_pipeline(project, flow.ref, workdir=other.root),
                "root, same snapshot": root.run_pipeline(project, flow.ref, workdir=flow.root),
            }
            with as_user(ed_token) as ed:
                runs["ed, other snapshot"] = ed.run_pipeline(project, flow.ref, workdir=other.root)
            pipelines.advance()
            found = {
                who: pipelines.get_run(project, run.id, principal=LOCAL).step("load").status
                for who, run in runs.items()
            }
    assert found == {
        "root, other snapshot": "running",  # run, not lent ed's outputs
        "root, same snapshot": "cached",
        "ed, other snapshot": "cached",
    }


def test_work_started_before_sign_in_does_not_run_as_an_admin_after_it(
    project: str, flow: Flow, tmp_path: Path
) -> None:
    held = ComputeSettings(dispatch=False, handoff=False)
    settings = make_settings(tmp_path / "home", compute=held)
    with Client(settings=settings) as client:
        _numbers(client, project, tmp_path, [1])
        run = client.run_pipeline(project, flow.ref, workdir=flow.root)
        client.init_admin("root")
    with another_server(settings) as server:
        pipelines = server.get(PipelineService)
        pipelines.advance()
        found = pipelines.get_run(project, run.id, principal=LOCAL)
    assert found.step("load").status == "failed"
    assert "before sign-in was turned on" in (found.step("load").reason or "")
