"""Declared permission equals enforced permission, for every route the app has.

The matrix is generated: every API route and page (walked from the app's routers) must
have an entry in ``REQUESTS``, or the test fails. Each entry makes that route's request
as each of five callers — viewer, editor and admin of project A, a user with no role in
A, and a token scoped to project B — and the expected answer comes from the route's
declared permission: a role too small is 403, an outsider gets the same 404 as for
something that does not exist, platform routes are for platform admins only. A refusal
changes nothing and writes exactly one audit record.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr

from plinth.api.auth import declared_permissions as _declared
from plinth.api.context import all_routes
from plinth.client import Client
from plinth.core.access import Permission
from plinth.core.crypto import MasterKey
from plinth.data.packs import write_tar
from plinth.server.app import create_app
from plinth.settings import ComputeSettings, Settings, TrackingSettings
from tests import services
from tests.conftest import make_settings, raw_http
from tests.registry.files import model_files

ROLES = ["viewer", "editor", "admin", "outsider", "token-b"]  # token-b: root's, scoped to B
RANK = {"viewer": 1, "editor": 2, "admin": 3}
NEED = {Permission.PROJECT_READ: 1, Permission.PROJECT_WRITE: 2, Permission.PROJECT_ADMIN: 3}
PLATFORM = {Permission.PLATFORM_READ, Permission.PLATFORM_ADMIN}


@dataclass
class World:
    """Project A with a run, a metric, an artifact and a secret; project B; a user per
    role; each caller's own client."""

    settings: Settings
    root: Client
    run: str
    digest: str
    job: str = ""  # a queued job of project A (the matrix dispatches nothing)
    logged_model: str = ""  # an MLflow logged model of project A's run
    snapshot: str = ""  # the digest of a snapshot a job of project A runs in
    users: dict[str, Client] = field(default_factory=dict)  # role → the role's user
    callers: dict[str, Client] = field(default_factory=dict)  # role → how it calls

    def fresh_run(self) -> str:
        return self.root.create_run("team-a").id

    def close(self) -> None:
        for c in [self.root, *self.users.values(), *self.callers.values()]:
            c.close()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _own_token(w: World, role: str) -> str:
    """A token of the caller's own user, made by that user, to be revoked."""
    return w.users[role].create_token(_unique("spare")).info.id


def _a(w: World) -> str:
    """Project A's id: its MLflow experiment id."""
    return next(p.id for p in w.root.list_projects() if p.name == "team-a")


def _spare_member(w: World) -> str:
    name = _unique("spare")
    w.root.create_user(name)
    w.root.add_member("team-a", name, "viewer")
    return name


MODELS = "/api/v1/projects/team-a/models"
JOBS = "/api/v1/projects/team-a/jobs"
JOB = "/api/v1/projects/{project}/jobs"
SNAPSHOT = b"a working directory's archive"
DEPLOY = "/api/v1/projects/{project}/deployments"
DEPLOYS = "/api/v1/projects/team-a/deployments"
_NEW_DEPLOYMENT = {"model": "models:/team-a/churn/1", "runtime": "memory"}
DATA = "/api/v1/projects/team-a/datasets"
DATASET = "/api/v1/projects/{project}/datasets"
CONTENT = b"a file of a dataset"
PIPELINE = "/api/v1/projects/{project}/pipelines"
PIPELINES = "/api/v1/projects/team-a/pipelines"
MLFLOW = "/mlflow/api/2.0/mlflow"
MLFLOW_ARTIFACTS = "/mlflow/api/2.0/mlflow-artifacts/artifacts"
MPU = "/mlflow/api/2.0/mlflow-artifacts/mpu"
Call = tuple[str, str, dict[str, Any]]  # method, URL, httpx keyword arguments
Make = Callable[[World, str], Call]  # (world, role) → the request; may set up as root

# (method, route path) → (scope, request). Scope "project" is about project A; "own"
# is about the caller's own things (their tokens, their new project).
REQUESTS: dict[tuple[str, str], tuple[str, Make]] = {
    ("POST", "/api/v1/runs"): (
        "project",
        lambda w, r: ("POST", "/api/v1/runs", {"json": {"project": "team-a"}}),
    ),
    ("POST", "/api/v1/runs/search"): (
        "project",
        lambda w, r: ("POST", "/api/v1/runs/search", {"json": {"project": "team-a"}}),
    ),
    ("GET", "/api/v1/runs/{run_id}"): (
        "project",
        lambda w, r: ("GET", f"/api/v1/runs/{w.run}", {}),
    ),
    ("PATCH", "/api/v1/runs/{run_id}"): (
        "project",
        lambda w, r: ("PATCH", f"/api/v1/runs/{w.fresh_run()}", {"json": {"status": "killed"}}),
    ),
    ("POST", "/api/v1/runs/{run_id}/resume"): (
        "project",
        lambda w, r: ("POST", f"/api/v1/runs/{w.fresh_run()}/resume", {}),
    ),
    ("DELETE", "/api/v1/runs/{run_id}"): (
        "project",
        lambda w, r: ("DELETE", f"/api/v1/runs/{w.fresh_run()}", {}),
    ),
    ("POST", "/api/v1/runs/{run_id}/restore"): (
        "project",
        lambda w, r: ("POST", f"/api/v1/runs/{w.fresh_run()}/restore", {}),
    ),
    ("POST", "/api/v1/runs/{run_id}/heartbeat"): (
        "project",
        lambda w, r: ("POST", f"/api/v1/runs/{w.run}/heartbeat", {}),
    ),
    ("POST", "/api/v1/runs/{run_id}/batches"): (
        "project",
        lambda w, r: (
            "POST",
            f"/api/v1/runs/{w.run}/batches",
            {"json": {"batch_id": uuid.uuid4().hex, "tags": {"t": r}}},
        ),
    ),
    ("GET", "/api/v1/runs/{run_id}/metrics"): (
        "project",
        lambda w, r: ("GET", f"/api/v1/runs/{w.run}/metrics", {"params": {"key": "m"}}),
    ),
    ("GET", "/api/v1/runs/{run_id}/artifacts"): (
        "project",
        lambda w, r: ("GET", f"/api/v1/runs/{w.run}/artifacts", {}),
    ),
    ("POST", "/api/v1/runs/{run_id}/artifacts"): (
        "project",
        lambda w, r: (
            "POST",
            f"/api/v1/runs/{w.run}/artifacts",
            {"json": {"path": _unique("copy"), "digest": w.digest, "size": 1}},
        ),
    ),
    ("PUT", "/api/v1/runs/{run_id}/artifacts/{path:path}"): (
        "project",
        lambda w, r: (
            "PUT",
            f"/api/v1/runs/{w.run}/artifacts/{_unique('new')}.bin",
            {"content": b"new content", "headers": {"Content-Type": "application/octet-stream"}},
        ),
    ),
    ("GET", "/api/v1/runs/{run_id}/artifacts/{path:path}"): (
        "project",
        lambda w, r: ("GET", f"/api/v1/runs/{w.run}/artifacts/a.txt", {}),
    ),
    ("GET", "/api/v1/audit"): ("project", lambda w, r: ("GET", "/api/v1/audit", {})),
    ("GET", "/api/v1/audit/verify"): ("project", lambda w, r: ("GET", "/api/v1/audit/verify", {})),
    ("POST", "/api/v1/users"): (
        "project",
        lambda w, r: ("POST", "/api/v1/users", {"json": {"name": _unique("new")}}),
    ),
    ("PUT", "/api/v1/users/{user}/password"): (
        "own",
        lambda w, r: (
            "PUT",
            f"/api/v1/users/{'root' if r == 'token-b' else r}/password",
            {"json": {"password": "a long enough password"}},  # none was set before
        ),
    ),
    ("GET", "/api/v1/users/me"): ("own", lambda w, r: ("GET", "/api/v1/users/me", {})),
    ("GET", "/api/v1/tokens"): ("own", lambda w, r: ("GET", "/api/v1/tokens", {})),
    ("POST", "/api/v1/tokens"): (
        "own",
        lambda w, r: ("POST", "/api/v1/tokens", {"json": {"name": "mine"}}),
    ),
    ("DELETE", "/api/v1/tokens/{token_id}"): (
        "own",
        lambda w, r: ("DELETE", f"/api/v1/tokens/{_own_token(w, r)}", {}),
    ),
    ("GET", "/api/v1/projects"): ("own", lambda w, r: ("GET", "/api/v1/projects", {})),
    ("POST", f"{MLFLOW}/experiments/create"): (
        "own",
        lambda w, r: ("POST", f"{MLFLOW}/experiments/create", {"json": {"name": _unique("exp")}}),
    ),
    ("GET", f"{MLFLOW}/experiments/get"): (
        "project",
        lambda w, r: ("GET", f"{MLFLOW}/experiments/get", {"params": {"experiment_id": _a(w)}}),
    ),
    ("GET", f"{MLFLOW}/experiments/get-by-name"): (
        "project",
        lambda w, r: (
            "GET",
            f"{MLFLOW}/experiments/get-by-name",
            {"params": {"experiment_name": "team-a"}},
        ),
    ),
    ("POST", f"{MLFLOW}/experiments/search"): (
        "own",  # the experiments one may read: none is no refusal
        lambda w, r: ("POST", f"{MLFLOW}/experiments/search", {"json": {}}),
    ),
    ("POST", f"{MLFLOW}/experiments/update"): (
        "project",  # its own name: a project is never renamed
        lambda w, r: (
            "POST",
            f"{MLFLOW}/experiments/update",
            {"json": {"experiment_id": _a(w), "new_name": "team-a"}},
        ),
    ),
    ("POST", f"{MLFLOW}/experiments/delete"): (
        "project",  # an experiment of its own, with team-a's members: its runs go too
        lambda w, r: (
            "POST",
            f"{MLFLOW}/experiments/delete",
            {"json": {"experiment_id": _spare_experiment(w)}},
        ),
    ),
    ("POST", f"{MLFLOW}/experiments/restore"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/experiments/restore",
            {"json": {"experiment_id": _spare_experiment(w, deleted=True)}},
        ),
    ),
    ("POST", f"{MLFLOW}/experiments/set-experiment-tag"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/experiments/set-experiment-tag",
            {"json": {"experiment_id": _a(w), "key": r, "value": "v"}},
        ),
    ),
    ("POST", f"{MLFLOW}/experiments/delete-experiment-tag"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/experiments/delete-experiment-tag",
            {"json": {"experiment_id": _a(w), "key": _spare_experiment_tag(w)}},
        ),
    ),
    ("POST", f"{MLFLOW}/registered-models/set-tag"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/registered-models/set-tag",
            {"json": {"name": "churn", "key": r, "value": "v"}},
        ),
    ),
    ("DELETE", f"{MLFLOW}/registered-models/delete-tag"): (
        "project",
        lambda w, r: (
            "DELETE",
            f"{MLFLOW}/registered-models/delete-tag",
            {"json": {"name": "churn", "key": _spare_model_tag(w)}},
        ),
    ),
    ("GET", "/mlflow/api/3.0/mlflow/server-info"): (
        "own",  # what the server serves, for any caller
        lambda w, r: ("GET", "/mlflow/api/3.0/mlflow/server-info", {}),
    ),
    ("POST", f"{MPU}/create/{{artifact:path}}"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MPU}/create/{_a(w)}/{w.run}/artifacts",
            {"json": {"path": f"/tmp/{_unique('f')}.bin", "num_parts": 2}},
        ),
    ),
    ("POST", f"{MPU}/complete/{{artifact:path}}"): (
        "project",
        lambda w, r: _spare_upload(w, r, "complete"),
    ),
    ("POST", f"{MPU}/abort/{{artifact:path}}"): (
        "project",
        lambda w, r: _spare_upload(w, r, "abort"),
    ),
    ("GET", "/api/v1/projects/{project}/snapshots/{digest}"): (
        "project",  # a snapshot a job of the project runs in
        lambda w, r: ("GET", f"/api/v1/projects/team-a/snapshots/{_job_snapshot(w)}", {}),
    ),
    ("POST", f"{MLFLOW}/runs/create"): (
        "project",
        lambda w, r: ("POST", f"{MLFLOW}/runs/create", {"json": {"experiment_id": _a(w)}}),
    ),
    ("GET", f"{MLFLOW}/runs/get"): (
        "project",
        lambda w, r: ("GET", f"{MLFLOW}/runs/get", {"params": {"run_id": w.run}}),
    ),
    ("POST", f"{MLFLOW}/runs/update"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/runs/update",
            {"json": {"run_id": w.fresh_run(), "status": "KILLED"}},
        ),
    ),
    ("POST", f"{MLFLOW}/runs/log-metric"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/runs/log-metric",
            {"json": {"run_id": w.run, "key": "m", "value": 1.0, "timestamp": 1, "step": 9}},
        ),
    ),
    ("POST", f"{MLFLOW}/runs/log-parameter"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/runs/log-parameter",
            {"json": {"run_id": w.run, "key": _unique("p"), "value": r}},
        ),
    ),
    ("POST", f"{MLFLOW}/runs/set-tag"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/runs/set-tag",
            {"json": {"run_id": w.run, "key": "t", "value": r}},
        ),
    ),
    ("POST", f"{MLFLOW}/runs/log-batch"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/runs/log-batch",
            {"json": {"run_id": w.run, "tags": [{"key": "t", "value": r}]}},
        ),
    ),
    ("POST", f"{MLFLOW}/runs/search"): (
        "project",
        lambda w, r: ("POST", f"{MLFLOW}/runs/search", {"json": {"experiment_ids": [_a(w)]}}),
    ),
    ("GET", f"{MLFLOW}/metrics/get-history"): (
        "project",
        lambda w, r: (
            "GET",
            f"{MLFLOW}/metrics/get-history",
            {"params": {"run_id": w.run, "metric_key": "m"}},
        ),
    ),
    ("POST", f"{MLFLOW}/logged-models/search"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/logged-models/search",
            {"json": {"experiment_ids": [_a(w)]}},
        ),
    ),
    ("POST", f"{MLFLOW}/runs/delete"): (
        "project",
        lambda w, r: ("POST", f"{MLFLOW}/runs/delete", {"json": {"run_id": w.fresh_run()}}),
    ),
    ("POST", f"{MLFLOW}/runs/restore"): (
        "project",
        lambda w, r: ("POST", f"{MLFLOW}/runs/restore", {"json": {"run_id": w.fresh_run()}}),
    ),
    ("POST", f"{MLFLOW}/runs/log-inputs"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/runs/log-inputs",
            {"json": {"run_id": w.run, "datasets": [{"dataset": {"name": r, "digest": "d"}}]}},
        ),
    ),
    ("POST", f"{MLFLOW}/runs/delete-tag"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/runs/delete-tag",
            {"json": {"run_id": w.run, "key": _spare_run_tag(w)}},
        ),
    ),
    ("POST", f"{MLFLOW}/logged-models"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/logged-models",
            {"json": {"experiment_id": _a(w), "source_run_id": w.fresh_run(), "name": r}},
        ),
    ),
    ("GET", f"{MLFLOW}/logged-models/{{model_id}}"): (
        "project",
        lambda w, r: ("GET", f"{MLFLOW}/logged-models/{_logged_model(w)}", {}),
    ),
    ("PATCH", f"{MLFLOW}/logged-models/{{model_id}}"): (
        "project",
        lambda w, r: (
            "PATCH",
            f"{MLFLOW}/logged-models/{_logged_model(w)}",
            {"json": {"status": "LOGGED_MODEL_READY"}},
        ),
    ),
    ("PATCH", f"{MLFLOW}/logged-models/{{model_id}}/tags"): (
        "project",
        lambda w, r: (
            "PATCH",
            f"{MLFLOW}/logged-models/{_logged_model(w)}/tags",
            {"json": {"tags": [{"key": "t", "value": r}]}},
        ),
    ),
    ("DELETE", f"{MLFLOW}/logged-models/{{model_id}}/tags/{{tag_key}}"): (
        "project",
        lambda w, r: ("DELETE", _spare_logged_tag(w), {}),
    ),
    ("POST", f"{MLFLOW}/logged-models/{{model_id}}/params"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/logged-models/{_logged_model(w)}/params",
            {"json": {"params": [{"key": _unique("p"), "value": r}]}},
        ),
    ),
    ("POST", f"{MLFLOW}/runs/outputs"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/runs/outputs",
            {"json": {"run_id": w.run, "models": [{"model_id": _logged_model(w)}]}},
        ),
    ),
    ("POST", f"{MLFLOW}/registered-models/create"): (
        "own",  # a name waiting for its first version, in no project yet
        lambda w, r: (
            "POST",
            f"{MLFLOW}/registered-models/create",
            {"json": {"name": _unique("pending")}},
        ),
    ),
    ("DELETE", f"{MLFLOW}/registered-models/delete"): (
        "own",  # the caller's own waiting name
        lambda w, r: (
            "DELETE",
            f"{MLFLOW}/registered-models/delete",
            {"json": {"name": _spare_pending(w, r)}},
        ),
    ),
    ("GET", f"{MLFLOW}/registered-models/get"): (
        "project",
        lambda w, r: ("GET", f"{MLFLOW}/registered-models/get", {"params": {"name": "churn"}}),
    ),
    ("GET", f"{MLFLOW}/registered-models/search"): (
        "own",  # the models one may read: none is no refusal
        lambda w, r: ("GET", f"{MLFLOW}/registered-models/search", {}),
    ),
    ("PATCH", f"{MLFLOW}/registered-models/update"): (
        "project",
        lambda w, r: (
            "PATCH",
            f"{MLFLOW}/registered-models/update",
            {"json": {"name": "churn", "description": r}},
        ),
    ),
    ("POST", f"{MLFLOW}/registered-models/get-latest-versions"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/registered-models/get-latest-versions",
            {"json": {"name": "churn"}},
        ),
    ),
    ("POST", f"{MLFLOW}/registered-models/alias"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/registered-models/alias",
            {"json": {"name": "churn", "alias": _unique("a"), "version": "1"}},
        ),
    ),
    ("DELETE", f"{MLFLOW}/registered-models/alias"): (
        "project",
        lambda w, r: (
            "DELETE",
            f"{MLFLOW}/registered-models/alias",
            {"json": {"name": "churn", "alias": _spare_alias(w)}},
        ),
    ),
    ("GET", f"{MLFLOW}/registered-models/alias"): (
        "project",
        lambda w, r: (
            "GET",
            f"{MLFLOW}/registered-models/alias",
            {"params": {"name": "churn", "alias": "champion"}},
        ),
    ),
    ("POST", f"{MLFLOW}/model-versions/create"): (
        "project",  # the files of version 1 again: the same version answers
        lambda w, r: (
            "POST",
            f"{MLFLOW}/model-versions/create",
            {"json": {"name": "churn", "source": f"runs:/{w.run}/model"}},
        ),
    ),
    ("GET", f"{MLFLOW}/model-versions/get"): (
        "project",
        lambda w, r: (
            "GET",
            f"{MLFLOW}/model-versions/get",
            {"params": {"name": "churn", "version": "1"}},
        ),
    ),
    ("GET", f"{MLFLOW}/model-versions/get-download-uri"): (
        "project",
        lambda w, r: (
            "GET",
            f"{MLFLOW}/model-versions/get-download-uri",
            {"params": {"name": "churn", "version": "1"}},
        ),
    ),
    ("GET", f"{MLFLOW}/model-versions/search"): (
        "own",  # the versions of the models one may read
        lambda w, r: ("GET", f"{MLFLOW}/model-versions/search", {}),
    ),
    ("PATCH", f"{MLFLOW}/model-versions/update"): (
        "project",
        lambda w, r: (
            "PATCH",
            f"{MLFLOW}/model-versions/update",
            {"json": {"name": "churn", "version": "1", "description": r}},
        ),
    ),
    ("POST", f"{MLFLOW}/model-versions/transition-stage"): (
        "project",  # to None: version 1 stays ready
        lambda w, r: (
            "POST",
            f"{MLFLOW}/model-versions/transition-stage",
            {"json": {"name": "churn", "version": "1", "stage": "None"}},
        ),
    ),
    ("DELETE", f"{MLFLOW}/model-versions/delete"): (
        "project",  # archives a spare version
        lambda w, r: (
            "DELETE",
            f"{MLFLOW}/model-versions/delete",
            {"json": {"name": "churn", "version": str(_spare_version(w))}},
        ),
    ),
    ("POST", f"{MLFLOW}/model-versions/set-tag"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MLFLOW}/model-versions/set-tag",
            {"json": {"name": "churn", "version": "1", "key": "t", "value": r}},
        ),
    ),
    ("DELETE", f"{MLFLOW}/model-versions/delete-tag"): (
        "project",
        lambda w, r: (
            "DELETE",
            f"{MLFLOW}/model-versions/delete-tag",
            {"json": {"name": "churn", "version": "1", "key": _spare_tag(w)}},
        ),
    ),
    ("GET", "/mlflow/"): (
        "own",  # the page MLflow's printed links open: it names nothing
        lambda w, r: ("GET", "/mlflow/", {}),
    ),
    ("GET", "/ui/mlflow/experiments/{experiment_id}"): (
        "project",
        lambda w, r: ("GET", f"/ui/mlflow/experiments/{_a(w)}", {"follow_redirects": True}),
    ),
    ("GET", "/ui/mlflow/models/{name}"): (
        "project",
        lambda w, r: ("GET", "/ui/mlflow/models/churn", {"follow_redirects": True}),
    ),
    ("PUT", f"{MLFLOW_ARTIFACTS}/{{artifact:path}}"): (
        "project",
        lambda w, r: (
            "PUT",
            f"{MLFLOW_ARTIFACTS}/{_a(w)}/{w.run}/artifacts/{_unique('f')}.txt",
            {"content": b"bytes", "headers": {"Content-Type": "application/octet-stream"}},
        ),
    ),
    ("GET", f"{MLFLOW_ARTIFACTS}/{{artifact:path}}"): (
        "project",
        lambda w, r: ("GET", f"{MLFLOW_ARTIFACTS}/{_a(w)}/{w.run}/artifacts/a.txt", {}),
    ),
    ("GET", MLFLOW_ARTIFACTS): (
        "project",
        lambda w, r: (
            "GET",
            MLFLOW_ARTIFACTS,
            {"params": {"path": f"{_a(w)}/{w.run}/artifacts"}},
        ),
    ),
    ("POST", "/api/v1/projects"): (
        "own",
        lambda w, r: ("POST", "/api/v1/projects", {"json": {"name": _unique("mine")}}),
    ),
    ("GET", "/api/v1/projects/{project}/members"): (
        "project",
        lambda w, r: ("GET", "/api/v1/projects/team-a/members", {}),
    ),
    ("POST", "/api/v1/projects/{project}/members"): (
        "project",
        lambda w, r: (
            "POST",
            "/api/v1/projects/team-a/members",
            {"json": {"user": _spare_member(w), "role": "editor"}},
        ),
    ),
    ("DELETE", "/api/v1/projects/{project}/members/{user}"): (
        "project",
        lambda w, r: ("DELETE", f"/api/v1/projects/team-a/members/{_spare_member(w)}", {}),
    ),
    ("GET", "/api/v1/projects/{project}/secrets"): (
        "project",
        lambda w, r: ("GET", "/api/v1/projects/team-a/secrets", {}),
    ),
    ("PUT", "/api/v1/projects/{project}/secrets"): (
        "project",
        lambda w, r: (
            "PUT",
            "/api/v1/projects/team-a/secrets",
            {"json": {"name": "NEW_KEY", "value": "v"}},
        ),
    ),
    ("DELETE", "/api/v1/projects/{project}/secrets/{name}"): (
        "project",
        lambda w, r: ("DELETE", f"/api/v1/projects/team-a/secrets/{_spare_secret(w)}", {}),
    ),
    ("GET", "/api/v1/projects/{project}/models"): (
        "project",
        lambda w, r: ("GET", MODELS, {}),
    ),
    ("GET", "/api/v1/projects/{project}/models/{name}"): (
        "project",
        lambda w, r: ("GET", f"{MODELS}/churn", {}),
    ),
    ("POST", "/api/v1/projects/{project}/models/{name}/versions"): (
        "project",
        lambda w, r: (
            "POST",
            f"{MODELS}/churn/versions",
            {"json": {"run_id": w.run, "artifact_path": "model"}},
        ),
    ),
    ("GET", "/api/v1/projects/{project}/models/{name}/versions"): (
        "project",
        lambda w, r: ("GET", f"{MODELS}/churn/versions", {}),
    ),
    ("GET", "/api/v1/projects/{project}/models/{name}/versions/{version}"): (
        "project",
        lambda w, r: ("GET", f"{MODELS}/churn/versions/1", {}),
    ),
    ("PATCH", "/api/v1/projects/{project}/models/{name}/versions/{version}"): (
        "project",
        lambda w, r: ("PATCH", f"{MODELS}/churn/versions/1", {"json": {"description": r}}),
    ),
    ("PUT", "/api/v1/projects/{project}/models/{name}/versions/{version}/tags/{key}"): (
        "project",
        lambda w, r: ("PUT", f"{MODELS}/churn/versions/1/tags/t", {"json": {"value": r}}),
    ),
    ("DELETE", "/api/v1/projects/{project}/models/{name}/versions/{version}/tags/{key}"): (
        "project",
        lambda w, r: ("DELETE", f"{MODELS}/churn/versions/1/tags/{_spare_tag(w)}", {}),
    ),
    ("GET", "/api/v1/projects/{project}/models/{name}/versions/{version}/files"): (
        "project",
        lambda w, r: ("GET", f"{MODELS}/churn/versions/1/files", {}),
    ),
    ("GET", "/api/v1/projects/{project}/models/{name}/versions/{version}/files/{path:path}"): (
        "project",
        lambda w, r: ("GET", f"{MODELS}/churn/versions/1/files/MLmodel.json", {}),
    ),
    ("GET", "/api/v1/projects/{project}/models/{name}/versions/{version}/card"): (
        "project",
        lambda w, r: ("GET", f"{MODELS}/churn/versions/1/card", {}),
    ),
    ("GET", "/api/v1/projects/{project}/models/{name}/aliases/{alias}"): (
        "project",
        lambda w, r: ("GET", f"{MODELS}/churn/aliases/champion", {}),
    ),
    ("PUT", "/api/v1/projects/{project}/models/{name}/aliases/{alias}"): (
        "project",
        lambda w, r: (
            "PUT",
            f"{MODELS}/churn/aliases/{_unique('a')}",
            {"json": {"version": 1, "reason": r}},
        ),
    ),
    ("DELETE", "/api/v1/projects/{project}/models/{name}/aliases/{alias}"): (
        "project",
        lambda w, r: ("DELETE", f"{MODELS}/churn/aliases/{_spare_alias(w)}", {}),
    ),
    ("GET", "/api/v1/projects/{project}/models/{name}/alias-history"): (
        "project",
        lambda w, r: ("GET", f"{MODELS}/churn/alias-history", {}),
    ),
    # deployments (memory runtime: no replica processes in the matrix)
    ("GET", DEPLOY): ("project", lambda w, r: ("GET", DEPLOYS, {})),
    ("POST", DEPLOY): (
        "project",
        lambda w, r: ("POST", DEPLOYS, {"json": {**_NEW_DEPLOYMENT, "name": _unique("d")}}),
    ),
    ("GET", f"{DEPLOY}/{{name}}"): ("project", lambda w, r: ("GET", f"{DEPLOYS}/svc", {})),
    ("GET", f"{DEPLOY}/{{name}}/history"): (
        "project",
        lambda w, r: ("GET", f"{DEPLOYS}/svc/history", {}),
    ),
    ("GET", f"{DEPLOY}/{{name}}/records"): (
        "project",
        lambda w, r: ("GET", f"{DEPLOYS}/svc/records", {"params": {"limit": 5}}),
    ),
    ("PATCH", f"{DEPLOY}/{{name}}"): (
        "project",
        lambda w, r: ("PATCH", f"{DEPLOYS}/{_spare_deployment(w)}", {"json": {"reason": r}}),
    ),
    **{
        ("POST", f"{DEPLOY}/{{name}}/{verb}"): (
            "project",
            lambda w, r, verb=verb: (
                "POST",
                f"{DEPLOYS}/{_spare_deployment(w, canary=True)}/{verb}",
                {"json": {"replicas": 1} if verb == "scale" else {}},
            ),
        )
        for verb in ("promote", "rollback", "scale")
    },
    ("DELETE", f"{DEPLOY}/{{name}}"): (
        "project",
        lambda w, r: ("DELETE", f"{DEPLOYS}/{_spare_deployment(w)}", {}),
    ),
    # datasets
    ("GET", DATASET): ("project", lambda w, r: ("GET", DATA, {})),
    ("GET", f"{DATASET}/{{name}}"): ("project", lambda w, r: ("GET", f"{DATA}/churn", {})),
    ("POST", f"{DATASET}/{{name}}/versions/{{version}}/uses"): (
        "project",
        lambda w, r: ("POST", f"{DATA}/churn/versions/1/uses", {"json": {"run_id": w.run}}),
    ),
    ("GET", "/api/v1/projects/{project}/lineage"): (
        "project",
        lambda w, r: (
            "GET",
            "/api/v1/projects/team-a/lineage",
            {"params": {"uri": "datasets:/team-a/churn@1"}},
        ),
    ),
    ("GET", f"{DATASET}/{{name}}/rules"): (
        "project",
        lambda w, r: ("GET", f"{DATA}/churn/rules", {}),
    ),
    ("PUT", f"{DATASET}/{{name}}/rules"): (
        "project",
        lambda w, r: ("PUT", f"{DATA}/{_unique('ruled')}/rules", {"json": {"rules": []}}),
    ),
    ("POST", f"{DATASET}/{{name}}/content/missing"): (
        "project",
        lambda w, r: ("POST", f"{DATA}/churn/content/missing", {"json": {"digests": [w.digest]}}),
    ),
    ("PUT", f"{DATASET}/{{name}}/content"): (
        "project",
        lambda w, r: (
            "PUT",
            f"{DATA}/churn/content",
            {
                "content": CONTENT,
                "headers": {
                    "X-Plinth-Digest": hashlib.sha256(CONTENT).hexdigest(),
                    "Content-Type": "application/octet-stream",
                },
            },
        ),
    ),
    ("PUT", f"{DATASET}/{{name}}/content/batch"): (
        "project",
        lambda w, r: (
            "PUT",
            f"{DATA}/churn/content/batch",
            {
                "content": b"".join(
                    write_tar(
                        [(hashlib.sha256(CONTENT).hexdigest(), len(CONTENT), lambda: [CONTENT])]
                    )[1]
                ),
                "headers": {"Content-Type": "application/octet-stream"},
            },
        ),
    ),
    ("GET", f"{DATASET}/{{name}}/versions/{{version}}/profiles"): (
        "project",
        lambda w, r: ("GET", f"{DATA}/churn/versions/1/profiles", {}),
    ),
    ("POST", f"{DATASET}/{{name}}/versions/{{version}}/archive"): (
        "project",
        lambda w, r: (
            "POST",
            f"{DATA}/churn/versions/1/archive",
            {"json": {"paths": ["data/a.txt"]}},
        ),
    ),
    ("POST", f"{DATASET}/{{name}}/versions"): (
        "project",
        lambda w, r: (
            "POST",
            f"{DATA}/churn/versions",
            {"json": {"files": [{"path": _unique("f"), "digest": w.digest, "size": 1}]}},
        ),
    ),
    ("GET", f"{DATASET}/{{name}}/versions"): (
        "project",
        lambda w, r: ("GET", f"{DATA}/churn/versions", {}),
    ),
    ("GET", f"{DATASET}/{{name}}/versions/{{version}}"): (
        "project",
        lambda w, r: ("GET", f"{DATA}/churn/versions/1", {}),
    ),
    ("GET", f"{DATASET}/{{name}}/versions/{{version}}/files"): (
        "project",
        lambda w, r: ("GET", f"{DATA}/churn/versions/latest/files", {}),
    ),
    ("GET", f"{DATASET}/{{name}}/versions/{{version}}/files/{{path:path}}"): (
        "project",
        lambda w, r: ("GET", f"{DATA}/churn/versions/1/files/data/a.txt", {}),
    ),
    ("GET", f"{DATASET}/{{name}}/diff"): (
        "project",
        lambda w, r: ("GET", f"{DATA}/churn/diff", {"params": {"old": 1, "new": "latest"}}),
    ),
    # pipelines (nothing dispatches: a run stays running, its steps waiting)
    ("POST", f"{PIPELINE}/runs"): (
        "project",
        lambda w, r: ("POST", f"{PIPELINES}/runs", {"json": _pipeline_body(w)}),
    ),
    ("GET", f"{PIPELINE}/runs"): ("project", lambda w, r: ("GET", f"{PIPELINES}/runs", {})),
    ("GET", f"{PIPELINE}/runs/{{pipeline_run_id}}"): (
        "project",
        lambda w, r: ("GET", f"{PIPELINES}/runs/{_pipeline_run(w)}", {}),
    ),
    ("POST", f"{PIPELINE}/runs/{{pipeline_run_id}}/cancel"): (
        "project",
        lambda w, r: ("POST", f"{PIPELINES}/runs/{_pipeline_run(w)}/cancel", {}),
    ),
    ("POST", f"{PIPELINE}/runs/{{pipeline_run_id}}/resume"): (
        "project",
        lambda w, r: ("POST", f"{PIPELINES}/runs/{_pipeline_run(w, cancelled=True)}/resume", {}),
    ),
    ("GET", f"{PIPELINE}/triggers"): (
        "project",
        lambda w, r: ("GET", f"{PIPELINES}/triggers", {}),
    ),
    ("POST", f"{PIPELINE}/triggers"): (
        "project",
        lambda w, r: (
            "POST",
            f"{PIPELINES}/triggers",
            {"json": {"name": _unique("t"), "cron": "0 3 * * *", **_pipeline_body(w)}},
        ),
    ),
    ("DELETE", f"{PIPELINE}/triggers/{{name}}"): (
        "project",
        lambda w, r: ("DELETE", f"{PIPELINES}/triggers/{_pipeline_trigger(w)}", {}),
    ),
    # compute (the matrix's app dispatches nothing: jobs stay queued)
    ("PUT", "/api/v1/projects/{project}/snapshots"): (
        "project",
        lambda w, r: (
            "PUT",
            "/api/v1/projects/team-a/snapshots",
            {
                "content": SNAPSHOT,
                "headers": {
                    "X-Plinth-Digest": hashlib.sha256(SNAPSHOT).hexdigest(),
                    "Content-Type": "application/octet-stream",
                },
            },
        ),
    ),
    ("POST", JOB): ("project", lambda w, r: ("POST", JOBS, {"json": {"argv": ["true", r]}})),
    ("GET", JOB): ("project", lambda w, r: ("GET", JOBS, {})),
    ("GET", f"{JOB}/{{job_id}}"): ("project", lambda w, r: ("GET", f"{JOBS}/{w.job}", {})),
    ("GET", f"{JOB}/{{job_id}}/logs"): (
        "project",
        lambda w, r: ("GET", f"{JOBS}/{w.job}/logs", {}),
    ),
    ("POST", f"{JOB}/{{job_id}}/cancel"): (
        "project",
        lambda w, r: ("POST", f"{JOBS}/{_spare_job(w)}/cancel", {}),
    ),
    ("GET", "/api/v1/compute/nodes"): ("own", lambda w, r: ("GET", "/api/v1/compute/nodes", {})),
    ("GET", "/api/v1/compute/pools"): ("own", lambda w, r: ("GET", "/api/v1/compute/pools", {})),
    # usage: each caller's readable projects' rows (none for an outsider: still a 200)
    ("GET", "/api/v1/usage"): ("own", lambda w, r: ("GET", "/api/v1/usage", {})),
    ("GET", "/metrics"): ("project", lambda w, r: ("GET", "/metrics", {})),
    ("GET", "/"): ("own", lambda w, r: ("GET", "/", {})),
    ("GET", "/projects/{name}"): ("project", lambda w, r: ("GET", "/projects/team-a", {})),
    ("GET", "/runs/{run_id}"): ("project", lambda w, r: ("GET", f"/runs/{w.run}", {})),
    ("GET", "/compare"): ("project", lambda w, r: ("GET", "/compare", {"params": {"runs": w.run}})),
    # The registry's pages; their forms redirect back to the page (followed: a 200).
    ("GET", "/projects/{project}/datasets"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/datasets", {}),
    ),
    ("GET", "/projects/{project}/datasets/{name}"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/datasets/churn", {}),
    ),
    ("GET", "/projects/{project}/datasets/{name}/versions/{version}"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/datasets/churn/versions/1", {}),
    ),
    ("GET", "/projects/{project}/datasets/{name}/diff"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/datasets/churn/diff", {"params": {"old": 1}}),
    ),
    ("GET", "/projects/{project}/lineage"): (
        "project",
        lambda w, r: (
            "GET",
            "/projects/team-a/lineage",
            {"params": {"uri": "datasets:/team-a/churn@1"}},
        ),
    ),
    ("GET", "/projects/{project}/pipelines"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/pipelines", {}),
    ),
    ("GET", "/projects/{project}/pipelines/{pipeline_run_id}"): (
        "project",
        lambda w, r: ("GET", f"/projects/team-a/pipelines/{_pipeline_run(w)}", {}),
    ),
    ("GET", "/projects/{project}/models"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/models", {}),
    ),
    ("GET", "/projects/{project}/models/{name}/versions/{version}"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/models/churn/versions/1", {}),
    ),
    ("POST", "/projects/{project}/models/{name}/versions/{version}/alias"): (
        "project",
        lambda w, r: (
            "POST",
            "/projects/team-a/models/churn/versions/1/alias",
            {"data": {"alias": _unique("a"), "reason": r}, "follow_redirects": True},
        ),
    ),
    ("POST", "/projects/{project}/models/{name}/versions/{version}/status"): (
        "project",
        lambda w, r: (
            "POST",
            "/projects/team-a/models/churn/versions/1/status",
            {"data": {"status": "ready"}, "follow_redirects": True},
        ),
    ),
    # The jobs' pages; the cancel form redirects back to the job's page (followed: a 200).
    ("GET", "/jobs"): ("own", lambda w, r: ("GET", "/jobs", {})),
    ("GET", "/projects/{project}/jobs"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/jobs", {}),
    ),
    ("GET", "/projects/{project}/sweeps/{name}"): (
        "project",
        lambda w, r: ("GET", f"/projects/team-a/sweeps/{_spare_sweep(w)}", {}),
    ),
    ("GET", "/projects/{project}/jobs/{job_id}"): (
        "project",
        lambda w, r: ("GET", f"/projects/team-a/jobs/{w.job}", {}),
    ),
    ("GET", "/projects/{project}/jobs/{job_id}/logs"): (
        "project",
        lambda w, r: ("GET", f"/projects/team-a/jobs/{w.job}/logs", {}),
    ),
    ("POST", "/projects/{project}/jobs/{job_id}/cancel"): (
        "project",
        lambda w, r: (
            "POST",
            f"/projects/team-a/jobs/{_spare_job(w)}/cancel",
            {"follow_redirects": True},
        ),
    ),
    # The deployments' pages (memory runtime); their forms redirect back (followed: a 200).
    ("GET", "/projects/{project}/deployments"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/deployments", {}),
    ),
    ("GET", "/projects/{project}/deployments/{name}"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/deployments/svc", {}),
    ),
    ("GET", "/projects/{project}/deployments/{name}/traffic"): (
        "project",
        lambda w, r: ("GET", "/projects/team-a/deployments/svc/traffic", {}),
    ),
    **{
        ("POST", f"/projects/{{project}}/deployments/{{name}}/{verb}"): (
            "project",
            lambda w, r, verb=verb: (
                "POST",
                f"/projects/team-a/deployments/{_spare_deployment(w, canary=True)}/{verb}",
                {"data": {"reason": r}, "follow_redirects": True},
            ),
        )
        for verb in ("promote", "rollback")
    },
    **{
        ("POST", f"/projects/{{project}}/deployments/{{name}}/{verb}"): (
            "project",
            lambda w, r, verb=verb, data=data: _page_form(w, verb, data, r),
        )
        for verb, data in [
            ("canary", {"canary": "2", "weight": 10}),
            ("shadow", {"shadow": "2"}),
            ("scale", {"replicas": 1}),
            ("autoscale", {"min_replicas": 0, "max_replicas": 2}),
            ("delete", {"confirm": ""}),  # the spare deployment's name, below
        ]
    },
}


def _page_form(w: World, verb: str, data: dict[str, Any], reason: str) -> Call:
    """A deployment page's form on a spare deployment, as the page sends it (with the
    generation it showed); it redirects back, or to the list after a delete."""
    name = _spare_deployment(w)
    generation = w.root.get_deployment("team-a", name).generation
    sent = {**data, "reason": reason, "generation": generation}
    if verb == "delete":
        sent["confirm"] = name
    url = f"/projects/team-a/deployments/{name}/{verb}"
    return ("POST", url, {"data": sent, "follow_redirects": True})


def _spare_deployment(w: World, canary: bool = False) -> str:
    name = _unique("d")
    w.root.create_deployment("team-a", name, "models:/team-a/churn/1", runtime="memory")
    if canary:
        w.root.update_deployment("team-a", name, canary="models:/team-a/churn/2", weight=10)
    return name


def _spare_job(w: World) -> str:
    return w.root.submit_job("team-a", ["true"]).id


def _spare_tag(w: World) -> str:
    key = _unique("spare")
    w.root.set_model_version_tag("team-a", "churn", 1, key=key, value="v")
    return key


def _spare_alias(w: World) -> str:
    alias = _unique("spare")
    w.root.set_model_alias("team-a", "churn", alias, 1)
    return alias


def _spare_run_tag(w: World) -> str:
    key = _unique("spare")
    w.root.log_batch(w.run, tags={key: "v"})
    return key


def _logged_model(w: World) -> str:
    """A logged model of project A's run, made once by root."""
    if not w.logged_model:
        body = {"experiment_id": _a(w), "source_run_id": w.run, "name": "m"}
        made = raw_http(w.root).post(f"{MLFLOW}/logged-models", json=body)
        w.logged_model = made.json()["model"]["info"]["model_id"]
    return w.logged_model


def _spare_logged_tag(w: World) -> str:
    key = _unique("spare")
    tags = {"tags": [{"key": key, "value": "v"}]}
    raw_http(w.root).patch(f"{MLFLOW}/logged-models/{_logged_model(w)}/tags", json=tags)
    return f"{MLFLOW}/logged-models/{_logged_model(w)}/tags/{key}"


def _spare_experiment(w: World, deleted: bool = False) -> str:
    """A new experiment (project) with team-a's members in their roles, and a run."""
    name = _unique("exp")
    w.root.create_run(name)
    for role in RANK:
        w.root.add_member(name, role, role)
    experiment_id = next(p.id for p in w.root.list_projects() if p.name == name)
    if deleted:
        body = {"experiment_id": experiment_id}
        raw_http(w.root).post(f"{MLFLOW}/experiments/delete", json=body).raise_for_status()
    return experiment_id


def _spare_experiment_tag(w: World) -> str:
    key = _unique("spare")
    body = {"experiment_id": _a(w), "key": key, "value": "v"}
    raw_http(w.root).post(f"{MLFLOW}/experiments/set-experiment-tag", json=body)
    return key


def _spare_model_tag(w: World) -> str:
    key = _unique("spare")
    body = {"name": "churn", "key": key, "value": "v"}
    raw_http(w.root).post(f"{MLFLOW}/registered-models/set-tag", json=body)
    return key


def _spare_upload(w: World, role: str, then: str) -> tuple[str, str, dict[str, Any]]:
    """A multipart upload to project A's run, made by the role's user where it may
    write (an upload is its maker's to finish), else by root; one part sent."""
    maker = raw_http(w.callers[role] if role in ("editor", "admin") else w.root)
    folder, local = f"{_a(w)}/{w.run}/artifacts", f"/tmp/{_unique('f')}.bin"
    made = maker.post(f"{MPU}/create/{folder}", json={"path": local, "num_parts": 1}).json()
    part = maker.put(made["credentials"][0]["url"], content=b"a part")
    body: dict[str, Any] = {"path": local, "upload_id": made["upload_id"]}
    if then == "complete":
        body["parts"] = [{"part_number": 1, "etag": part.headers["ETag"]}]
    return "POST", f"{MPU}/{then}/{folder}", {"json": body}


def _job_snapshot(w: World) -> str:
    """The digest of a snapshot a job of project A runs in, made once by root."""
    if not w.snapshot:
        with tempfile.TemporaryDirectory() as where:
            (Path(where) / "train.py").write_text("print('hi')\n")
            snapshot = w.root.upload_snapshot("team-a", where)
        w.root.submit_job("team-a", ["true"], snapshot=snapshot)
        w.snapshot = snapshot.digest
    return w.snapshot


_FLOW = """import plinth


@plinth.step
def one():
    return 1


@plinth.pipeline
def flow():
    return one()
"""
_PIPELINE_BODIES: dict[str, dict[str, Any]] = {}


def _pipeline_body(w: World) -> dict[str, Any]:
    """A traced one-step pipeline and its snapshot in project A (uploaded by root, once
    per world): what starting a run or adding a trigger sends."""
    key = str(w.settings.home)
    if key not in _PIPELINE_BODIES:
        module = f"flow_{uuid.uuid4().hex[:8]}"  # modules are imported, and cached, by name
        with tempfile.TemporaryDirectory() as where:
            (Path(where) / f"{module}.py").write_text(_FLOW)
            spec = w.root.trace_pipeline(f"{module}:flow", workdir=where)
            snapshot = w.root.upload_snapshot("team-a", where)
        body = {"spec": spec.model_dump(mode="json"), "snapshot": snapshot.model_dump(mode="json")}
        _PIPELINE_BODIES[key] = body
    return _PIPELINE_BODIES[key]


def _pipeline_run(w: World, *, cancelled: bool = False) -> str:
    """A run of project A started by root: it stays running (nothing dispatches), or
    ends cancelled at once when root cancels it (none of its steps runs)."""
    made = raw_http(w.root).post(f"{PIPELINES}/runs", json=_pipeline_body(w))
    made.raise_for_status()
    run_id = str(made.json()["id"])
    if cancelled:
        raw_http(w.root).post(f"{PIPELINES}/runs/{run_id}/cancel").raise_for_status()
    return run_id


def _pipeline_trigger(w: World) -> str:
    name = _unique("t")
    body = {"name": name, "cron": "0 3 * * *", **_pipeline_body(w)}
    raw_http(w.root).post(f"{PIPELINES}/triggers", json=body).raise_for_status()
    return name


def _spare_sweep(w: World) -> str:
    """A sweep of project A as the sweep driver leaves it: its summary run, a trial."""
    name = _unique("sweep")
    w.root.create_run("team-a", name, {"metric": "m"}, {"plinth.sweep.summary": name})
    w.root.create_run("team-a", "t", {"x": 1}, {"plinth.sweep": name, "plinth.trial": "0"})
    return name


def _spare_pending(w: World, role: str) -> str:
    """A registered model the role's user made by name, waiting for a version."""
    name = _unique("pending")
    raw_http(w.users[role]).post(f"{MLFLOW}/registered-models/create", json={"name": name})
    return name


def _spare_version(w: World) -> int:
    """A new version of churn (new files of project A's run), to be archived."""
    path = _unique("spare")
    with tempfile.TemporaryDirectory() as where:
        w.root.log_artifacts(w.run, model_files(Path(where), path.encode()), path)
    return w.root.register_model(w.run, path, "churn").version


def _spare_secret(w: World) -> str:
    name = _unique("SPARE").replace("-", "_")
    w.root.set_secret("team-a", name, "spare value")
    return name


def _routes(settings: Settings) -> dict[tuple[str, str], Permission]:
    """Every route that is not public, with the permission it declares."""
    found = {}
    for route in all_routes(create_app(settings).routes):
        if isinstance(route, APIRoute):
            [permission] = _declared(route.dependant)
            if permission is not Permission.PUBLIC:
                found.update({(m, route.path): permission for m in route.methods})
    return found


def expected_status(role: str, permission: Permission, scope: str) -> int:
    """200 for allowed (any 2xx), 403 or 404."""
    if permission in PLATFORM:
        return 403
    if scope == "own":
        if role == "token-b":  # a scoped token: project work only, no identity routes
            return 200 if permission is Permission.PROJECT_READ else 403
        return 200
    if permission is Permission.AUTHENTICATED:
        return 403 if role == "token-b" else 200
    if role not in RANK:
        return 404
    return 200 if RANK[role] >= NEED[permission] else 403


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    home = tmp_path_factory.mktemp("matrix") / "home"
    key = SecretStr(MasterKey.generate().to_text())
    with _database(request) as database_url:
        # The world's run sends no heartbeats: on a slow machine the module outlasts the
        # reaper's 120 s, and a run it killed mid-test looked like a refused request's
        # change. Jobs stay queued for the same reason: no background change.
        settings = make_settings(
            home,
            database_url,
            tracking=TrackingSettings(stale_after_seconds=24 * 3600),
            compute=ComputeSettings(handoff=False, dispatch=False),
        ).model_copy(update={"master_key": key})
        yield from _build(settings, tmp_path_factory.mktemp("files"))


def _database(request: pytest.FixtureRequest) -> Any:
    """A database of the module's own (auth is on in it), or SQLite in the home."""
    if request.param == "sqlite":
        return contextlib.nullcontext(None)
    server = request.getfixturevalue("postgres_server_url")
    return services.postgres_database(server, request.getfixturevalue("postgres_template"))


def _build(settings: Settings, files: Path) -> Iterator[World]:
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    root = as_user(root_token)
    tokens = {name: root.create_user(name).token.token for name in [*RANK, "outsider"]}
    run = root.create_run("team-a")
    root.log_batch(run.id, metrics=[{"key": "m", "value": 1.0, "step": 0}])
    (files / "a.txt").write_text("a")
    [artifact] = root.log_artifact(run.id, files / "a.txt")
    root.log_artifacts(run.id, model_files(files / "model"), "model")
    root.register_model(run.id, "model", "churn")
    root.set_model_alias("team-a", "churn", "champion", 1)
    root.log_artifacts(run.id, model_files(files / "model2", b"v2"), "model2")
    root.register_model(run.id, "model2", "churn")
    root.create_deployment("team-a", "svc", "models:/team-a/churn/1", runtime="memory")
    for role in RANK:
        root.add_member("team-a", role, role)
    root.create_run("team-b")
    root.add_member("team-b", "outsider", "admin")
    root.set_secret("team-a", "API_KEY", "secret value")
    tokens["token-b"] = root.create_token("b-only", project="team-b", role="admin").token
    job = root.submit_job("team-a", ["true"]).id
    (files / "data").mkdir()
    (files / "data" / "a.txt").write_text("a")
    root.push_dataset("team-a", "churn", files / "data")
    world = World(settings, root, run.id, artifact.digest, job)
    for role, token in tokens.items():
        world.callers[role] = as_user(token)
        world.users[role] = root if role == "token-b" else world.callers[role]
    try:
        yield world
    finally:
        world.close()


def _snapshot(w: World) -> tuple[Any, ...]:
    return (
        w.root.get_run(w.run),
        w.root.list_artifacts(w.run),
        w.root.list_members("team-a"),
        w.root.list_secrets("team-a"),
        w.root.list_model_versions("team-a", "churn"),
        w.root.model_alias_history("team-a", "churn"),
        w.root.list_jobs("team-a"),
        w.root.list_dataset_versions("team-a", "churn"),
        w.root.list_datasets("team-a"),
    )


def _refusals(w: World, role: str) -> int:
    actor = "root" if role == "token-b" else role
    return sum(e.outcome == "refused" for e in w.root.audit_events(actor=actor))


def test_every_route_is_in_the_matrix(tmp_path: Path) -> None:
    routes = _routes(make_settings(tmp_path / "home"))
    assert set(routes) - set(REQUESTS) == set(), "add these routes to REQUESTS"
    assert set(REQUESTS) - set(routes) == set(), "these routes are gone"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", sorted(REQUESTS), ids=lambda r: f"{r[0]} {r[1]}")
def test_declared_permission_is_enforced(world: World, role: str, route: tuple[str, str]) -> None:
    scope, make = REQUESTS[route]
    permission = _routes_of(world)[route]
    want = expected_status(role, permission, scope)
    method, url, kwargs = make(world, role)
    before, refused_before = _snapshot(world), _refusals(world, role)
    http: httpx.Client = raw_http(world.callers[role])
    response = http.request(method, url, **kwargs)
    if want == 200:
        assert 200 <= response.status_code < 300, (route, role, response.text[:300])
        return
    assert response.status_code == want, (route, role, response.text[:300])
    assert _snapshot(world) == before  # a refusal changes nothing
    assert _refusals(world, role) == refused_before + 1  # and is recorded once


_PERMISSIONS: dict[str, dict[tuple[str, str], Permission]] = {}


def _routes_of(world: World) -> dict[tuple[str, str], Permission]:
    key = str(world.settings.home)
    if key not in _PERMISSIONS:
        _PERMISSIONS[key] = _routes(world.settings)
    return _PERMISSIONS[key]
