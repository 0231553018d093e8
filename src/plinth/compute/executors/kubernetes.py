"""The Kubernetes executor: each job attempt one batch/v1 Job (``k8s_manifests``).

How the per-worker interface maps onto one Job per attempt: the dispatcher launches
ranks 0 … N-1 in order. ``launch`` of rank 0 creates the attempt's Indexed Job with
``completions == parallelism == N`` (N from the gang's ``WORLD_SIZE``, 1 without),
its Secret and, for a gang, its headless Service; ``launch`` of a later rank creates
nothing and returns a handle to the same Job's pod of that completion index. Every
handle names the Job and its uid, so a Job deleted and recreated under the same name
is never mistaken for ours (it is *lost*), and a restarted server (a new executor)
polls a handle from the database without any state of its own.

``poll`` reads the Job and its pods: the pod of the handle's index whose container
has terminated gives the exit code (and the reason, ``OOMKilled`` → memory limit); a
Job gone (deleted, or expired by ``ttlSecondsAfterFinished`` while no server watched)
is *lost*; anything else, a pod waiting to be scheduled included, is *running*.
``stop`` deletes the Job (``propagationPolicy=Foreground``, ``gracePeriodSeconds``):
the kubelet sends SIGTERM, then SIGKILL after the grace. For a gang, stopping any
rank stops them all — the dispatcher stops every rank of an attempt together anyway.

Logs stay in Kubernetes; ``launch`` writes a one-line pointer (a ``kubectl logs``
command) to the worker's ``log_path`` and ``poll`` replaces it with the pod's log,
fetched at most every ``log_interval`` seconds while it runs and once when it ends.
What is kept: the last ``log_tail_lines`` lines, at most ``log_max_bytes`` of them (the
API's ``tailLines`` and ``limitBytes``). After ``ttlSecondsAfterFinished`` the pod and
its log are gone from Kubernetes; the copy in ``log_path`` stays.

The client is synchronous (``kubernetes``), imported only when a pool uses this
executor, with an error naming ``pip install 'plinth[kubernetes]'``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from plinth.compute.executors import Handle, Launch, Status
from plinth.compute.executors import k8s_manifests as manifests
from plinth.errors import Conflict, InvalidInput, ServiceUnavailable, require

log = logging.getLogger(__name__)

_OOM = "memory limit exceeded (the container was OOMKilled)"


class KubernetesExecutor:
    """Workers as pods of batch/v1 Jobs in ``namespace``, running ``image``.

    ``api_client``: a ``kubernetes.client.ApiClient``; by default one from the
    in-cluster service account, else from the kubeconfig (``KUBECONFIG``). The other
    options are the pool's, see ``k8s_manifests.PodOptions``."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str = "default",
        image: str | None = None,
        api_client: Any = None,
        *,
        log_interval: float = 5.0,
        log_tail_lines: int = 20_000,
        log_max_bytes: int = 4 << 20,
        **pod_options: Any,
    ) -> None:
        k8s = manifests.client()
        self._own_client = api_client is None
        self._api = api_client if api_client is not None else _default_client()
        self._batch = k8s.BatchV1Api(self._api)
        self._core = k8s.CoreV1Api(self._api)
        self._namespace = namespace
        self._image = image
        self._pod_options = pod_options
        self._log_interval = log_interval
        self._log_tail_lines = log_tail_lines
        self._log_max_bytes = log_max_bytes
        self._log_fetched: dict[str, float] = {}  # pod name → when its log was last read
        self._lock = threading.Lock()

    # -- the interface -------------------------------------------------------------

    def launch(self, spec: Launch) -> Handle:
        """Rank 0 creates the attempt's Job; later ranks join it. InvalidInput for a
        pool without an image or an environment Kubernetes cannot carry; Conflict when
        the attempt's Job exists already (rank 0) or is not there (later ranks)."""
        name = manifests.job_name(spec.job_id, spec.attempt)
        world = _world(spec)
        uid = self._create(spec, world) if spec.rank == 0 else self._joined(spec, name, world)
        _write_atomic(spec.log_path, _pointer(self._namespace, name, spec.rank))
        data = {
            "namespace": self._namespace,
            "uid": uid,
            "index": spec.rank,
            "world": world,
            "log": str(spec.log_path),
        }
        return Handle(self.name, name, data)

    def poll(self, handle: Handle) -> Status:
        namespace, index = handle.data["namespace"], int(handle.data["index"])
        job = self._read_job(handle.ident, namespace)
        if job is None:
            return Status("lost", reason="its Kubernetes Job is gone (deleted, or expired)")
        if job.metadata.uid != handle.data["uid"]:
            return Status("lost", reason="its Kubernetes Job was replaced by another")
        pod = self._pod(handle.ident, namespace, index)
        fetch = _terminated(pod, manifests.FETCHER, init=True)
        if fetch is not None and fetch.exit_code != 0:  # the worker never started
            self._fetch_log(pod, handle, final=True, container=manifests.FETCHER)
            why = fetch.message or fetch.reason or f"exit code {fetch.exit_code}"
            return Status("exited", int(fetch.exit_code), f"fetching the snapshot failed: {why}")
        terminated = _terminated(pod)
        if pod is not None and pod.status is not None and pod.status.phase == "Running":
            self._fetch_log(pod, handle, final=False)
        if terminated is not None:
            self._fetch_log(pod, handle, final=True)
            reason = _OOM if terminated.reason == "OOMKilled" else None
            if reason is None and terminated.exit_code != 0:
                reason = terminated.message or terminated.reason
            return Status("exited", int(terminated.exit_code), reason)
        failed = _failed_condition(job)
        if failed is not None and (pod is None or _pod_ended(pod)):
            return Status("lost", reason=f"Kubernetes failed the Job: {failed}")
        return Status("running")

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        """Delete the Job (its pods get SIGTERM, then SIGKILL after the grace); a Job
        already gone, or not ours any more, is left alone."""
        k8s = manifests.client()
        namespace = handle.data["namespace"]
        job = self._read_job(handle.ident, namespace)
        if job is None or job.metadata.uid != handle.data["uid"]:
            return
        # The uid precondition: never delete a same-named Job that is not this one.
        options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=handle.data["uid"]))
        with _absent_ok():
            self._batch.delete_namespaced_job(
                handle.ident,
                namespace,
                body=options,
                propagation_policy="Foreground",
                grace_period_seconds=max(0, math.ceil(grace_seconds)),
            )

    def close(self) -> None:
        """Close the client this executor made; Jobs keep running."""
        if self._own_client:
            self._api.close()

    # -- launching ------------------------------------------------------------------

    def _create(self, spec: Launch, world: int) -> str:
        if not self._image:
            raise InvalidInput(
                "a Kubernetes pool needs an image to run its jobs in (the executor's image)"
            )
        options = manifests.PodOptions(self._namespace, self._image, **self._pod_options)
        made = manifests.build(spec, world, _resources(spec), options)
        name = made.job.metadata.name
        api_exception = manifests.client().ApiException
        try:
            job = self._batch.create_namespaced_job(self._namespace, made.job)
        except api_exception as exc:
            if exc.status == 409:
                raise Conflict(f"the Kubernetes Job {name} exists already") from exc
            raise _unavailable(exc, f"creating the Kubernetes Job {name}") from exc
        uid = job.metadata.uid
        try:
            secret = manifests.owned_by(made.secret, name, uid)
            self._core.create_namespaced_secret(self._namespace, secret)
            if made.service is not None:
                service = manifests.owned_by(made.service, name, uid)
                self._core.create_namespaced_service(self._namespace, service)
            self._batch.patch_namespaced_job(name, self._namespace, {"spec": {"suspend": False}})
        except Exception:
            with contextlib.suppress(Exception):
                self._batch.delete_namespaced_job(
                    name, self._namespace, propagation_policy="Background"
                )
            raise
        return str(uid)

    def _joined(self, spec: Launch, name: str, world: int) -> str:
        job = self._read_job(name, self._namespace)
        if job is None:
            raise Conflict(
                f"rank {spec.rank} has no Kubernetes Job {name} to join: launch rank 0 first"
            )
        completions = job.spec.completions or 1
        if spec.rank >= completions or completions != world:
            raise Conflict(f"rank {spec.rank} does not fit the {completions} ranks of Job {name}")
        return str(job.metadata.uid)

    # -- reading the cluster --------------------------------------------------------

    def _read_job(self, name: str, namespace: str) -> Any:
        with _absent_ok():
            return self._batch.read_namespaced_job(name, namespace)
        return None

    def _pod(self, job: str, namespace: str, index: int) -> Any:
        """The newest pod of the Job's ``index`` (with backoffLimit 0 there is one,
        unless Kubernetes replaced a deleted one). Labels are checked here too: the
        selector narrows the answer, the check makes sure of it."""
        pods = self._core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
        mine = [
            p
            for p in pods
            if (p.metadata.labels or {}).get("job-name") == job and _index_of(p) == index
        ]
        mine.sort(
            key=lambda p: (
                p.metadata.creation_timestamp is not None,
                p.metadata.creation_timestamp or 0,
            )
        )
        return mine[-1] if mine else None

    def _fetch_log(
        self, pod: Any, handle: Handle, *, final: bool, container: str = manifests.CONTAINER
    ) -> None:
        """Replace the worker's log file with the pod's log (throttled while it runs)."""
        key = f"{handle.data['namespace']}/{pod.metadata.name}"
        now = time.monotonic()
        with self._lock:
            last = self._log_fetched.get(key)
            if last == math.inf or (
                not final and last is not None and now - last < self._log_interval
            ):
                return
            self._log_fetched[key] = math.inf if final else now
        try:  # raw bytes: a log need not be UTF-8, and is not the client's to decode
            response = self._core.read_namespaced_pod_log(
                pod.metadata.name,
                handle.data["namespace"],
                container=container,
                tail_lines=self._log_tail_lines,
                limit_bytes=self._log_max_bytes,
                _preload_content=False,
            )
            data = bytes(response.data)
            response.release_conn()
        except Exception as exc:  # the pod may be gone: the pointer stays
            log.info("cannot read the log of pod %s: %s", key, exc)
            return
        _write_atomic(Path(handle.data["log"]), data.decode(errors="replace"))


def _default_client() -> Any:
    config = require("kubernetes.config", "kubernetes")
    k8s = manifests.client()
    configuration = k8s.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise InvalidInput(
                f"no Kubernetes cluster configured: run inside a cluster or set KUBECONFIG ({exc})"
            ) from exc
    return k8s.ApiClient(configuration)


def _world(spec: Launch) -> int:
    """The gang's size: ``WORLD_SIZE`` of a gang's Launch (``launch.workers`` sets it)."""
    text = spec.env.get("WORLD_SIZE", "1")
    try:
        world = int(text)
    except ValueError:
        raise InvalidInput(f"WORLD_SIZE {text!r} is not a number") from None
    if not 0 <= spec.rank < world:
        raise InvalidInput(f"rank {spec.rank} is outside a world of {world}")
    return world


def _resources(spec: Launch) -> manifests.Resources:
    return manifests.Resources(
        cpus=float(len(spec.cpu_ids)) if spec.cpu_ids else None,
        memory_bytes=spec.memory_bytes,
        gpus=len(spec.gpu_ids),
    )


def _index_of(pod: Any) -> int | None:
    meta = pod.metadata
    text = (meta.annotations or {}).get(manifests.INDEX_ANNOTATION) or (meta.labels or {}).get(
        manifests.INDEX_ANNOTATION
    )
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _terminated(pod: Any, name: str = manifests.CONTAINER, *, init: bool = False) -> Any:
    """A container's terminated state (the worker's, or an init container's), or None
    while it has none."""
    if pod is None or pod.status is None:
        return None
    statuses = pod.status.init_container_statuses if init else pod.status.container_statuses
    for status in statuses or []:
        if status.name == name and status.state and status.state.terminated:
            return status.state.terminated
    return None


def _pod_ended(pod: Any) -> bool:
    return pod.status is not None and pod.status.phase in ("Succeeded", "Failed")


def _failed_condition(job: Any) -> str | None:
    for condition in (job.status and job.status.conditions) or []:
        if condition.type == "Failed" and condition.status == "True":
            return condition.message or condition.reason or "Failed"
    return None


def _pointer(namespace: str, job: str, index: int) -> str:
    return (
        f"# logs are in Kubernetes until the worker's pod starts: kubectl logs -n {namespace} "
        f"-l job-name={job},{manifests.INDEX_ANNOTATION}={index}\n"
    )


@contextlib.contextmanager
def _absent_ok() -> Any:
    """Swallow the API's 404 (the object is gone): the caller decides what that means."""
    try:
        yield
    except manifests.client().ApiException as exc:
        if exc.status != 404:
            raise


def _unavailable(exc: Any, doing: str) -> Exception:
    if exc.status in (400, 403, 422):
        return InvalidInput(f"Kubernetes refused {doing}: {exc.reason} {exc.body or ''}".strip())
    return ServiceUnavailable(f"Kubernetes did not answer {doing}: {exc.status} {exc.reason}")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
