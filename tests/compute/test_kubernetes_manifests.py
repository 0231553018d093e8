"""The Kubernetes objects of a job attempt, built offline with the official client's
models and validated against Kubernetes' own OpenAPI schemas (``kubernetes-validate``)
for several API versions. No cluster is involved: none can run here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from plinth.compute.executors import Launch
from plinth.compute.executors import k8s_manifests as m
from plinth.errors import InvalidInput

VERSIONS = ["1.25", "1.29", "1.33", "1.37"]
OPTIONS = m.PodOptions(namespace="ml", image="registry.example/train:1", deadline_seconds=7200)
TRICKY = ["a b", "'single'", '"double"', "$(HOME)", "$$(x)", "$HOME", "a$", "$", "`id`", ""]


def spec(**fields: Any) -> Launch:
    values: dict[str, Any] = {
        "job_id": "0123abcd",
        "attempt": 2,
        "rank": 0,
        "argv": ("python", "train.py", "--lr", "0.1"),
        "env": {"LANG": "C.UTF-8", "PLINTH_TOKEN": "tok-s3cret", "PATH": "/server/venv/bin"},
        "cwd": Path("/srv/plinth/work"),
        "log_path": Path("/srv/plinth/rank-0.log"),
        "node": "k8s",
        **fields,
    }
    return Launch(**values)


def build(world: int = 1, resources: m.Resources | None = None, **fields: Any) -> m.Manifests:
    return m.build(spec(**fields), world, resources or m.Resources(), OPTIONS)


def container(made: m.Manifests) -> dict[str, Any]:
    return m.as_dict(made.job)["spec"]["template"]["spec"]["containers"][0]


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of ``$(VAR)`` in command, args and env values, ported
    line for line from ``third_party/forked/golang/expansion/expand.go``: ``$$`` is an
    escaped ``$``, ``$(NAME)`` a reference (unknown names are left as written)."""
    out, checkpoint, cursor = [], 0, 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                read, advance = "$", 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:
                    read, advance = "$(", 1
                else:
                    name = rest[1:close]
                    read, advance = env.get(name, f"$({name})"), close + 1
            else:
                read, advance = "$" + rest[0], 1
            out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


# -- what the worker gets -------------------------------------------------------------


def test_argv_stays_literal_through_kubernetes_expansion() -> None:
    made = build(argv=("python", "-c", "print(1)", *TRICKY))
    command = container(made)["command"]
    assert "args" not in container(made)  # the argv list is the command: no shell
    env = {"HOME": "/home/expanded", "x": "expanded"}
    assert [kubelet_expand(arg, env) for arg in command] == ["python", "-c", "print(1)", *TRICKY]
    # The port expands as the kubelet does, so the escaping above is what matters:
    assert kubelet_expand("$(HOME)", env) == "/home/expanded"
    assert kubelet_expand("$$(HOME) a$$b", env) == "$(HOME) a$b"


def test_resources_are_requested_and_limited_exactly() -> None:
    made = build(resources=m.Resources(cpus=2.5, memory_bytes=16 << 30, gpus=2))
    wanted = {"cpu": "2500m", "memory": str(16 << 30), "nvidia.com/gpu": "2"}
    resources = container(made)["resources"]
    assert resources == {"requests": wanted, "limits": wanted}
    env = {e["name"]: e for e in container(made)["env"]}
    assert env["CUDA_VISIBLE_DEVICES"]["value"] == "0,1"  # the pod's own devices


def test_no_gpu_means_none_requested_and_none_visible() -> None:
    made = build(resources=m.Resources(cpus=1), env={"CUDA_VISIBLE_DEVICES": "7"})
    assert container(made)["resources"]["limits"] == {"cpu": "1000m"}
    env = {e["name"]: e for e in container(made)["env"]}
    assert env["CUDA_VISIBLE_DEVICES"]["value"] == ""


def test_environment_lives_in_a_secret_never_inline_in_the_job() -> None:
    made = build()
    secret = m.as_dict(made.secret)
    assert secret["stringData"] == {"LANG": "C.UTF-8", "PLINTH_TOKEN": "tok-s3cret"}
    assert secret["immutable"] is True
    job = json.dumps(m.as_dict(made.job))
    assert "tok-s3cret" not in job and "C.UTF-8" not in job
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container(made)["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    name = made.job.metadata.name
    assert refs == {k: {"name": name, "key": k} for k in ("LANG", "PLINTH_TOKEN")}
    # The server's own PATH means nothing in the image: it is not passed on.
    assert "PATH" not in secret["stringData"] and "PATH" not in refs


def test_an_environment_name_kubernetes_rejects_is_refused() -> None:
    with pytest.raises(InvalidInput, match="Kubernetes worker"):
        build(env={"BAD NAME": "x"})
    with pytest.raises(InvalidInput, match="label value"):
        build(job_id="not a label")


def test_single_worker_job_shape() -> None:
    made = build()
    job = m.as_dict(made.job)
    assert made.service is None
    assert job["metadata"]["name"] == "plinth-0123abcd-2"
    assert job["metadata"]["labels"]["plinth.dev/job"] == "0123abcd"
    assert job["metadata"]["labels"]["plinth.dev/attempt"] == "2"
    s = job["spec"]
    assert (s["completions"], s["parallelism"], s["completionMode"]) == (1, 1, "Indexed")
    assert s["backoffLimit"] == 0  # Plinth retries, not Kubernetes
    assert s["activeDeadlineSeconds"] == 7200 and s["ttlSecondsAfterFinished"] == 3600
    assert s["suspend"] is True  # resumed once the Secret exists
    pod = s["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(made)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container(made)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert s["template"]["metadata"]["labels"]["plinth.dev/job"] == "0123abcd"


def test_a_gang_is_one_indexed_job_with_ranks_from_the_completion_index() -> None:
    env = {
        "LANG": "C",
        "RANK": "0",
        "GROUP_RANK": "0",
        "WORLD_SIZE": "3",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    made = build(world=3, env=env)
    s = m.as_dict(made.job)["spec"]
    assert (s["completions"], s["parallelism"], s["completionMode"]) == (3, 3, "Indexed")
    name = made.job.metadata.name
    assert s["template"]["spec"]["subdomain"] == name
    env_of = {e["name"]: e for e in container(made)["env"]}
    index = {
        "fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        }
    }
    for variable in ("RANK", "NODE_RANK", "GROUP_RANK"):
        assert env_of[variable]["valueFrom"] == index
    assert env_of["WORLD_SIZE"]["value"] == "3" and env_of["LOCAL_RANK"]["value"] == "0"
    assert env_of["MASTER_ADDR"]["value"] == f"{name}-0.{name}"
    assert "secretKeyRef" in env_of["MASTER_PORT"]["valueFrom"]  # kept, from the Secret
    assert set(m.as_dict(made.secret)["stringData"]) == {"LANG", "MASTER_PORT"}
    names = [e["name"] for e in container(made)["env"]]
    assert len(names) == len(set(names))
    service = m.as_dict(made.service)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"job-name": name}


def test_long_ids_still_give_names_kubernetes_accepts() -> None:
    name = m.job_name("x" * 60, 12)
    assert len(name) <= 52 and name.startswith("plinth-") and name == m.job_name("x" * 60, 12)
    assert name != m.job_name("x" * 60, 13)


def test_owner_reference_ties_the_secret_to_its_job_only() -> None:
    made = build()
    m.owned_by(made.secret, made.job.metadata.name, "uid-1")
    assert m.as_dict(made.secret)["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": made.job.metadata.name, "uid": "uid-1"}
    ]
    assert "ownerReferences" not in m.as_dict(made.job)["metadata"]


SNAPSHOT = "churn/" + "ab" * 32


def test_a_snapshot_is_fetched_by_an_init_container_into_the_workspace() -> None:
    made = build(
        snapshot=SNAPSHOT,
        env={"PLINTH_URL": "http://plinth:8765", "PLINTH_TOKEN": "tok-s3cret", "LANG": "C"},
    )
    pod = m.as_dict(made.job)["spec"]["template"]["spec"]
    [fetcher] = pod["initContainers"]
    assert fetcher["name"] == "snapshot" and fetcher["image"] == OPTIONS.image
    assert fetcher["command"] == ["python", "-m", "plinth.compute.fetch", "/workspace"]
    env = {e["name"]: e for e in fetcher["env"]}
    assert env["PLINTH_SNAPSHOT"] == {"name": "PLINTH_SNAPSHOT", "value": SNAPSHOT}
    for key in ("PLINTH_URL", "PLINTH_TOKEN"):  # from the Secret: never inline
        assert env[key]["valueFrom"]["secretKeyRef"]["key"] == key
    assert "tok-s3cret" not in json.dumps(m.as_dict(made.job))
    assert set(env) == {"PLINTH_URL", "PLINTH_TOKEN", "PLINTH_SNAPSHOT"}  # nothing else
    worker = container(made)
    assert worker["workingDir"] == "/workspace"
    workspace = {"name": "workspace", "mountPath": "/workspace"}
    assert workspace in worker["volumeMounts"] and workspace in fetcher["volumeMounts"]
    assert {"name": "workspace", "emptyDir": {}} in pod["volumes"]
    assert fetcher["securityContext"] == worker["securityContext"]
    # without a snapshot: no init container, the image's own working directory
    plain = m.as_dict(build().job)["spec"]["template"]["spec"]
    assert "initContainers" not in plain and "workingDir" not in plain["containers"][0]


# -- Kubernetes' own schemas ----------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("world", [1, 4])
def test_manifests_validate_against_the_kubernetes_schemas(version: str, world: int) -> None:
    made = build(
        world=world,
        resources=m.Resources(cpus=0.5, memory_bytes=1 << 30, gpus=1),
        argv=("python", *TRICKY),
        env={"LANG": "C", "WORLD_SIZE": str(world), "MASTER_PORT": "29500"},
        snapshot=SNAPSHOT,
    )
    m.owned_by(made.secret, made.job.metadata.name, "2c1e5a84-0000-4000-8000-000000000000")
    objects = [made.job, made.secret] + ([made.service] if made.service is not None else [])
    for obj in objects:
        kubernetes_validate.validate(m.as_dict(obj), version, strict=True)


def test_the_schemas_do_catch_a_broken_manifest() -> None:
    job = m.as_dict(build().job)
    job["spec"]["backoffLimit"] = "none"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.33", strict=True)
    job = m.as_dict(build().job)
    job["spec"]["template"]["spec"]["containers"][0]["cmd"] = ["sh", "-c", "x"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.29", strict=True)
