"""The Kubernetes objects of one job attempt, built with the official client's models.

One attempt is one batch/v1 Job, always Indexed (a single worker is an Indexed Job of
one completion, so there is one code path): ``completions == parallelism ==`` the
gang's size, each pod one rank, its rank read from the pod's completion index. Beside
the Job, owned by it so that Kubernetes deletes them with it:

- a **Secret** holding the worker's whole environment. The job's env carries its
  Plinth token and ``plinth secrets``; inline ``env`` values would show in
  ``kubectl get job -o yaml`` and ``kubectl describe pod`` to anyone who can read Jobs.
  Values referenced with ``secretKeyRef`` are also never ``$(VAR)``-expanded.
- for a gang, a headless **Service** named like the Job: with the pod template's
  ``subdomain`` it gives rank 0 the stable name ``<job>-0.<job>`` (``MASTER_ADDR``).

Kubernetes expands ``$(VAR)`` in ``command``, ``args`` and ``env`` values and turns
``$$`` into ``$`` (the kubelet's ``third_party/forked/golang/expansion``); argv must
stay literal, so every ``$`` is written ``$$``. No shell is involved: ``command`` is
the argv list.

Nothing here talks to a cluster; the executor sends these objects.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from plinth.compute.executors import Launch
from plinth.errors import InvalidInput, require

CONTAINER = "worker"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
JOB_LABEL = "plinth.dev/job"
ATTEMPT_LABEL = "plinth.dev/attempt"
GPU_RESOURCE = "nvidia.com/gpu"

# The server's own variables ``launch.base_env`` passes to a local worker: in a
# container they would point at the server's paths, not the image's.
HOST_ONLY = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TMPDIR",
        "TERM",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "PYTHONPATH",
        "LD_LIBRARY_PATH",
        "SYSTEMROOT",
    }
)
# Per-rank variables: the pod template is shared by all ranks, so these are rebuilt
# from the completion index instead of taken from rank 0's Launch.
GANG_OWNED = frozenset(
    {
        "RANK",
        "NODE_RANK",
        "GROUP_RANK",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "WORLD_SIZE",
    }
)
# An env name every supported Kubernetes version accepts (1.34 relaxed it further),
# and so also a valid Secret key.
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_NAME_MAX = 52  # pods are named <job>-<index>-<5 random>: keep hostnames under 63
_TMP = "tmp"
_WORKSPACE, WORKSPACE_PATH = "workspace", "/workspace"  # the job's unpacked snapshot
FETCHER = "snapshot"  # the init container that fetches it


@dataclass(frozen=True)
class PodOptions:
    """What a Kubernetes pool sets for all its jobs (the executor's options)."""

    namespace: str
    image: str
    image_pull_policy: str | None = None
    service_account: str | None = None
    run_as_user: int = 1000  # runAsNonRoot needs a numeric user the kubelet can check
    read_only_root: bool = True  # with an emptyDir on /tmp for what must write
    working_dir: str | None = None  # the image's WORKDIR when unset
    ttl_seconds: int = 3600  # how long a finished Job (and its pod logs) stays
    deadline_seconds: int | None = None  # activeDeadlineSeconds, a pool-wide ceiling
    node_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resources:
    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int = 0


@dataclass(frozen=True)
class Manifests:
    """The objects of one attempt; ``secret`` and ``service`` get the Job as owner
    once it exists (its uid is the API server's to give)."""

    job: Any  # V1Job
    secret: Any  # V1Secret
    service: Any | None  # V1Service, for gangs


def client() -> Any:
    """``kubernetes.client``, or an error naming the extra to install."""
    return require("kubernetes.client", "kubernetes")


def job_name(job_id: str, attempt: int) -> str:
    """A DNS-1035 label unique per attempt: ``plinth-<job>-<attempt>``, hashed when long."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"plinth-{job_id}-{attempt}".lower()).strip("-")
    if len(base) <= _NAME_MAX:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:10]
    return f"{base[: _NAME_MAX - 11].rstrip('-')}-{digest}"


def escape(text: str) -> str:
    """``text`` as Kubernetes must be given it to pass it on unchanged (no ``$(VAR)``)."""
    return text.replace("$", "$$")


def labels(spec: Launch) -> dict[str, str]:
    return {
        JOB_LABEL: _label_value(spec.job_id),
        ATTEMPT_LABEL: str(spec.attempt),
        "app.kubernetes.io/managed-by": "plinth",
    }


def build(spec: Launch, world: int, resources: Resources, options: PodOptions) -> Manifests:
    """Job, Secret and (for ``world > 1``) Service of the attempt ``spec`` belongs to."""
    k8s = client()
    if world < 1:
        raise InvalidInput(f"a job needs at least one worker, not {world}")
    name = job_name(spec.job_id, spec.attempt)
    env = {k: v for k, v in spec.env.items() if k not in HOST_ONLY}
    if world > 1:
        env = {k: v for k, v in env.items() if k not in GANG_OWNED}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    _check_env(env)

    def meta() -> Any:  # one each: owner references are added to some, not all
        return k8s.V1ObjectMeta(name=name, namespace=options.namespace, labels=labels(spec))

    secret = k8s.V1Secret(
        api_version="v1", kind="Secret", metadata=meta(), type="Opaque",
        immutable=True, string_data=env,
    )  # fmt: skip
    container = _container(spec, name, env, world, resources, options, k8s)
    fetcher = _fetcher(spec, name, resources, options, k8s) if spec.snapshot else None
    pod = _pod_spec(container, fetcher, name if world > 1 else None, options, k8s)
    template = k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels(spec)), spec=pod)
    job = k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=meta(),
        spec=k8s.V1JobSpec(
            template=template,
            completions=world,
            parallelism=world,
            completion_mode="Indexed",
            backoff_limit=0,  # Plinth retries (with a new attempt), never Kubernetes
            active_deadline_seconds=options.deadline_seconds,
            ttl_seconds_after_finished=options.ttl_seconds,
            suspend=True,  # resumed once its Secret exists: no pod starts without it
        ),
    )
    service = _service(name, meta(), k8s) if world > 1 else None
    return Manifests(job, secret, service)


def owned_by(obj: Any, job_name_: str, job_uid: str) -> Any:
    """``obj`` (Secret, Service) with the Job as its owner: deleted with it."""
    k8s = client()
    obj.metadata.owner_references = [
        k8s.V1OwnerReference(api_version="batch/v1", kind="Job", name=job_name_, uid=job_uid)
    ]
    return obj


def as_dict(obj: Any) -> dict[str, Any]:
    """The JSON the API server receives (camelCase, no nulls)."""
    result: dict[str, Any] = client().ApiClient().sanitize_for_serialization(obj)
    return result


def _container(
    spec: Launch,
    name: str,
    env: dict[str, str],
    world: int,
    resources: Resources,
    options: PodOptions,
    k8s: Any,
) -> Any:
    from_secret = [
        k8s.V1EnvVar(
            name=key,
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=name, key=key)
            ),
        )
        for key in sorted(env)
    ]
    visible = ",".join(str(i) for i in range(resources.gpus))  # the pod's own GPUs: 0…n-1
    inline = [k8s.V1EnvVar(name="CUDA_VISIBLE_DEVICES", value=visible)]
    if world > 1:
        inline += _gang_env(name, world, k8s)
    return k8s.V1Container(
        name=CONTAINER,
        image=options.image,
        image_pull_policy=options.image_pull_policy,
        command=[escape(arg) for arg in spec.argv],
        working_dir=WORKSPACE_PATH if spec.snapshot else options.working_dir,
        env=from_secret + inline,
        resources=_resources(resources, k8s),
        security_context=_security(options, k8s),
        volume_mounts=_mounts(spec, k8s),
    )


def _fetcher(spec: Launch, name: str, resources: Resources, options: PodOptions, k8s: Any) -> Any:
    """The init container that fetches the job's snapshot into the workspace before
    the worker starts: the job's own image (Plinth is in it for the job's tracking),
    with only the server's URL and the job's token from the attempt's Secret."""
    reach = [
        k8s.V1EnvVar(
            name=key,
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=name, key=key, optional=True)
            ),
        )
        for key in ("PLINTH_URL", "PLINTH_TOKEN")
    ]
    snapshot = k8s.V1EnvVar(name="PLINTH_SNAPSHOT", value=escape(spec.snapshot or ""))
    return k8s.V1Container(
        name=FETCHER,
        image=options.image,
        image_pull_policy=options.image_pull_policy,
        command=["python", "-m", "plinth.compute.fetch", WORKSPACE_PATH],
        env=[*reach, snapshot],
        resources=_resources(resources, k8s),
        security_context=_security(options, k8s),
        volume_mounts=_mounts(spec, k8s),
    )


def _security(options: PodOptions, k8s: Any) -> Any:
    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=options.read_only_root,
        run_as_non_root=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
    )


def _mounts(spec: Launch, k8s: Any) -> list[Any]:
    mounts = [k8s.V1VolumeMount(name=_TMP, mount_path="/tmp")]
    if spec.snapshot:
        mounts.append(k8s.V1VolumeMount(name=_WORKSPACE, mount_path=WORKSPACE_PATH))
    return mounts


def _gang_env(name: str, world: int, k8s: Any) -> list[Any]:
    """One pod per rank: its rank is its completion index, it is its own node."""
    index = k8s.V1EnvVarSource(
        field_ref=k8s.V1ObjectFieldSelector(
            field_path=f"metadata.annotations['{INDEX_ANNOTATION}']"
        )
    )
    return [
        k8s.V1EnvVar(name="RANK", value_from=index),
        k8s.V1EnvVar(name="NODE_RANK", value_from=index),
        k8s.V1EnvVar(name="GROUP_RANK", value_from=index),
        k8s.V1EnvVar(name="LOCAL_RANK", value="0"),
        k8s.V1EnvVar(name="LOCAL_WORLD_SIZE", value="1"),
        k8s.V1EnvVar(name="WORLD_SIZE", value=str(world)),
        k8s.V1EnvVar(name="MASTER_ADDR", value=f"{name}-0.{name}"),
    ]


def _resources(resources: Resources, k8s: Any) -> Any:
    """Requests equal to limits (Guaranteed QoS): a job gets exactly what it asked for."""
    wanted: dict[str, str] = {}
    if resources.cpus:
        wanted["cpu"] = f"{round(resources.cpus * 1000)}m"
    if resources.memory_bytes:
        wanted["memory"] = str(resources.memory_bytes)
    if resources.gpus:
        wanted[GPU_RESOURCE] = str(resources.gpus)  # extended resources: limits decide
    return k8s.V1ResourceRequirements(requests=dict(wanted), limits=dict(wanted))


def _pod_spec(
    container: Any, fetcher: Any, subdomain: str | None, options: PodOptions, k8s: Any
) -> Any:
    volumes = [k8s.V1Volume(name=_TMP, empty_dir=k8s.V1EmptyDirVolumeSource())]
    if fetcher is not None:
        volumes.append(k8s.V1Volume(name=_WORKSPACE, empty_dir=k8s.V1EmptyDirVolumeSource()))
    return k8s.V1PodSpec(
        containers=[container],
        init_containers=[fetcher] if fetcher is not None else None,
        restart_policy="Never",
        subdomain=subdomain,
        service_account_name=options.service_account,
        automount_service_account_token=False,  # a job has no business with the API
        enable_service_links=False,  # keeps the environment exactly the one given
        node_selector=options.node_selector or None,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=options.run_as_user,
            run_as_group=options.run_as_user,
            fs_group=options.run_as_user,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volumes=volumes,
    )


def _service(name: str, meta: Any, k8s: Any) -> Any:
    return k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=meta,
        spec=k8s.V1ServiceSpec(
            cluster_ip="None",  # headless: DNS names for the pods, no load balancing
            selector={"job-name": name},
            publish_not_ready_addresses=True,  # ranks find each other before "ready"
        ),
    )


def _check_env(env: dict[str, str]) -> None:
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise InvalidInput(
                f"environment variable {name!r} cannot be given to a Kubernetes worker: "
                "names are letters, digits, '-', '.' and '_', not starting with a digit"
            )


def _label_value(text: str) -> str:
    if re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]", text):
        return text
    raise InvalidInput(f"job id {text!r} cannot be a Kubernetes label value")
