"""MLflow's models: MLflow 3 *logged models* and the model registry, carried out by
Plinth's run artifacts and Plinth's registry.

A logged model is what ``mlflow.<flavor>.log_model`` makes inside a run: its files go
to the run's artifacts under ``models/MODEL_ID/`` (its ``artifact_uri`` points there),
and a row here keeps its name, status, params and tags. Registering it is Plinth's
``register_model`` of those files: an immutable, digest-pinned Plinth model version
whose flavor comes from MLflow's ``MLmodel`` (``registry/flavors/meta.py``), so a model
saved with skops is Plinth's safe ``sklearn`` flavor and a pickled one is flagged and
never loaded by the server.

MLflow names registered models globally, Plinth within a project: an MLflow name is
the model of that name in the projects the caller may read (one, or the answer says
which projects hold it), placed by its first version in the project of that version's
run. One made by name before any version waits, for its maker, as *pending*.

MLflow's stages map onto Plinth's status: ``Archived`` is an archived version, ``None``
a ready one; for ``Staging``/``Production`` MLflow itself moved to aliases, as Plinth
did. Plinth never deletes a version (versions are audited and may be deployed): MLflow's
delete of a version archives it, and a model with versions is not deleted.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core.access import Need, Principal, scope_limit
from plinth.core.platform import Platform
from plinth.core.projects import projects, visible_projects
from plinth.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from plinth.mlflow import schemas as m
from plinth.mlflow import tables as mt
from plinth.mlflow.service import (
    MODEL_ID,
    MlflowService,
    _exact,
    _name_matches,
    _offset,
    _pairs,
    changed_tags,
    experiment_id,
)
from plinth.registry import schemas as rs
from plinth.registry import tables as rt
from plinth.registry.aliases import AliasService
from plinth.registry.service import RegistryService
from plinth.registry.uri import check_model_name

MODELS_FOLDER = "models"  # a logged model's files: the run's artifacts models/MODEL_ID/…
MAX_PAGE = 1000  # models or versions per page: MLflow's client asks for more and pages on
_STATUSES = ("LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED")
_AND = re.compile(r"\s+AND\s+(?=(?:[^']*'[^']*')*[^']*\Z)", re.IGNORECASE)  # outside quotes
_CLAUSE = re.compile(r"^\s*(?:attributes?\.)?(\w+)\s*(=|!=)\s*'((?:[^']|'')*)'\s*$", re.IGNORECASE)
# A version's files as MLflow names them: where its run's artifacts are served.
_SOURCE = re.compile(
    r"^(?:mlflow-artifacts:/[^/]+/(?P<run>[^/]+)/artifacts"
    r"|runs:/(?P<run2>[^/]+))/(?P<path>.+)$"
)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class MlflowModels:
    def __init__(
        self,
        platform: Platform,
        *,
        mlflow: MlflowService,
        registry: RegistryService,
        aliases: AliasService,
    ) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.mlflow = mlflow
        self.runs = mlflow.tracking
        self.registry = registry
        self.aliases = aliases

    # logged models ----------------------------------------------------------------------

    def create_logged_model(
        self, req: m.MlflowCreateLoggedModel, *, principal: Principal
    ) -> dict[str, Any]:
        """A model about to be logged by ``req.source_run_id``: its files are uploaded
        next, to the ``artifact_uri`` answered."""
        if not req.source_run_id:
            raise InvalidInput(
                "log a model inside a run (source_run_id): Plinth keeps a model's files "
                "with the run that logged it"
            )
        run_id = _exact(req.source_run_id)
        params, tags = _pairs(req.params, "param"), _pairs(req.tags, "tag")
        model_id = f"m-{uuid.uuid4().hex}"
        with self.audit.recorded(principal, "mlflow.models.log", object=model_id) as (
            conn,
            change,
        ):
            row = self.runs.require_run(conn, run_id, principal, Need.WRITE, change)
            if experiment_id(row.project, row.project_id) != req.experiment_id:
                raise InvalidInput(f"run {run_id} is not in experiment {req.experiment_id!r}")
            now = time.time()
            conn.execute(
                mt.logged_models.insert(),
                {
                    "id": model_id,
                    "project_id": row.project_id,
                    "run_id": run_id,
                    "name": req.name or "model",
                    "model_type": req.model_type or "",
                    "status": "LOGGED_MODEL_PENDING",
                    "params": json.dumps(params),
                    "tags": json.dumps(tags),
                    "created_at": now,
                    "updated_at": now,
                    "created_by": principal.name,
                },
            )
            change.details = {"run_id": run_id, "name": req.name or "model"}
            return {"model": self._logged_model(conn, model_id)}

    def get_logged_model(self, model_id: str, *, principal: Principal) -> dict[str, Any]:
        with self.db.read() as conn:
            self.mlflow.require_logged(conn, model_id, principal, Need.READ)
            return {"model": self._logged_model(conn, model_id)}

    def finalize_logged_model(
        self, model_id: str, req: m.MlflowFinalizeLoggedModel, *, principal: Principal
    ) -> dict[str, Any]:
        if req.status not in _STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(_STATUSES)}")
        return self._change_logged(
            model_id, "mlflow.models.finalize", {"status": req.status}, principal
        )

    def set_logged_model_tags(
        self, model_id: str, req: m.MlflowLoggedModelTags, *, principal: Principal
    ) -> dict[str, Any]:
        tags = _pairs(req.tags, "tag")
        return self._change_logged(model_id, "mlflow.models.tag", {"tags": tags}, principal)

    def delete_logged_model_tag(
        self, model_id: str, key: str, *, principal: Principal
    ) -> dict[str, Any]:
        return self._change_logged(model_id, "mlflow.models.untag", {"untag": key}, principal)

    def log_logged_model_params(
        self, model_id: str, req: m.MlflowLoggedModelParams, *, principal: Principal
    ) -> dict[str, Any]:
        params = _pairs(req.params, "param")
        return self._change_logged(model_id, "mlflow.models.params", {"params": params}, principal)

    def _change_logged(
        self, model_id: str, action: str, what: dict[str, Any], principal: Principal
    ) -> dict[str, Any]:
        """Set the status, add tags or params, or remove a tag, audited."""
        lm = mt.logged_models
        with self.audit.recorded(principal, action, object=model_id) as (conn, change):
            row = self.mlflow.require_logged(conn, model_id, principal, Need.WRITE, change)
            values: dict[str, Any] = {"updated_at": time.time()}
            if "status" in what:
                values["status"] = what["status"]
            if "tags" in what:
                values["tags"] = json.dumps(json.loads(row.tags) | what["tags"])
            if "params" in what:
                old = json.loads(row.params)
                changed = [k for k, v in what["params"].items() if old.get(k, v) != v]
                if changed:
                    raise InvalidInput(f"param {changed[0]!r} of {model_id} is set already")
                values["params"] = json.dumps(old | what["params"])
            if "untag" in what:
                tags = json.loads(row.tags)
                if tags.pop(what["untag"], None) is None:
                    raise NotFound(f"logged model {model_id} has no tag {what['untag']!r}")
                values["tags"] = json.dumps(tags)
            conn.execute(lm.update().where(lm.c.id == model_id).values(values))
            change.details = what
        return {} if "untag" in what else self.get_logged_model(model_id, principal=principal)

    def search_logged_models(
        self, req: m.MlflowSearchLoggedModels, *, principal: Principal
    ) -> dict[str, Any]:
        """The logged models of these experiments, newest first; the filter compares
        ``name``, ``source_run_id``, ``model_id`` or ``status`` (``=``, ``!=``,
        joined by ``AND``)."""
        lm = mt.logged_models
        wanted = _clauses(req.filter, {"name", "source_run_id", "model_id", "status"})
        columns = {"name": lm.c.name, "source_run_id": lm.c.run_id, "model_id": lm.c.id}
        with self.db.read() as conn:
            ids = [self.mlflow.experiment_row(conn, e, principal).id for e in req.experiment_ids]
            stmt = sa.select(lm.c.id).where(lm.c.project_id.in_(ids))
            for field, op, value in wanted:
                column = columns.get(field, lm.c.status)
                stmt = stmt.where(column == value if op == "=" else column != value)
            start, size = _offset(req.page_token), min(req.max_results or 100, MAX_PAGE)
            found = conn.execute(
                stmt.order_by(lm.c.created_at.desc(), lm.c.id).offset(start).limit(size + 1)
            ).scalars()
            page = list(found)
            answer: dict[str, Any] = {"models": [self._logged_model(conn, i) for i in page[:size]]}
        if len(page) > size:
            answer["next_page_token"] = str(start + size)
        return answer

    def log_outputs(self, req: m.MlflowLogOutputs, *, principal: Principal) -> dict[str, Any]:
        """MLflow records which models a run made; here a run's logged models are its
        own already, so each is checked to be one of them."""
        run_id = _exact(req.run_id)
        lm = mt.logged_models
        with self.audit.recorded(principal, "mlflow.runs.outputs", object=run_id) as (
            conn,
            change,
        ):
            self.runs.require_run(conn, run_id, principal, Need.WRITE, change)
            change.record = False  # nothing changes: the models are the run's already
            for output in req.models:
                owner = conn.execute(
                    sa.select(lm.c.run_id).where(lm.c.id == output.model_id)
                ).scalar()
                if owner != run_id:
                    raise InvalidInput(f"run {run_id} logged no model {output.model_id!r}")
        return {}

    def _logged_model(self, conn: Connection, model_id: str) -> dict[str, Any]:
        lm = mt.logged_models
        row = conn.execute(
            sa.select(lm, projects.c.name.label("project"))
            .join(projects, projects.c.id == lm.c.project_id)
            .where(lm.c.id == model_id)
        ).one()
        experiment = experiment_id(row.project, row.project_id)
        info = {
            "model_id": row.id,
            "experiment_id": experiment,
            "name": row.name,
            "creation_timestamp_ms": _ms(row.created_at),
            "last_updated_timestamp_ms": _ms(row.updated_at),
            "artifact_uri": _artifact_uri(experiment, row.run_id, logged_path(row.id)),
            "status": row.status,
            "model_type": row.model_type,
            "source_run_id": row.run_id,
            "tags": _key_values(json.loads(row.tags)),
        }
        return {"info": info, "data": {"params": _key_values(json.loads(row.params))}}

    # registered models ------------------------------------------------------------------

    def create_registered_model(
        self, req: m.MlflowCreateRegisteredModel, *, principal: Principal
    ) -> dict[str, Any]:
        """A model by name, before its versions: kept for its maker until the first
        version places it in that version's project."""
        name = check_model_name(req.name)
        tags = _pairs(req.tags, "tag")
        pm = mt.pending_models
        with self.audit.recorded(principal, "mlflow.models.create", object=name) as (
            conn,
            change,
        ):
            _not_scoped(principal, name)
            if self._locate(conn, name, principal) is not None:
                raise Conflict(f"registered model {name!r} exists")
            now = time.time()
            added = conn.execute(
                self.db.insert_ignoring_duplicates(pm).returning(pm.c.name),
                {
                    "created_by": principal.name,
                    "name": name,
                    "description": req.description or "",
                    "created_at": now,
                    "tags": json.dumps(tags),
                },
            ).scalar()
            if added is None:
                raise Conflict(f"registered model {name!r} exists")
            change.details = {"pending": True}
            return {"registered_model": self._pending(conn, name, principal)}

    def get_registered_model(self, name: str, *, principal: Principal) -> dict[str, Any]:
        with self.db.read() as conn:
            project = self._project_of_model(conn, name, principal)
            if project is None and self._pending_row(conn, name, principal) is None:
                raise self._missing(name, principal)
            return {"registered_model": self._registered(conn, name, principal)}

    def search_registered_models(
        self, req: m.MlflowSearchModels, *, principal: Principal
    ) -> dict[str, Any]:
        """The models the caller may read (and its pending ones), by name; the filter
        compares the name (``=``, ``!=``, ``LIKE``, ``ILIKE``)."""
        with self.db.read() as conn:
            names = sorted(
                {n for n in self._visible_names(conn, principal) if _name_matches(req.filter, n)},
                reverse=any([w.upper() for w in o.split()[-1:]] == ["DESC"] for o in req.order_by),
            )
            start, size = _offset(req.page_token), min(req.max_results, MAX_PAGE)
            page = names[start : start + size]
            answer: dict[str, Any] = {
                "registered_models": [self._registered(conn, n, principal) for n in page]
            }
        if start + size < len(names):
            answer["next_page_token"] = str(start + size)
        return answer

    def update_registered_model(
        self, req: m.MlflowUpdateRegisteredModel, *, principal: Principal
    ) -> dict[str, Any]:
        with self.db.read() as conn:
            project = self._project_of_model(conn, req.name, principal)
        if project is None:
            pm = mt.pending_models
            with self.audit.recorded(principal, "mlflow.models.update", object=req.name) as (
                conn,
                _,
            ):
                self._pending(conn, req.name, principal)
                conn.execute(
                    pm.update()
                    .where(pm.c.created_by == principal.name, pm.c.name == req.name)
                    .values(description=req.description or "")
                )
        else:
            self.registry.update_model(
                project, req.name, req.description or "", principal=principal
            )
        return self.get_registered_model(req.name, principal=principal)

    def delete_registered_model(self, name: str, *, principal: Principal) -> dict[str, Any]:
        """A pending model goes; a model with versions stays (archive its versions)."""
        pm = mt.pending_models
        with self.audit.recorded(principal, "mlflow.models.delete", object=name) as (conn, _):
            _not_scoped(principal, name)
            if self._project_of_model(conn, name, principal) is not None:
                raise InvalidInput(
                    f"Plinth keeps every version of {name!r} (they are audited and may be "
                    "deployed): delete (archive) its versions instead"
                )
            self._pending(conn, name, principal)
            conn.execute(pm.delete().where(pm.c.created_by == principal.name, pm.c.name == name))
        return {}

    def set_model_tag(self, req: m.MlflowModelTag, *, principal: Principal) -> dict[str, Any]:
        return self._change_tags(req.name, {req.key: req.value}, principal)

    def delete_model_tag(self, name: str, key: str, *, principal: Principal) -> dict[str, Any]:
        return self._change_tags(name, {key: None}, principal)

    def _change_tags(
        self, name: str, change_to: dict[str, str | None], principal: Principal
    ) -> dict[str, Any]:
        """Set (a text) or remove (``None``) a registered model's MLflow tags; a pending
        model keeps its own until its first version."""
        with self.audit.recorded(principal, "mlflow.models.tag", object=name) as (conn, change):
            change.details = change_to
            found = self._locate(conn, name, principal)
            if found is None:
                pm = mt.pending_models
                row = self._pending_row(conn, name, principal)
                if row is None:
                    raise NotFound(f"no registered model {name!r}")
                tags = changed_tags(json.loads(row.tags), change_to, f"model {name!r}")
                mine = sa.and_(pm.c.created_by == principal.name, pm.c.name == name)
                conn.execute(pm.update().where(mine).values(tags=json.dumps(tags)))
                return {}
            change.project = found.project
            hidden = NotFound(f"no registered model {name!r}")
            self.mlflow.projects.check(
                conn,
                found.project_id,
                principal,
                Need.WRITE,
                hidden,
                project=found.project,
                record=False,
            )
            tags = changed_tags(self._tags(conn, found.id), change_to, f"model {name!r}")
            self._save_tags(conn, found.id, tags)
        return {}

    @staticmethod
    def _tags(conn: Connection, model_id: str) -> dict[str, str]:
        t = mt.model_tags
        held = conn.execute(sa.select(t.c.tags).where(t.c.model_id == model_id)).scalar()
        return {} if held is None else dict(json.loads(held))

    def _save_tags(self, conn: Connection, model_id: str, tags: dict[str, str]) -> None:
        t = mt.model_tags
        conn.execute(t.delete().where(t.c.model_id == model_id))
        if tags:
            conn.execute(t.insert().values(model_id=model_id, tags=json.dumps(tags)))

    def get_latest_versions(
        self, req: m.MlflowLatestVersions, *, principal: Principal
    ) -> dict[str, Any]:
        """The newest version in each stage asked for (all stages when none is)."""
        versions = self._versions(req.name, principal)
        latest: dict[str, dict[str, Any]] = {}
        for version in versions:
            latest[version["current_stage"]] = version
        stages = {s.lower() for s in req.stages}
        return {
            "model_versions": [
                v for stage, v in sorted(latest.items()) if not stages or stage.lower() in stages
            ]
        }

    def set_alias(self, req: m.MlflowSetAlias, *, principal: Principal) -> dict[str, Any]:
        version = _version_number(req.version)
        project = self._require_project(req.name, principal)
        self.aliases.set_alias(
            project, req.name, req.alias, rs.AliasSet(version=version), principal=principal
        )
        return {}

    def delete_alias(self, name: str, alias: str, *, principal: Principal) -> dict[str, Any]:
        project = self._require_project(name, principal)
        self.aliases.delete_alias(project, name, alias, principal=principal)
        return {}

    def get_by_alias(self, name: str, alias: str, *, principal: Principal) -> dict[str, Any]:
        project = self._require_project(name, principal)
        version = self.aliases.get_alias(project, name, alias, principal=principal)
        return {"model_version": self._version(version)}

    # model versions ---------------------------------------------------------------------

    def create_model_version(
        self, req: m.MlflowCreateVersion, *, principal: Principal
    ) -> dict[str, Any]:
        """Register the files of a logged model (``model_id``, or ``models:/MODEL_ID``)
        or of a run's folder (``runs:/RUN/PATH``, ``mlflow-artifacts:/…``) as the next
        version of ``name``, in the project of that run."""
        name = check_model_name(req.name)
        with self.db.read() as conn:
            run_id, path = self._source(conn, req, principal)
            run_project = self.runs.require_run(conn, run_id, principal, Need.READ).project
            project = self._project_of_model(conn, name, principal)
            pending = self._pending_row(conn, name, principal)
        if project is not None and project != run_project:
            raise InvalidInput(
                f"model {name!r} is in project {project!r}, and run {run_id} in "
                f"{run_project!r}: a model's versions come from runs of its own project"
            )
        register = rs.ModelVersionRegister(
            run_id=run_id,
            artifact_path=path,
            description=req.description or "",
            tags=_pairs(req.tags, "tag"),
        )
        version = self.registry.register_model(run_project, name, register, principal=principal)
        if pending is not None:  # placed: the pending name is now the model
            if pending.description:
                self.registry.update_model(
                    run_project, name, pending.description, principal=principal
                )
            pm = mt.pending_models
            with self.db.write() as conn:
                conn.execute(
                    pm.delete().where(pm.c.created_by == principal.name, pm.c.name == name)
                )
                placed = self._locate(conn, name, principal)
                if placed is not None and pending.tags != "{}":
                    self._save_tags(conn, placed.id, json.loads(pending.tags))
        return {"model_version": self._version(version)}

    def get_model_version(self, name: str, version: str, *, principal: Principal) -> dict[str, Any]:
        number = _version_number(version)  # the request is checked before any lookup
        project = self._require_project(name, principal)
        found = self.registry.get_version(project, name, number, principal=principal)
        return {"model_version": self._version(found)}

    def download_uri(self, name: str, version: str, *, principal: Principal) -> dict[str, Any]:
        found = self.get_model_version(name, version, principal=principal)["model_version"]
        return {"artifact_uri": found["source"]}

    def update_model_version(
        self, req: m.MlflowUpdateVersion, *, principal: Principal
    ) -> dict[str, Any]:
        return self._update_version(
            req.name,
            req.version,
            rs.ModelVersionUpdate(description=req.description or ""),
            principal,
        )

    def transition_stage(
        self, req: m.MlflowTransitionStage, *, principal: Principal
    ) -> dict[str, Any]:
        status = {"archived": "archived", "none": "ready"}.get(req.stage.lower())
        if status is None:
            raise InvalidInput(
                f"stage {req.stage!r} is not kept: MLflow's stages gave way to aliases; "
                "set an alias (champion, staging …) with set_registered_model_alias, or "
                "transition to Archived or None"
            )
        if req.archive_existing_versions:
            raise InvalidInput("archive_existing_versions applies to Staging and Production only")
        return self._update_version(
            req.name, req.version, rs.ModelVersionUpdate(status=status), principal
        )

    def delete_model_version(
        self, name: str, version: str, *, principal: Principal
    ) -> dict[str, Any]:
        """Plinth keeps every version (audited, perhaps deployed): MLflow's delete
        archives it, so it takes no alias and reads as stage ``Archived``."""
        self._update_version(name, version, rs.ModelVersionUpdate(status="archived"), principal)
        return {}

    def set_version_tag(self, req: m.MlflowVersionTag, *, principal: Principal) -> dict[str, Any]:
        number = _version_number(req.version)
        _pairs([m.MlflowKeyValue(key=req.key, value=req.value)], "tag")
        project = self._require_project(req.name, principal)
        self.registry.set_version_tag(
            project, req.name, number, req.key, req.value, principal=principal
        )
        return {}

    def delete_version_tag(
        self, name: str, version: str, key: str, *, principal: Principal
    ) -> dict[str, Any]:
        number = _version_number(version)
        project = self._require_project(name, principal)
        self.registry.delete_version_tag(project, name, number, key, principal=principal)
        return {}

    def search_model_versions(
        self, req: m.MlflowSearchModels, *, principal: Principal
    ) -> dict[str, Any]:
        """Versions of the models the caller may read; the filter compares ``name``,
        ``run_id`` or ``version`` (``=``, ``!=``, joined by ``AND``); newest first."""
        wanted = _clauses(req.filter, {"name", "run_id", "version", "source_path"})
        with self.db.read() as conn:
            names = [n for n in self._visible_names(conn, principal, pending=False)]
        found: list[dict[str, Any]] = []
        for name in names:
            if not all(op != "=" or value == name for f, op, value in wanted if f == "name"):
                continue
            for version in self._versions(name, principal):
                if all(_holds(version, f, op, value) for f, op, value in wanted):
                    found.append(version)
        found.sort(key=lambda v: (-v["creation_timestamp"], v["name"]))
        start, size = _offset(req.page_token), min(req.max_results, MAX_PAGE)
        answer: dict[str, Any] = {"model_versions": found[start : start + size]}
        if start + size < len(found):
            answer["next_page_token"] = str(start + size)
        return answer

    def _update_version(
        self, name: str, version: str, update: rs.ModelVersionUpdate, principal: Principal
    ) -> dict[str, Any]:
        number = _version_number(version)
        project = self._require_project(name, principal)
        changed = self.registry.update_version(project, name, number, update, principal=principal)
        return {"model_version": self._version(changed)}

    def _versions(self, name: str, principal: Principal) -> list[dict[str, Any]]:
        project = self._require_project(name, principal)
        listed = self.registry.list_versions(project, name, principal=principal)
        return [self._version(v) for v in listed]

    def _source(
        self, conn: Connection, req: m.MlflowCreateVersion, principal: Principal
    ) -> tuple[str, str]:
        """The run and the folder of its artifacts that ``req`` registers."""
        model_id = req.model_id
        if not model_id and req.source.startswith("models:/"):
            model_id = req.source.removeprefix("models:/")
        if model_id:
            row = self.mlflow.require_logged(conn, model_id, principal, Need.READ)
            return row.run_id, logged_path(row.id)
        found = _SOURCE.match(req.source)
        if found is None:
            raise InvalidInput(
                "source names a logged model (models:/MODEL_ID) or a run's folder "
                f"(runs:/RUN/PATH, mlflow-artifacts:/EXPERIMENT/RUN/artifacts/PATH); got "
                f"{req.source[:200]!r}"
            )
        run_id = _exact(found["run"] or found["run2"])
        if req.run_id and req.run_id != run_id:
            raise InvalidInput(f"source is a folder of run {run_id}, not of run {req.run_id}")
        return run_id, found["path"].rstrip("/")

    def _version(self, version: rs.ModelVersion) -> dict[str, Any]:
        """A Plinth model version in MLflow's shape (``ModelVersion``)."""
        experiment = self.mlflow.experiment_id_of(version.project)
        answer: dict[str, Any] = {
            "name": version.name,
            "version": str(version.version),
            "creation_timestamp": _ms(version.created_at),
            "last_updated_timestamp": _ms(version.created_at),
            "user_id": version.created_by,
            "current_stage": "Archived" if version.status == "archived" else "None",
            "description": version.description,
            "source": _artifact_uri(experiment, version.run_id or "", version.artifact_path),
            "run_id": version.run_id or "",
            "status": "READY",
            "tags": _key_values(version.tags),
            "aliases": version.aliases,
        }
        model_id = version.artifact_path.removeprefix(f"{MODELS_FOLDER}/")
        if MODEL_ID.fullmatch(model_id):
            answer["model_id"] = model_id
        return answer

    # names ------------------------------------------------------------------------------

    def _locate(self, conn: Connection, name: str, principal: Principal) -> Any:
        """The registered model named ``name`` in a project the caller may read, or None;
        a name two such projects hold is ambiguous for MLflow's one namespace."""
        rm = rt.registered_models
        stmt = (
            sa.select(rm.c.id, rm.c.name, rm.c.project_id, projects.c.name.label("project"))
            .join(projects, projects.c.id == rm.c.project_id)
            .where(rm.c.name == name)
        )
        rows = conn.execute(_readable(stmt, principal).order_by(projects.c.name)).all()
        if len(rows) > 1:
            held = ", ".join(repr(r.project) for r in rows)
            raise InvalidInput(
                f"model {name!r} is in projects {held}: MLflow names models in one namespace, "
                "so reach these through Plinth's own API (models:/PROJECT/NAME)"
            )
        return rows[0] if rows else None

    def _project_of_model(self, conn: Connection, name: str, principal: Principal) -> str | None:
        found = self._locate(conn, name, principal)
        return None if found is None else str(found.project)

    def project_of(self, name: str, *, principal: Principal) -> str:
        """The project holding the model MLflow names ``name``, for the caller."""
        return self._require_project(name, principal)

    def _require_project(self, name: str, principal: Principal) -> str:
        """The project of the model named ``name``; else NotFound, recorded as a refusal
        (an outsider's guess at a name is refused as a read of it)."""
        with self.db.read() as conn:
            project = self._project_of_model(conn, name, principal)
        if project is None:
            raise self._missing(name, principal)
        return project

    def _missing(self, name: str, principal: Principal) -> NotFound:
        hidden = NotFound(f"no registered model {name!r}")
        self.audit.refusal(principal, "read", hidden, object=name)
        return hidden

    def _visible_names(
        self, conn: Connection, principal: Principal, *, pending: bool = True
    ) -> set[str]:
        rm, pm = rt.registered_models, mt.pending_models
        names = set(conn.execute(_readable(sa.select(rm.c.name), principal)).scalars())
        if pending:
            mine = sa.select(pm.c.name).where(pm.c.created_by == principal.name)
            names |= set(conn.execute(mine).scalars())
        return names

    def _registered(self, conn: Connection, name: str, principal: Principal) -> dict[str, Any]:
        found = self._locate(conn, name, principal)
        if found is None:
            return self._pending(conn, name, principal)
        project = str(found.project)
        model = self.registry.get_model(project, name, principal=principal)
        answer: dict[str, Any] = {
            "name": model.name,
            "creation_timestamp": _ms(model.created_at),
            "last_updated_timestamp": _ms(model.updated_at),
            "description": model.description,
            "aliases": [{"alias": a, "version": str(v)} for a, v in model.aliases.items()],
            "tags": _key_values(self._tags(conn, found.id)),
        }
        if model.latest_version is not None:
            latest = self.registry.get_version(
                project, name, model.latest_version, principal=principal
            )
            answer["latest_versions"] = [self._version(latest)]
        return answer

    def _pending_row(self, conn: Connection, name: str, principal: Principal) -> Any:
        pm = mt.pending_models
        return conn.execute(
            sa.select(pm).where(pm.c.created_by == principal.name, pm.c.name == name)
        ).first()

    def _pending(self, conn: Connection, name: str, principal: Principal) -> dict[str, Any]:
        row = self._pending_row(conn, name, principal)
        if row is None:
            raise NotFound(f"no registered model {name!r}")
        return {
            "name": row.name,
            "creation_timestamp": _ms(row.created_at),
            "last_updated_timestamp": _ms(row.created_at),
            "description": row.description,
            "user_id": row.created_by,
            "aliases": [],
            "tags": _key_values(json.loads(row.tags)),
        }


def _readable(stmt: Any, principal: Principal) -> Any:
    """``stmt`` over registered models, kept to the projects ``principal`` may read."""
    visible = visible_projects(principal)
    if visible is None:
        return stmt
    return stmt.where(rt.registered_models.c.project_id.in_(visible))


def _not_scoped(principal: Principal, name: str) -> None:
    """A model made by name is in no project yet: a token scoped to one cannot make it."""
    if principal.scope_project_id is not None:
        raise PermissionDenied(
            f"{scope_limit(principal)}: it cannot make model {name!r} outside that project; "
            "register a version from one of its runs instead"
        )


def logged_path(model_id: str) -> str:
    """Where a logged model's files are among its run's artifacts."""
    return f"{MODELS_FOLDER}/{model_id}"


def _artifact_uri(experiment_id: str, run_id: str, path: str) -> str:
    return f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/{path}"


def _key_values(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in pairs.items()]


def _version_number(text: str | int) -> int:
    number = str(text)
    if not number.isdecimal() or not 1 <= int(number) < 2**31:
        raise InvalidInput(f"a version is a number from 1; got {number[:40]!r}")
    return int(number)


def _clauses(text: str, fields: set[str]) -> list[tuple[str, str, str]]:
    """``a = 'x' AND b != 'y'`` as (field, op, value) triples over ``fields``."""
    if not text.strip():
        return []
    found = []
    # split on AND outside quotes: a quoted value may hold " AND " (``name = 'a AND b'``)
    for clause in _AND.split(text.strip()):
        match = _CLAUSE.match(clause)
        field = match[1].lower() if match else ""
        if match is None or field not in fields:
            raise InvalidInput(
                f"a filter here compares {', '.join(sorted(fields))} with = or != to a "
                f"quoted value, joined by AND; got {clause[:200]!r}"
            )
        found.append((field, match[2], match[3].replace("''", "'")))
    return found


def _holds(version: dict[str, Any], field: str, op: str, value: str) -> bool:
    have = version["source"] if field == "source_path" else str(version[field])
    return (have == value) == (op == "=")
