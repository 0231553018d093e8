"""MLflow's tracking calls, carried out by Plinth's tracking service.

An MLflow *experiment* is a Plinth project: its ``experiment_id`` is the project's id,
and MLflow's default experiment ``"0"`` is the project ``Default`` (made on the first
run logged to it). An MLflow *run* is a Plinth run with the same id. Everything goes
through ``TrackingService`` and the kernel's projects, so roles, the uniform 404 for
outsiders and the audit trail are Plinth's, and a run logged by MLflow code is in
``plinth runs list``, search and the web UI like any other.

MLflow counts time in milliseconds, Plinth in seconds: converted at this edge. MLflow
keeps params as text; a param Plinth's SDK logged as a number reads back as its JSON
text (``0.1``, ``true``).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from plinth.core.access import Need, Principal
from plinth.core.names import check_project_name, is_project_name
from plinth.core.platform import Platform
from plinth.core.projects import projects
from plinth.errors import Conflict, InvalidInput, NotFound
from plinth.mlflow import schemas as m
from plinth.mlflow import tables as mt
from plinth.tracking import schemas as ts
from plinth.tracking import tables as ts_tables
from plinth.tracking.artifacts import RunArtifactsService
from plinth.tracking.search import MAX_OFFSET
from plinth.tracking.service import TrackingService

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT = "Default"
_TO_MLFLOW = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_FROM_MLFLOW = {v: k for k, v in _TO_MLFLOW.items()}
MAX_PAGE = 10_000  # runs per page: MLflow's client asks for up to 50,000 and pages on
# `tags."mlflow.runName"`: MLflow quotes a key in double quotes or backticks, Plinth in
# backticks only; MLflow's run attributes by their MLflow names.
_QUOTED_KEY = re.compile(r'\b(metrics?|params?|tags?|attributes?)\."([^"]*)"', re.IGNORECASE)
_ATTRIBUTE_NAMES = re.compile(
    r"\b(?:attributes?|attr|run)\.(run_name|run_id|run_uuid)\b|"
    r"(?<![.\w`])(run_name|run_id|run_uuid)\b",
    re.IGNORECASE,
)
_RUN_NAME_TAG = re.compile(r"\btags?\.`mlflow\.runName`", re.IGNORECASE)
_DIGITS = re.compile("[0-9]{1,10}")
_PLINTH_ATTRIBUTE = {"run_name": "name", "run_id": "id", "run_uuid": "id"}
MODEL_ID = re.compile(r"m-[0-9a-f]{32}")  # an MLflow 3 logged model's id
_EXPERIMENT_FILTER = re.compile(
    r"^\s*(?:attributes?\.)?name\s*(=|!=|LIKE|ILIKE)\s*'((?:[^']|'')*)'\s*$", re.IGNORECASE
)


class MlflowService:
    def __init__(
        self,
        platform: Platform,
        *,
        tracking: TrackingService,
        artifacts: RunArtifactsService,
    ) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.projects = platform.projects
        self.tracking = tracking
        self.artifacts = artifacts

    # experiments ------------------------------------------------------------------------

    def create_experiment(
        self, req: m.MlflowCreateExperiment, *, principal: Principal
    ) -> dict[str, Any]:
        name = check_project_name(req.name)  # an experiment's name is its project's
        if req.artifact_location:
            raise InvalidInput(
                "artifact_location is not taken: Plinth stores every experiment's artifacts "
                "in its own store; leave it out"
            )
        tags = _pairs(req.tags, "tag")
        with self.audit.recorded(principal, "projects.create", project=name) as (conn, change):
            change.record = False  # the guard records the creation itself
            project_id = self.projects.create(conn, name, principal)
            if tags:
                self._save_state(conn, project_id, tags=tags)
        return {"experiment_id": project_id}

    def get_experiment(self, experiment_id: str, *, principal: Principal) -> dict[str, Any]:
        with self.db.read() as conn:
            row = self.experiment_row(conn, experiment_id, principal)
            return {"experiment": _experiment(row, self._states(conn, [row.id]).get(row.id))}

    def get_experiment_by_name(self, name: str, *, principal: Principal) -> dict[str, Any]:
        hidden = NotFound(f"no experiment named {name!r}")
        with self.db.read() as conn:
            project_id = self.projects.id_of(conn, name) if is_project_name(name) else None
            self.projects.check(conn, project_id, principal, Need.READ, hidden, project=name)
            row = conn.execute(sa.select(projects).where(projects.c.id == project_id)).one()
            return {"experiment": _experiment(row, self._states(conn, [row.id]).get(row.id))}

    def search_experiments(
        self, req: m.MlflowSearchExperiments, *, principal: Principal
    ) -> dict[str, Any]:
        """The experiments (projects) the caller may read; the filter compares the name
        (``=``, ``!=``, ``LIKE``, ``ILIKE``), the order is by name or creation time;
        ``view_type`` chooses active, deleted or all experiments, as for runs."""
        lifecycle = _lifecycle(req.view_type)
        found = [r for r in self.projects.list(principal) if _name_matches(req.filter, r["name"])]
        with self.db.read() as conn:
            states = self._states(conn, [r["id"] for r in found])
        rows = [
            r | {"state": states.get(r["id"])}
            for r in found
            if lifecycle == "all" or (lifecycle == "deleted") == _deleted(states.get(r["id"]))
        ]
        for field in reversed(req.order_by or ["creation_time DESC"]):
            key, descending = _experiment_order(field)
            rows.sort(key=lambda r: r[key], reverse=descending)
        start = _offset(req.page_token)
        page = rows[start : start + req.max_results]
        answer: dict[str, Any] = {"experiments": [_experiment(r, r["state"]) for r in page]}
        if start + req.max_results < len(rows):
            answer["next_page_token"] = str(start + req.max_results)
        return answer

    def update_experiment(
        self, req: m.MlflowUpdateExperiment, *, principal: Principal
    ) -> dict[str, Any]:
        """MLflow's update renames; a project's name is fixed (it is in every URI and
        token scope that names it), so only the same name is taken."""
        with self.db.read() as conn:
            row = self.experiment_row(conn, req.experiment_id, principal, Need.WRITE)
        if req.new_name is not None and req.new_name != row.name:
            raise InvalidInput(
                f"experiment {row.name!r} cannot be renamed: it is Plinth's project "
                f"{row.name!r}, whose name is fixed; create an experiment with the new name"
            )
        return {}

    def delete_experiment(self, experiment_id: str, *, principal: Principal) -> dict[str, Any]:
        """MLflow's delete: the experiment leaves MLflow's active listing and its runs
        are deleted (kept, restorable, Plinth-wide); the project stays. Takes the
        project's admin."""
        return self._set_deleted(experiment_id, time.time(), principal)

    def restore_experiment(self, experiment_id: str, *, principal: Principal) -> dict[str, Any]:
        """Undo a delete: the experiment and the runs its delete took come back (a run
        deleted on its own before stays deleted)."""
        return self._set_deleted(experiment_id, None, principal)

    def _set_deleted(
        self, experiment_id: str, when: float | None, principal: Principal
    ) -> dict[str, Any]:
        action = "mlflow.experiments.delete" if when else "mlflow.experiments.restore"
        with self.audit.recorded(principal, action, object=experiment_id) as (conn, change):
            row = self.experiment_row(conn, experiment_id, principal, Need.ADMIN, change)
            was = (self._states(conn, [row.id]).get(row.id) or {}).get("deleted_at")
            change.record = (was is None) != (when is None)  # else: nothing changes
            if not change.record:
                return {}
            r = ts_tables.runs
            mine = r.c.project_id == row.id
            if when is not None:
                taken = r.update().where(mine, r.c.deleted_at.is_(None)).values(deleted_at=when)
            else:
                taken = r.update().where(mine, r.c.deleted_at == was).values(deleted_at=None)
            change.details = {"runs": conn.execute(taken).rowcount}
            self._save_state(conn, row.id, deleted_at=when)
        return {}

    def set_experiment_tag(
        self, req: m.MlflowExperimentTag, *, principal: Principal
    ) -> dict[str, Any]:
        return self._change_tags(req.experiment_id, {req.key: req.value}, principal)

    def delete_experiment_tag(
        self, req: m.MlflowExperimentTagKey, *, principal: Principal
    ) -> dict[str, Any]:
        return self._change_tags(req.experiment_id, {req.key: None}, principal)

    def _change_tags(
        self, experiment_id: str, change_to: dict[str, str | None], principal: Principal
    ) -> dict[str, Any]:
        """Set (a text) or remove (``None``) experiment tags."""
        with self.audit.recorded(principal, "mlflow.experiments.tag", object=experiment_id) as (
            conn,
            change,
        ):
            row = self.experiment_row(conn, experiment_id, principal, Need.WRITE, change)
            tags = json.loads((self._states(conn, [row.id]).get(row.id) or {}).get("tags", "{}"))
            change.details = change_to
            self._save_state(
                conn, row.id, tags=changed_tags(tags, change_to, f"experiment {experiment_id}")
            )
        return {}

    def _states(self, conn: Any, project_ids: list[str]) -> dict[str, dict[str, Any]]:
        """What MLflow said about these experiments (tags, deletion), by project id."""
        e = mt.experiments
        if not project_ids:
            return {}
        rows = conn.execute(sa.select(e).where(e.c.project_id.in_(project_ids))).mappings()
        return {r["project_id"]: dict(r) for r in rows}

    def _save_state(self, conn: Any, project_id: str, **values: Any) -> None:
        e = mt.experiments
        if "tags" in values:
            values["tags"] = json.dumps(values["tags"])
        values["updated_at"] = time.time()
        updated = conn.execute(e.update().where(e.c.project_id == project_id).values(**values))
        if not updated.rowcount:
            conn.execute(e.insert().values(project_id=project_id, **values))

    def require_active(self, conn: Any, project_id: str, name: str) -> None:
        """Refuse new runs in an experiment MLflow code deleted."""
        if _deleted(self._states(conn, [project_id]).get(project_id)):
            raise InvalidInput(
                f"experiment {name!r} is deleted: restore it (MlflowClient()."
                "restore_experiment) or log to another"
            )

    def experiment_row(
        self,
        conn: Any,
        experiment_id: str,
        principal: Principal,
        need: Need = Need.READ,
        change: Any = None,
    ) -> Any:
        """The project behind ``experiment_id`` if the caller may ``need`` it; else the
        same NotFound whether it exists or not. Inside an audited ``change`` the change
        records the refusal and names the project."""
        if experiment_id == DEFAULT_EXPERIMENT_ID:
            project_id = self.projects.id_of(conn, DEFAULT_EXPERIMENT)
        else:
            project_id = experiment_id
        row = conn.execute(sa.select(projects).where(projects.c.id == project_id)).first()
        hidden = NotFound(f"no experiment with id {experiment_id!r}")
        if change is not None and row is not None:
            change.project = row.name
        self.projects.check(
            conn,
            None if row is None else row.id,
            principal,
            need,
            hidden,
            project=None if row is None else row.name,
            record=change is None,
        )
        return row

    def project_of(self, experiment_id: str, principal: Principal) -> str:
        """The project name runs of ``experiment_id`` are logged to."""
        if experiment_id == DEFAULT_EXPERIMENT_ID:
            return DEFAULT_EXPERIMENT
        with self.db.read() as conn:
            return str(self.experiment_row(conn, experiment_id, principal).name)

    # runs -------------------------------------------------------------------------------

    def create_run(self, req: m.MlflowCreateRun, *, principal: Principal) -> dict[str, Any]:
        with self.db.read() as conn:  # ``Default`` is made by its first run
            exists = req.experiment_id != DEFAULT_EXPERIMENT_ID or self.projects.id_of(
                conn, DEFAULT_EXPERIMENT
            )
            if exists:
                row = self.experiment_row(conn, req.experiment_id, principal)
                self.require_active(conn, row.id, row.name)
        if not exists and not principal.is_admin:  # its maker would be its admin
            raise NotFound(
                f"no experiment with id {DEFAULT_EXPERIMENT_ID!r}: the shared "
                f"{DEFAULT_EXPERIMENT!r} "
                "experiment is made by a platform admin (who then adds its members); name "
                "an experiment of your own instead (mlflow.set_experiment)"
            )
        project = DEFAULT_EXPERIMENT if not exists else str(row.name)
        tags = _pairs(req.tags, "tag")
        if req.user_id:
            tags.setdefault("mlflow.user", req.user_id)
        name = req.run_name or tags.get("mlflow.runName")
        tags.pop("mlflow.runName", None)  # the run's name, which Plinth keeps as its name
        start = None if req.start_time is None else req.start_time / 1000
        run = self.tracking.create_run(
            ts.RunCreate(project=project, name=name, tags=tags, start_time=start),
            principal=principal,
        )
        return {"run": self._run(run)}

    def get_run(
        self, run_id: str | None, run_uuid: str | None = None, *, principal: Principal
    ) -> dict[str, Any]:
        run = self.tracking.get_run(_either(run_id, run_uuid), principal=principal)
        return {"run": self._run(run, io=self._io([run.id]))}

    def update_run(self, req: m.MlflowUpdateRun, *, principal: Principal) -> dict[str, Any]:
        """MLflow's end of a run (a terminal status), or its restart (``RUNNING``)."""
        run_id = _run_id(req)
        run = self.tracking.get_run(run_id, principal=principal)
        if req.run_name is not None and req.run_name != run.name:
            raise InvalidInput("renaming a run is not supported here; its name stays as set")
        status = _FROM_MLFLOW.get((req.status or "").upper())
        if req.status is not None and status is None:
            raise InvalidInput(f"status must be one of {', '.join(_TO_MLFLOW.values())}")
        if status == "running" and run.status != "running":
            run = self.tracking.resume_run(run_id, principal=principal)
        elif status is not None and status != "running":
            ended = None if req.end_time is None else req.end_time / 1000
            end = ts.RunUpdate.model_validate({"status": status, "end_time": ended})
            run = self.tracking.end_run(run_id, end, principal=principal)
        return {"run_info": self._run(run)["info"]}

    def log_batch(self, req: m.MlflowLogBatch, *, principal: Principal) -> dict[str, Any]:
        """Metrics, params and tags together, all or nothing."""
        series: dict[str, list[m.MlflowMetric]] = defaultdict(list)
        for metric in req.metrics:
            series[metric.key].append(metric)
        batch = ts.LogBatch(
            batch_id=uuid.uuid4().hex,
            metrics=[
                ts.MetricSeries(
                    key=key,
                    steps=[p.step for p in points],
                    values=[p.value for p in points],
                    timestamps=[p.timestamp / 1000 for p in points],
                )
                for key, points in series.items()
            ],
            params=_pairs(req.params, "param"),
            tags=_pairs(req.tags, "tag"),
        )
        try:
            self.tracking.log_batch(_run_id(req), batch, principal=principal, ended_ok=True)
        except Conflict as exc:  # a param changed: MLflow calls that an invalid value
            raise InvalidInput(exc.message) from None
        return {}

    def log_metric(self, req: m.MlflowLogMetric, *, principal: Principal) -> dict[str, Any]:
        metric = m.MlflowMetric(
            key=req.key, value=req.value, timestamp=req.timestamp, step=req.step
        )
        return self.log_batch(
            m.MlflowLogBatch(run_id=_run_id(req), metrics=[metric]), principal=principal
        )

    def log_param(self, req: m.MlflowLogParam, *, principal: Principal) -> dict[str, Any]:
        param = m.MlflowKeyValue(key=req.key, value=req.value)
        return self.log_batch(
            m.MlflowLogBatch(run_id=_run_id(req), params=[param]), principal=principal
        )

    def set_tag(self, req: m.MlflowSetTag, *, principal: Principal) -> dict[str, Any]:
        tag = m.MlflowKeyValue(key=req.key, value=req.value)
        return self.log_batch(
            m.MlflowLogBatch(run_id=_run_id(req), tags=[tag]), principal=principal
        )

    def delete_run(self, req: m.MlflowRunRef, *, principal: Principal) -> dict[str, Any]:
        """MLflow's delete: the run is kept, left out of searches, restorable."""
        self.tracking.delete_run(_run_id(req), principal=principal)
        return {}

    def restore_run(self, req: m.MlflowRunRef, *, principal: Principal) -> dict[str, Any]:
        self.tracking.restore_run(_run_id(req), principal=principal)
        return {}

    def delete_tag(self, req: m.MlflowDeleteTag, *, principal: Principal) -> dict[str, Any]:
        self.tracking.delete_tag(_run_id(req), req.key, principal=principal)
        return {}

    def metric_history(
        self,
        run_id: str | None,
        run_uuid: str | None,
        key: str,
        page_token: str | None,
        max_results: int | None,
        *,
        principal: Principal,
    ) -> dict[str, Any]:
        run = _either(run_id, run_uuid)
        columns = self.tracking.metric_history(run, key, principal=principal)
        start = _offset(page_token)
        end = len(columns) if max_results is None else min(len(columns), start + max_results)
        points = [
            {
                "key": key,
                "value": _number(float(columns.values[i])),
                "timestamp": round(float(columns.timestamps[i]) * 1000),
                "step": int(columns.steps[i]),
            }
            for i in range(start, end)
        ]
        answer: dict[str, Any] = {"metrics": points}
        if end < len(columns):
            answer["next_page_token"] = str(end)
        return answer

    def search_runs(self, req: m.MlflowSearchRuns, *, principal: Principal) -> dict[str, Any]:
        if len(req.experiment_ids) != 1:
            raise InvalidInput(
                "search the runs of one experiment at a time (experiment_ids holds "
                f"{len(req.experiment_ids)})"
            )
        project = self.project_of(req.experiment_ids[0], principal)
        query = ts.SearchQuery(
            project=project,
            filter=_plinth_filter(req.filter),
            order_by=", ".join(_plinth_filter(o) for o in req.order_by),
            limit=min(req.max_results, MAX_PAGE),
            page_token=req.page_token,
            lifecycle=_lifecycle(req.run_view_type),
        )
        page = self.tracking.search_runs(query, principal=principal)
        experiment_id = self.experiment_id_of(project)  # one for the page, not one per run
        io = self._io([r.id for r in page.runs])  # three queries for the page
        answer: dict[str, Any] = {"runs": [self._run(r, experiment_id, io) for r in page.runs]}
        if page.next_page_token:
            answer["next_page_token"] = page.next_page_token
        return answer

    # artifacts (MLflow's proxied artifact API) ------------------------------------------

    def upload_artifact(
        self, path: str, chunks: Iterable[bytes], *, principal: Principal
    ) -> dict[str, Any]:
        run_id, name = self.artifact_name(path, principal)
        if not name:
            raise InvalidInput(f"{path!r} names the run's artifact folder, not a file in it")
        self.artifacts.upload_artifact(run_id, name, chunks, principal=principal, ended_ok=True)
        return {}

    def download_artifact(
        self, path: str, *, principal: Principal
    ) -> tuple[ts.Artifact, Iterator[bytes]]:
        run_id, name = self.artifact_name(path, principal)
        return self.artifacts.get_artifact(run_id, name, principal=principal)

    def list_artifacts(self, path: str | None, *, principal: Principal) -> dict[str, Any]:
        """The files and folders right inside ``path`` (MLflow lists one level), named
        relative to it."""
        run_id, folder = self.artifact_name(path or "", principal)
        stored = self.artifacts.list_artifacts(run_id, folder or None, principal=principal)
        prefix = f"{folder}/" if folder else ""
        files: dict[str, dict[str, Any]] = {}
        for artifact in stored:
            inner = artifact.path[len(prefix) :]
            child, _, rest = inner.partition("/")
            if rest:
                files.setdefault(child, {"path": child, "is_dir": True})
            else:
                files[child] = {"path": child, "is_dir": False, "file_size": artifact.size}
        return {"files": list(files.values())}

    def artifact_name(self, path: str, principal: Principal) -> tuple[str, str]:
        """The run and the artifact name in it of MLflow's ``EXPERIMENT/RUN/artifacts/NAME``
        (the form of the ``artifact_uri`` runs are given); the same NotFound for a run
        one may not read and for a path of any other form."""
        parts = path.split("/", 3)
        if len(parts) < 3 or parts[2] != "artifacts":
            raise NotFound(f"no artifacts at {path[:200]!r}: expected EXPERIMENT/RUN/artifacts/…")
        run = self.tracking.get_run(_exact(parts[1]), principal=principal)
        if self.experiment_id_of(run.project) != parts[0]:
            raise NotFound(f"no run {run.id!r} in experiment {parts[0][:64]!r}")
        name = parts[3].rstrip("/") if len(parts) == 4 else ""
        if name:
            ts.check_artifact_path(name)
        return run.id, name

    def log_inputs(self, req: m.MlflowLogInputs, *, principal: Principal) -> dict[str, Any]:
        """The datasets a run read, kept as MLflow describes them, and the logged models
        it used (``mlflow.log_metric(…, model_id=…)``); the same one again is no change."""
        run_id = _run_id(req)
        ri, mi = mt.run_inputs, mt.run_model_inputs
        with self.audit.recorded(principal, "runs.inputs", object=run_id) as (conn, change):
            self.tracking.require_run(conn, run_id, principal, Need.WRITE, change)
            models = []
            for model in req.models:
                self.require_logged(conn, model.model_id, principal, Need.READ)
                inserted = conn.execute(
                    self.db.insert_ignoring_duplicates(mi).returning(mi.c.model_id),
                    {"run_id": run_id, "model_id": model.model_id, "logged_at": time.time()},
                ).scalar()
                if inserted is not None:
                    models.append(model.model_id)
            added = []
            for given in req.datasets:
                dataset = given.dataset.model_dump(by_alias=True, exclude_none=True)
                row = {
                    "run_id": run_id,
                    "name": given.dataset.name,
                    "digest": given.dataset.digest,
                    "dataset": json.dumps(dataset),
                    "tags": json.dumps(_pairs(given.tags, "tag")),
                    "logged_at": time.time(),
                }
                inserted = conn.execute(
                    self.db.insert_ignoring_duplicates(ri).returning(ri.c.name), row
                ).scalar()
                if inserted is not None:
                    added.append(f"{row['name']}@{row['digest']}")
            change.record = bool(added or models)
            change.details = {k: v for k, v in (("datasets", added), ("models", models)) if v}
        return {}

    def require_logged(
        self, conn: Any, model_id: str, principal: Principal, need: Need, change: Any = None
    ) -> Any:
        """The logged model's row if its run may be ``need``-ed; the same NotFound for a
        model one may not see as for none."""
        lm = mt.logged_models
        row = None
        if MODEL_ID.fullmatch(model_id):
            row = conn.execute(sa.select(lm).where(lm.c.id == model_id)).first()
        if row is None:
            raise NotFound(f"no logged model {model_id[:64]!r}")
        self.tracking.require_run(conn, row.run_id, principal, need, change, shown_as=model_id)
        return row

    def _io(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """MLflow's ``inputs`` (datasets, models) and ``outputs`` (models) of each run,
        in three queries whatever the number of runs."""
        ri, mi, lm = mt.run_inputs, mt.run_model_inputs, mt.logged_models
        found: dict[str, dict[str, Any]] = defaultdict(
            lambda: {
                "inputs": {"dataset_inputs": [], "model_inputs": []},
                "outputs": {"model_outputs": []},
            }
        )
        if not run_ids:
            return found
        datasets = sa.select(ri).where(ri.c.run_id.in_(run_ids)).order_by(ri.c.logged_at, ri.c.name)
        models = sa.select(mi).where(mi.c.run_id.in_(run_ids)).order_by(mi.c.logged_at)
        made = sa.select(lm.c.id, lm.c.run_id).where(lm.c.run_id.in_(run_ids))
        with self.db.read() as conn:
            for row in conn.execute(datasets):
                tags = [{"key": k, "value": v} for k, v in json.loads(row.tags).items()]
                found[row.run_id]["inputs"]["dataset_inputs"].append(
                    {"tags": tags, "dataset": json.loads(row.dataset)}
                )
            for row in conn.execute(models):
                found[row.run_id]["inputs"]["model_inputs"].append({"model_id": row.model_id})
            for row in conn.execute(made.order_by(lm.c.created_at)):
                found[row.run_id]["outputs"]["model_outputs"].append(
                    {"model_id": row.id, "step": 0}
                )
        return found

    def _run(
        self,
        run: ts.Run,
        experiment_id: str | None = None,
        io: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A Plinth run in MLflow's shape (``Run``: ``info``, ``data``, ``inputs``,
        ``outputs``)."""
        experiment_id = experiment_id or self.experiment_id_of(run.project)
        tags = {"mlflow.runName": run.name, **run.tags}
        info: dict[str, Any] = {
            "run_id": run.id,
            "run_uuid": run.id,
            "run_name": run.name,
            "experiment_id": experiment_id,
            "user_id": tags.get("mlflow.user", ""),
            "status": _TO_MLFLOW[run.status],
            "start_time": round(run.start_time * 1000),
            "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run.id}/artifacts",
            "lifecycle_stage": "active" if run.deleted_at is None else "deleted",
        }
        if run.end_time is not None:
            info["end_time"] = round(run.end_time * 1000)
        stamp = round((run.end_time or run.start_time) * 1000)
        data = {
            "metrics": [
                {"key": k, "value": _number(v), "timestamp": stamp, "step": 0}
                for k, v in run.metrics.items()
            ],
            "params": [{"key": k, "value": _param_text(v)} for k, v in run.params.items()],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        found = (io or {}).get(run.id) or {}
        return {
            "info": info,
            "data": data,
            "inputs": found.get("inputs", {"dataset_inputs": []}),
            "outputs": found.get("outputs", {"model_outputs": []}),
        }

    def experiment_id_of(self, project: str) -> str:
        with self.db.read() as conn:
            return experiment_id(project, str(self.projects.id_of(conn, project)))


# helpers --------------------------------------------------------------------------------


def _experiment(row: Any, state: dict[str, Any] | None) -> dict[str, Any]:
    """A project (a row, or a row's mapping) and its MLflow state as MLflow's
    ``Experiment``."""
    row = row if isinstance(row, dict) else row._mapping
    found = experiment_id(row["name"], row["id"])
    created = round(row["created_at"] * 1000)
    tags = json.loads(state["tags"]) if state else {}
    return {
        "experiment_id": found,
        "name": row["name"],
        "artifact_location": f"mlflow-artifacts:/{found}",
        "lifecycle_stage": "deleted" if _deleted(state) else "active",
        "creation_time": created,
        "last_update_time": round(state["updated_at"] * 1000) if state else created,
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }


def changed_tags(tags: dict[str, str], change_to: dict[str, str | None], of: str) -> dict[str, str]:
    """``tags`` with keys set (to a text) or removed (``None``: NotFound if absent)."""
    tags = dict(tags)
    for key, value in change_to.items():
        if value is None:
            if tags.pop(key, None) is None:
                raise NotFound(f"{of} has no tag {key!r}")
        else:
            ts.check_key(key)
            tags[key] = value
    return tags


def _deleted(state: dict[str, Any] | None) -> bool:
    return state is not None and state["deleted_at"] is not None


def experiment_id(project: str, project_id: str) -> str:
    """The MLflow experiment id of a project: its id, or ``"0"`` for ``Default``."""
    return DEFAULT_EXPERIMENT_ID if project == DEFAULT_EXPERIMENT else project_id


def _lifecycle(view: str | int | None) -> str:
    """MLflow's ``view_type`` or ``run_view_type`` (by name or number) as Plinth's
    search lifecycle."""
    views = {"ACTIVE_ONLY": "active", "DELETED_ONLY": "deleted", "ALL": "all"}
    numbers = {"1": "active", "2": "deleted", "3": "all"}
    found = views.get(str(view or "ACTIVE_ONLY").upper()) or numbers.get(str(view))
    if found is None:
        raise InvalidInput(f"view type is one of {', '.join(views)}; got {str(view)[:40]!r}")
    return found


def _run_id(req: m.MlflowRunRef) -> str:
    return _either(req.run_id, req.run_uuid)


def _either(run_id: str | None, run_uuid: str | None) -> str:
    """The run named by ``run_id`` or by ``run_uuid`` (its name in MLflow 1.x)."""
    if run_id and run_uuid and run_id != run_uuid:
        raise InvalidInput("run_id and run_uuid name different runs; give one of them")
    if not (run_id or run_uuid):
        raise InvalidInput("run_id is required")
    return _exact(run_id or run_uuid or "")


def _exact(run_id: str) -> str:
    """MLflow names a run by its whole id, never by a prefix as Plinth's CLI may."""
    if not re.fullmatch(r"[0-9a-f]{32}", run_id):
        raise NotFound(f"no run {run_id!r}")
    return run_id


def _pairs(pairs: list[m.MlflowKeyValue], what: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        ts.check_key(pair.key)
        if found.get(pair.key, pair.value) != pair.value:
            raise InvalidInput(f"{what} {pair.key!r} is given twice with different values")
        found[pair.key] = pair.value
    return found


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _number(value: float) -> float | str:
    """A float JSON can carry: NaN and the infinities as MLflow's server writes them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _offset(token: str | None) -> int:
    """The offset a page token this server gave stands for: ASCII digits, at most
    ``MAX_OFFSET`` (other scripts' digits, or a number past SQL's integers, are not)."""
    if not token:
        return 0
    if _DIGITS.fullmatch(token) is None or int(token) > MAX_OFFSET:
        raise InvalidInput(f"page_token {token[:40]!r} is not one this server gave")
    return int(token)


def _plinth_filter(text: str) -> str:
    """An MLflow filter or order-by clause in Plinth's spelling of the same."""
    text = _QUOTED_KEY.sub(lambda found: f"{found[1]}.`{found[2]}`", text)
    text = _RUN_NAME_TAG.sub("attributes.name", text)  # MLflow's tag for the run's name
    return _ATTRIBUTE_NAMES.sub(
        lambda found: f"attributes.{_PLINTH_ATTRIBUTE[(found[1] or found[2]).lower()]}", text
    )


def _name_matches(filter_text: str, name: str) -> bool:
    if not filter_text.strip():
        return True
    found = _EXPERIMENT_FILTER.match(filter_text)
    if found is None:
        raise InvalidInput(
            "an experiment filter compares the name: name = 'x', name != 'x', "
            f"name LIKE 'x%' or name ILIKE 'x%'; got {filter_text[:200]!r}"
        )
    op, value = found[1].upper(), found[2].replace("''", "'")
    if op in ("=", "!="):
        return (name == value) == (op == "=")
    if op == "ILIKE":
        value, name = value.casefold(), name.casefold()
    return like(value, name)


def like(pattern: str, text: str) -> bool:
    """SQL's LIKE (``%``: any run, ``_``: one character), in at most
    len(pattern) * len(text) steps: a regular expression of many ``.*`` backtracks
    exponentially (``'%%%%%b'`` on 200 letters held the server for seconds)."""
    p = t = 0
    star, resume = -1, 0  # the last % seen, and where in text it last took up to
    while t < len(text):
        if p < len(pattern) and pattern[p] == "%":
            star, resume, p = p, t, p + 1
        elif p < len(pattern) and pattern[p] in ("_", text[t]):
            p, t = p + 1, t + 1
        elif star >= 0:  # let the last % take one more character, and match on from there
            resume += 1
            p, t = star + 1, resume
        else:
            return False
    return pattern[p:].strip("%") == ""


def _experiment_order(clause: str) -> tuple[str, bool]:
    parts = clause.split()
    field = parts[0].removeprefix("attributes.").removeprefix("attribute.") if parts else ""
    direction = parts[1].upper() if len(parts) > 1 else "ASC"
    keys = {"name": "name", "creation_time": "created_at", "last_update_time": "created_at"}
    if field not in keys or direction not in ("ASC", "DESC") or len(parts) > 2:
        raise InvalidInput(
            "experiments order by name, creation_time or last_update_time, ASC or DESC; "
            f"got {clause[:200]!r}"
        )
    return keys[field], direction == "DESC"
