"""The Kubernetes executor's create / poll / stop loop, against ``kmock``'s
KubernetesEmulator: an EMULATOR of the Kubernetes API (an in-memory store of objects
served over HTTP, lists and watches included), not a cluster. No API server can be
installed here. The official ``kubernetes`` client talks to it over real HTTP on
loopback; the emulator runs no controllers, so the tests play the Job controller and
the kubelet by creating pods and patching their status as those would.

What the emulator does not do (so these tests cannot show it): assign uids or
creation stamps (``_Server`` below adds them, as the API server would), filter by
label selector (the executor checks labels itself), garbage-collect owned objects,
honour ``propagationPolicy``/``gracePeriodSeconds``/preconditions (the tests check
that the executor *sent* them), or run anything. The manifests themselves are
checked against Kubernetes' schemas in ``test_kubernetes_manifests.py``.

The emulator serves on the test's event loop, so every blocking client call goes
through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator, action
from kubernetes import client

from plinth.compute.executors import Handle, Launch
from plinth.compute.executors import k8s_manifests as m
from plinth.errors import Conflict, InvalidInput, MissingDependency

NS = "ml"


class _Server(KubernetesEmulator):
    """The emulator, plus what any API server does on create: a uid and a stamp."""

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action == action.CREATE:
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            now = datetime.datetime.now(tz=datetime.UTC)
            meta.setdefault("creationTimestamp", now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        return await super()._handle(request)


pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=_Server)]


def _api(server: Any) -> Any:
    return client.ApiClient(client.Configuration(host=str(server.url).rstrip("/")))


@pytest.fixture
def executor(kmock: Any) -> Iterator[Any]:
    from plinth.compute.executors.kubernetes import KubernetesExecutor

    kmock.resources["v1/pods"] = {}  # listable before the first pod exists

    made = KubernetesExecutor(NS, "registry.example/train:1", _api(kmock), log_interval=0)
    yield made
    made.close()


@pytest.fixture
def kubelet(kmock: Any) -> Iterator[Kubelet]:
    api = _api(kmock)
    yield Kubelet(client.CoreV1Api(api), client.BatchV1Api(api))
    api.close()


class Kubelet:
    """Plays the Job controller (makes a Job's pods) and the kubelet (their status)."""

    def __init__(self, core: Any, batch: Any) -> None:
        self.core, self.batch = core, batch

    async def start_pod(self, job: str, index: int = 0) -> str:
        name = f"{job}-{index}-{uuid.uuid4().hex[:5]}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": {"job-name": job, m.INDEX_ANNOTATION: str(index)},
                "annotations": {m.INDEX_ANNOTATION: str(index)},
            },
            "spec": {"containers": [{"name": m.CONTAINER, "image": "x"}]},
            "status": {"phase": "Running", "containerStatuses": [_container({"running": {}})]},
        }
        await asyncio.to_thread(self.core.create_namespaced_pod, NS, pod)
        return name

    async def end_pod(self, pod: str, code: int, reason: str = "Error") -> None:
        terminated = {"terminated": {"exitCode": code, "reason": reason}}
        phase = "Succeeded" if code == 0 else "Failed"
        status = {"status": {"phase": phase, "containerStatuses": [_container(terminated)]}}
        await asyncio.to_thread(self.core.patch_namespaced_pod_status, pod, NS, status)

    async def fail_job(self, job: str, reason: str, message: str) -> None:
        condition = {"type": "Failed", "status": "True", "reason": reason, "message": message}
        body = {"status": {"conditions": [condition]}}
        await asyncio.to_thread(self.batch.patch_namespaced_job_status, job, NS, body)


def _container(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": m.CONTAINER, "image": "x", "imageID": "", "ready": False,
        "restartCount": 0, "state": state,
    }  # fmt: skip


def launch_spec(tmp_path: Path, rank: int = 0, world: int = 1, job_id: str = "job1") -> Launch:
    env = {"LANG": "C.UTF-8", "PLINTH_TOKEN": "tok-s3cret"}
    if world > 1:
        env.update(WORLD_SIZE=str(world), RANK=str(rank), MASTER_PORT="29500")
    return Launch(
        job_id=job_id,
        attempt=1,
        rank=rank,
        argv=("python", "train.py", "$(HOME)"),
        env=env,
        cwd=tmp_path,
        log_path=tmp_path / "logs" / f"rank-{rank}.log",
        node="k8s",
        cpu_ids=(0, 1),
        memory_bytes=1 << 30,
    )


async def call(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def stored(server: Any, resource: str, name: str) -> dict[str, Any] | None:
    """The emulator's current copy of an object, None once deleted."""
    for (res, namespace, obj_name), obj in server.objects.items():
        if res.plural == resource and namespace == NS and obj_name == name and not obj.deleted:
            return dict(obj.raw)
    return None


# -- create → running → exited ---------------------------------------------------------


async def test_a_job_runs_and_exits_with_its_containers_code(
    executor: Any, kubelet: Kubelet, kmock: Any, tmp_path: Path
) -> None:
    spec = launch_spec(tmp_path)
    handle = await call(executor.launch, spec)
    name = handle.ident
    assert handle.executor == "kubernetes" and name == "plinth-job1-1"
    job = stored(kmock, "jobs", name)
    assert job is not None and job["spec"]["suspend"] is False  # resumed after its Secret
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "$$(HOME)"
    secret = stored(kmock, "secrets", name)
    assert secret is not None and secret["stringData"]["PLINTH_TOKEN"] == "tok-s3cret"
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", name, job["metadata"]["uid"])
    assert "kubectl logs -n ml" in spec.log_path.read_text()  # a pointer until a pod runs

    assert (await call(executor.poll, handle)).state == "running"  # no pod yet: pending
    pod = await kubelet.start_pod(name)
    kmock[f"get /api/v1/namespaces/{NS}/pods/{pod}/log"] << b"epoch 1\nloss 0.3\n"
    assert (await call(executor.poll, handle)).state == "running"
    assert spec.log_path.read_text() == "epoch 1\nloss 0.3\n"  # fetched while running

    await kubelet.end_pod(pod, 3)
    status = await call(executor.poll, handle)
    assert (status.state, status.exit_code, status.reason) == ("exited", 3, "Error")


async def test_success_and_an_oom_kill_are_told_apart(
    executor: Any, kubelet: Kubelet, tmp_path: Path
) -> None:
    ok = await call(executor.launch, launch_spec(tmp_path, job_id="ok"))
    oom = await call(executor.launch, launch_spec(tmp_path, job_id="oom"))
    await kubelet.end_pod(await kubelet.start_pod(ok.ident), 0, "Completed")
    await kubelet.end_pod(await kubelet.start_pod(oom.ident), 137, "OOMKilled")
    assert await call(executor.poll, ok) == type(await call(executor.poll, ok))("exited", 0, None)
    status = await call(executor.poll, oom)
    assert (status.state, status.exit_code) == ("exited", 137)
    assert status.reason is not None and "memory limit exceeded" in status.reason


async def test_a_job_kubernetes_failed_without_a_pod_exit_is_lost(
    executor: Any, kubelet: Kubelet, tmp_path: Path
) -> None:
    handle = await call(executor.launch, launch_spec(tmp_path))
    await kubelet.fail_job(handle.ident, "DeadlineExceeded", "Job was active longer than allowed")
    status = await call(executor.poll, handle)
    assert status.state == "lost" and "longer than allowed" in (status.reason or "")


async def test_a_snapshot_that_cannot_be_fetched_fails_the_job_with_why(
    executor: Any, kubelet: Kubelet, kmock: Any, tmp_path: Path
) -> None:
    spec = dataclasses.replace(launch_spec(tmp_path), snapshot="lab/" + "ab" * 32)
    handle = await call(executor.launch, spec)
    job = stored(kmock, "jobs", handle.ident)
    assert job is not None
    assert [c["name"] for c in job["spec"]["template"]["spec"]["initContainers"]] == ["snapshot"]
    pod = await kubelet.start_pod(handle.ident)
    said = b"plinth: cannot fetch the job's snapshot: ... answered 404\n"
    kmock[f"get /api/v1/namespaces/{NS}/pods/{pod}/log"] << said
    fetcher = {**_container({"terminated": {"exitCode": 1, "reason": "Error"}}), "name": "snapshot"}
    waiting = _container({"waiting": {"reason": "PodInitializing"}})
    body = {"status": {"phase": "Failed", "initContainerStatuses": [fetcher],
                       "containerStatuses": [waiting]}}  # fmt: skip
    await call(kubelet.core.patch_namespaced_pod_status, pod, NS, body)
    status = await call(executor.poll, handle)
    assert (status.state, status.exit_code) == ("exited", 1)
    assert status.reason == "fetching the snapshot failed: Error"
    assert spec.log_path.read_text() == said.decode()  # the fetcher's own log


# -- stop, and Jobs that go away -------------------------------------------------------


async def test_stop_deletes_the_job_in_the_foreground_with_the_grace(
    executor: Any, kubelet: Kubelet, kmock: Any, tmp_path: Path
) -> None:
    handle = await call(executor.launch, launch_spec(tmp_path))
    await kubelet.start_pod(handle.ident)
    await call(executor.stop, handle, 7.5)
    deletes = [r for r in kmock if r.method == "DELETE"]
    assert len(deletes) == 1
    assert str(deletes[0].url).split("?")[0].endswith(f"/jobs/{handle.ident}")
    assert deletes[0].params["propagationPolicy"] == "Foreground"
    assert deletes[0].params["gracePeriodSeconds"] == "8"
    assert deletes[0].data["preconditions"] == {"uid": handle.data["uid"]}
    assert stored(kmock, "jobs", handle.ident) is None
    status = await call(executor.poll, handle)
    assert status.state == "lost" and "gone" in (status.reason or "")
    await call(executor.stop, handle, 0)  # idempotent: nothing left to delete
    assert len([r for r in kmock if r.method == "DELETE"]) == 1


async def test_a_job_deleted_behind_its_back_is_lost(
    executor: Any, kubelet: Kubelet, tmp_path: Path
) -> None:
    handle = await call(executor.launch, launch_spec(tmp_path))
    await kubelet.start_pod(handle.ident)
    await call(kubelet.batch.delete_namespaced_job, handle.ident, NS)
    status = await call(executor.poll, handle)
    assert status.state == "lost"


async def test_a_recreated_job_of_the_same_name_is_not_ours(
    executor: Any, kubelet: Kubelet, kmock: Any, tmp_path: Path
) -> None:
    handle = await call(executor.launch, launch_spec(tmp_path))
    job = stored(kmock, "jobs", handle.ident)
    assert job is not None
    await call(kubelet.batch.delete_namespaced_job, handle.ident, NS)
    job["metadata"].pop("uid")
    await call(kubelet.batch.create_namespaced_job, NS, job)  # a new uid
    status = await call(executor.poll, handle)
    assert status.state == "lost" and "replaced" in (status.reason or "")
    await call(executor.stop, handle, 5)  # never deletes someone else's Job
    assert stored(kmock, "jobs", handle.ident) is not None


async def test_a_new_executor_adopts_a_handle_it_did_not_create(
    executor: Any, kubelet: Kubelet, kmock: Any, tmp_path: Path
) -> None:
    from plinth.compute.executors.kubernetes import KubernetesExecutor

    handle = await call(executor.launch, launch_spec(tmp_path))
    pod = await kubelet.start_pod(handle.ident)
    executor.close()  # the server stops; the Job runs on
    # A restarted server: a fresh executor and the handle as the database kept it.
    restarted = KubernetesExecutor(NS, "registry.example/train:1", _api(kmock), log_interval=0)
    kept = Handle(handle.executor, handle.ident, dict(handle.data))
    try:
        assert (await call(restarted.poll, kept)).state == "running"
        await kubelet.end_pod(pod, 0, "Completed")
        assert (await call(restarted.poll, kept)).exit_code == 0
    finally:
        restarted.close()


# -- gangs --------------------------------------------------------------------------------


async def test_a_gang_is_one_indexed_job_and_each_rank_its_pod(
    executor: Any, kubelet: Kubelet, kmock: Any, tmp_path: Path
) -> None:
    handles = [await call(executor.launch, launch_spec(tmp_path, r, 3)) for r in range(3)]
    name = handles[0].ident
    assert {h.ident for h in handles} == {name}
    assert [h.data["index"] for h in handles] == [0, 1, 2]
    creates = [r for r in kmock if r.method == "POST" and "/jobs" in str(r.url)]
    assert len(creates) == 1  # later ranks join, they create nothing
    job = stored(kmock, "jobs", name)
    assert job is not None and job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    service = stored(kmock, "services", name)
    assert service is not None and service["spec"]["clusterIP"] == "None"
    pods = [await kubelet.start_pod(name, i) for i in range(3)]
    await kubelet.end_pod(pods[1], 1)
    states = [await call(executor.poll, h) for h in handles]
    assert [(s.state, s.exit_code) for s in states] == [
        ("running", None),
        ("exited", 1),
        ("running", None),
    ]


async def test_a_later_rank_without_its_job_is_refused(executor: Any, tmp_path: Path) -> None:
    with pytest.raises(Conflict, match="launch rank 0 first"):
        await call(executor.launch, launch_spec(tmp_path, 1, 2))


async def test_launching_an_attempt_twice_is_refused(executor: Any, tmp_path: Path) -> None:
    await call(executor.launch, launch_spec(tmp_path))
    with pytest.raises(Conflict, match="exists already"):
        await call(executor.launch, launch_spec(tmp_path))


# -- configuration errors -------------------------------------------------------------


async def test_a_pool_without_an_image_says_so(kmock: Any, tmp_path: Path) -> None:
    from plinth.compute.executors.kubernetes import KubernetesExecutor

    executor = KubernetesExecutor(NS, None, _api(kmock))
    with pytest.raises(InvalidInput, match="needs an image"):
        await call(executor.launch, launch_spec(tmp_path))
    executor.close()


async def test_a_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from plinth.compute.executors import by_name

    monkeypatch.setitem(__import__("sys").modules, "kubernetes.client", None)
    with pytest.raises(MissingDependency, match=r"pip install 'plinth\[kubernetes\]'"):
        by_name("kubernetes", namespace=NS, image="x", api_client=object())
