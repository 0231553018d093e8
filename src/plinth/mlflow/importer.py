"""``plinth import mlflow``: an MLflow tracking store, moved into Plinth whole.

The store is read where MLflow keeps it: its database (SQLite or Postgres, read only,
with SQL MLflow's schema has had since 1.x) and its artifact folder. Everything is
written through Plinth's SDK, so it works on an embedded home and against a server
alike, under the importing user's rights and in the audit trail.

Models: an MLflow 3 *logged model*'s files become its run's artifacts under
``models/MODEL_ID/`` (where the MLflow API keeps them too); each registered version is
registered again in Plinth from the same files, in MLflow's order, in its run's
project, with its description, tags, archived stage and the model's aliases. Plinth
numbers versions without gaps: a version whose number differs (MLflow had deleted one
before it) is reported, and aliases follow the version, not the number.

Idempotent by construction: an MLflow run keeps its id in Plinth; a run already
imported and ended is left alone; each run's metrics, params and tags go in one batch
whose id derives from the run's, so a resent batch is applied once; an artifact is
named once and the same content again is no change. A second import of the same store
adds nothing, and an import killed half-way completes when run again.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import sqlalchemy as sa

from plinth.core.names import is_project_name
from plinth.errors import InvalidInput, NotFound, PlinthError
from plinth.mlflow.models import logged_path
from plinth.tracking import schemas as ts
from plinth.tracking.client import to_series

_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_INTERNAL_TAGS = {"mlflow.runName"}  # the run's name, which Plinth keeps as the name


@dataclass
class Report:
    """What an import did, and what it left out and why."""

    experiments: int = 0
    runs: int = 0
    already: int = 0  # runs imported before, left as they were
    points: int = 0
    params: int = 0
    tags: int = 0
    artifacts: int = 0
    artifact_bytes: int = 0
    models: int = 0  # logged models whose files arrived with their run
    versions: int = 0  # model versions registered
    versions_already: int = 0
    aliases: int = 0
    renumbered: dict[str, int] = field(default_factory=dict)  # "NAME/3" → Plinth's number
    projects: dict[str, str] = field(default_factory=dict)  # experiment name → project
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    artifact_location: str | None
    deleted: bool
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Version:
    name: str
    version: int
    source: str
    run_id: str | None
    stage: str
    description: str
    status: str


@dataclass(frozen=True)
class Run:
    id: str
    experiment_id: str
    name: str | None
    status: str
    start_time: float | None  # seconds
    end_time: float | None
    artifact_uri: str | None
    deleted: bool


class Store(Protocol):
    """What the importer asks of an MLflow store: ``SqlStore`` (its database) or
    ``rest_store.RestStore`` (a running server)."""

    def experiments(self) -> list[Experiment]: ...
    def runs(self, experiment_id: str) -> list[Run]: ...
    def metrics(self, run_id: str) -> list[tuple[str, float, int, float]]: ...
    def params(self, run_id: str) -> dict[str, str]: ...
    def tags(self, run_id: str) -> dict[str, str]: ...
    def logged_models(self, run_id: str) -> list[tuple[str, str]]: ...
    def logged_model_runs(self) -> dict[str, str]: ...
    def versions(self) -> list[Version]: ...
    def version_tags(self, name: str, version: int) -> dict[str, str]: ...
    def aliases(self) -> list[tuple[str, str, int]]: ...
    def model_tags(self) -> dict[str, dict[str, str]]: ...
    def close(self) -> None: ...
    def folder(
        self, uri: str, root: Path | None, layout: str
    ) -> AbstractContextManager[Path | None]: ...


class SqlStore:
    """MLflow's tracking database, read only."""

    def __init__(self, url: str) -> None:
        if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "mysql")):
            raise InvalidInput(
                f"--from takes MLflow's database URL (sqlite:///mlflow.db, "
                f"postgresql://…); got {url[:200]!r}"
            )
        if url.startswith("sqlite:"):
            path = Path(url.split("sqlite:///", 1)[-1])
            if not path.is_file():
                raise InvalidInput(f"no MLflow database at {path}")
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        elif url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        self.engine = sa.create_engine(url)
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT experiment_id FROM experiments LIMIT 1"))
        except sa.exc.SQLAlchemyError as exc:
            raise InvalidInput(f"not an MLflow tracking database: {str(exc)[:300]}") from None

    def close(self) -> None:
        self.engine.dispose()

    def _rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def experiments(self) -> list[Experiment]:
        rows = self._rows(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments "
            "ORDER BY experiment_id"
        )
        tags: dict[str, dict[str, str]] = {}
        for experiment_id, key, value in self._rows(
            "SELECT experiment_id, key, value FROM experiment_tags"
        ):
            tags.setdefault(str(experiment_id), {})[key] = value
        return [
            Experiment(str(r[0]), r[1], r[2], r[3] == "deleted", tags.get(str(r[0]), {}))
            for r in rows
        ]

    def runs(self, experiment_id: str) -> list[Run]:
        rows = self._rows(
            "SELECT run_uuid, name, status, start_time, end_time, artifact_uri, "
            "lifecycle_stage FROM runs WHERE experiment_id = :e ORDER BY start_time, run_uuid",
            e=int(experiment_id),
        )
        return [
            Run(
                r[0],
                experiment_id,
                r[1],
                r[2] or "",
                _seconds(r[3]),
                _seconds(r[4]),
                r[5],
                r[6] == "deleted",
            )
            for r in rows
        ]

    def metrics(self, run_id: str) -> list[tuple[str, float, int, float]]:
        """(key, value, step, timestamp in seconds), every point of every metric."""
        rows = self._rows(
            "SELECT key, value, step, timestamp, is_nan FROM metrics WHERE run_uuid = :r "
            "ORDER BY key, step, timestamp",
            r=run_id,
        )
        return [
            (k, math.nan if nan else float(v), int(st or 0), ts_ / 1000)
            for k, v, st, ts_, nan in rows
        ]

    def params(self, run_id: str) -> dict[str, str]:
        return dict(self._rows("SELECT key, value FROM params WHERE run_uuid = :r", r=run_id))

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self._rows("SELECT key, value FROM tags WHERE run_uuid = :r", r=run_id))

    @contextmanager
    def folder(self, uri: str, root: Path | None, layout: str) -> Iterator[Path | None]:
        """The local folder of the artifacts at ``uri`` (see ``local_dir``)."""
        yield local_dir(uri, root, layout)

    def _has(self, table: str) -> bool:
        return sa.inspect(self.engine).has_table(table)

    def logged_models(self, run_id: str) -> list[tuple[str, str]]:
        """(model id, artifact location) of the MLflow 3 models ``run_id`` logged."""
        if not self._has("logged_models"):
            return []
        return [
            (r[0], r[1])
            for r in self._rows(
                "SELECT model_id, artifact_location FROM logged_models "
                "WHERE source_run_id = :r AND lifecycle_stage != 'deleted' ORDER BY model_id",
                r=run_id,
            )
        ]

    def logged_model_runs(self) -> dict[str, str]:
        """Each logged model's run."""
        if not self._has("logged_models"):
            return {}
        rows = self._rows("SELECT model_id, source_run_id FROM logged_models")
        return {r[0]: r[1] for r in rows if r[1]}

    def versions(self) -> list[Version]:
        if not self._has("model_versions"):
            return []
        rows = self._rows(
            "SELECT name, version, source, run_id, current_stage, description, status "
            "FROM model_versions ORDER BY name, version"
        )
        return [
            Version(r[0], int(r[1]), r[2] or "", r[3] or None, r[4] or "", r[5] or "", r[6] or "")
            for r in rows
        ]

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        sql = "SELECT key, value FROM model_version_tags WHERE name = :n AND version = :v"
        return dict(self._rows(sql, n=name, v=version))

    def aliases(self) -> list[tuple[str, str, int]]:
        if not self._has("registered_model_aliases"):
            return []
        rows = self._rows("SELECT name, alias, version FROM registered_model_aliases")
        return [(r[0], r[1], int(r[2])) for r in rows]

    def model_tags(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        if self._has("registered_model_tags"):
            for name, key, value in self._rows(
                "SELECT name, key, value FROM registered_model_tags"
            ):
                found.setdefault(name, {})[key] = value
        return found


def _seconds(ms: Any) -> float | None:
    return None if ms is None else float(ms) / 1000


def project_name(name: str, experiment_id: str, taken: set[str]) -> str:
    """A Plinth project name for an MLflow experiment: the same where it is one, else
    its letters and digits with ``-`` for the rest (``/Users/me/churn`` → ``Users-me-churn``),
    made unique with the experiment's id when two experiments would share it."""
    if is_project_name(name):
        return name
    cleaned = _NOT_NAME.sub("-", name).strip("-._")[:180] or f"mlflow-{experiment_id}"
    return cleaned if cleaned not in taken else f"{cleaned}-{experiment_id}"


def local_dir(uri: str, root: Path | None, layout: str) -> Path | None:
    """The folder ``uri`` names when it is local, or its place under ``root``
    (``--artifacts``): a ``mlflow-artifacts:/`` URI's path there, or MLflow's ``layout``
    (``EXPERIMENT/RUN/artifacts``, ``EXPERIMENT/models/MODEL_ID/artifacts``)."""
    candidates: list[Path] = []
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") and uri:
        candidates.append(Path(unquote(parsed.path)))
    if root is not None:
        if parsed.scheme == "mlflow-artifacts":
            candidates.append(root / unquote(parsed.path).lstrip("/"))
        candidates.append(root / layout)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def batch_id(run_id: str) -> str:
    """The id of a run's one import batch: the same on every import of that run."""
    return "mlflow-import-" + hashlib.sha256(run_id.encode()).hexdigest()[:32]


class Importer:
    """Import ``store`` into Plinth through ``client`` (a ``plinth.Client``)."""

    def __init__(
        self,
        client: Any,
        store: Store,
        artifacts: Path | None,
        on_run: Callable[[Run], None] = lambda run: None,
    ) -> None:
        self.client = client
        self.store = store
        self.artifacts = artifacts
        self.on_run = on_run
        self.report = Report()

    def plan(self) -> list[tuple[Experiment, list[Run]]]:
        """The experiments and runs to import; the deleted ones are reported skipped."""
        planned = []
        for experiment in self.store.experiments():
            if experiment.deleted:
                self.report.skipped.append((f"experiment {experiment.name!r}", "deleted in MLflow"))
                continue
            runs = []
            for run in self.store.runs(experiment.id):
                if run.deleted:
                    self.report.skipped.append((f"run {run.id}", "deleted in MLflow"))
                else:
                    runs.append(run)
            planned.append((experiment, runs))
        return planned

    def run(self, planned: list[tuple[Experiment, list[Run]]]) -> Report:
        taken: set[str] = set()
        existing = {p.name for p in self.client.list_projects()}
        for experiment, runs in planned:
            project = project_name(experiment.name, experiment.id, taken)
            taken.add(project)
            self.report.projects[experiment.name] = project
            if project not in existing:  # an experiment with no runs is imported too
                self.client.create_project(project)
            self._tag("experiment", project, experiment.tags)
            self.report.experiments += 1
            for run in runs:
                try:
                    self._run(project, experiment, run)
                except PlinthError as exc:
                    self.report.skipped.append((f"run {run.id}", exc.message))
                self.on_run(run)
        self._versions()
        for name, tags in self.store.model_tags().items():
            self._tag("model", name, tags)
        return self.report

    def _tag(self, kind: str, name: str, tags: dict[str, str]) -> None:
        """Set the MLflow tags of an experiment (a project) or a registered model that
        it lacks, through Plinth's MLflow API (they are MLflow's own nouns)."""
        if not tags:
            return
        api = "/mlflow/api/2.0/mlflow"
        try:
            if kind == "experiment":
                found = self._mlflow("GET", f"{api}/experiments/get-by-name", experiment_name=name)
                held, ref = (
                    found["experiment"],
                    {"experiment_id": found["experiment"]["experiment_id"]},
                )
                where = f"{api}/experiments/set-experiment-tag"
            else:
                found = self._mlflow("GET", f"{api}/registered-models/get", name=name)
                held, ref = found["registered_model"], {"name": name}
                where = f"{api}/registered-models/set-tag"
        except PlinthError as exc:
            self.report.skipped.append((f"tags of {kind} {name!r}", exc.message))
            return
        have = {t["key"]: t.get("value", "") for t in held.get("tags", [])}
        for key, value in tags.items():
            if have.get(key) == value:
                continue
            try:
                self.client._transport.request(
                    "POST", where, json={**ref, "key": ts.check_key(key), "value": value}
                )
                self.report.tags += 1
            except PlinthError as exc:
                self.report.skipped.append((f"tag {key!r} of {kind} {name!r}", exc.message))

    def _mlflow(self, method: str, path: str, **params: str) -> Any:
        return self.client._transport.request(method, path, params=params)

    def _run(self, project: str, experiment: Experiment, run: Run) -> None:
        if not re.fullmatch(r"[0-9a-f]{32}", run.id):
            self.report.skipped.append((f"run {run.id!r}", "its id is not 32 hex digits"))
            return
        try:
            existing = self.client.get_run(run.id)
        except NotFound:
            existing = None
        if existing is not None and existing.status != "running":
            self.report.already += 1
            return
        tags = self.store.tags(run.id)
        name = run.name or tags.get("mlflow.runName")
        kept = {}
        for key, value in tags.items():
            if key in _INTERNAL_TAGS:
                continue
            try:
                kept[ts.check_key(key)] = value
            except InvalidInput:
                self.report.skipped.append((f"tag {key!r} of run {run.id}", "not a valid key"))
        if existing is None:
            self.client.create_run(project, name, id=run.id, start_time=run.start_time)
        params = self.store.params(run.id)
        points = self.store.metrics(run.id)
        self.client.send_batch(run.id, batch_id(run.id), to_series(points), params, kept)
        self.report.points += len(points)
        self.report.params += len(params)
        self.report.tags += len(kept)
        layout = f"{experiment.id}/{run.id}/artifacts"
        with self.store.folder(run.artifact_uri or "", self.artifacts, layout) as folder:
            if folder is not None:
                self._artifacts(run.id, folder, None)
            elif run.artifact_uri and _has_artifacts_elsewhere(run.artifact_uri):
                self.report.skipped.append(
                    (f"artifacts of run {run.id}", f"not found locally ({run.artifact_uri})")
                )
        for model_id, location in self.store.logged_models(run.id):
            layout = f"{experiment.id}/models/{model_id}/artifacts"
            with self.store.folder(location, self.artifacts, layout) as where:
                if where is None:
                    self.report.skipped.append(
                        (f"logged model {model_id}", f"its files were not found ({location})")
                    )
                    continue
                self._artifacts(run.id, where, logged_path(model_id))
            self.report.models += 1
        status = _STATUS.get(run.status)
        if status is None:
            status = "killed"
            self.report.skipped.append(
                (f"state of run {run.id}", f"{run.status or 'no status'} in MLflow: ended killed")
            )
        self.client.end_run(run.id, status, end_time=run.end_time or run.start_time)
        self.report.runs += 1

    def _artifacts(self, run_id: str, folder: Path, under: str | None) -> None:
        for artifact in self.client.log_artifacts(run_id, folder, under, progress=False):
            self.report.artifacts += 1
            self.report.artifact_bytes += artifact.size

    def _versions(self) -> None:
        """Register MLflow's model versions from the imported files, then its aliases."""
        owners = self.store.logged_model_runs()
        placed: dict[tuple[str, int], tuple[str, int]] = {}  # MLflow's → Plinth's
        for version in self.store.versions():
            what = f"version {version.version} of model {version.name!r}"
            found = _version_files(version, owners)
            if version.status not in ("READY", ""):
                self.report.skipped.append((what, f"{version.status} in MLflow"))
                continue
            if found is None:
                self.report.skipped.append(
                    (what, f"its source is no run's files ({version.source})")
                )
                continue
            try:
                placed[(version.name, version.version)] = self._version(version, *found)
            except PlinthError as exc:
                self.report.skipped.append((what, exc.message))
        for name, alias, number in self.store.aliases():
            target = placed.get((name, number))
            if target is None:
                self.report.skipped.append(
                    (f"alias {alias!r} of {name!r}", f"version {number} was not imported")
                )
                continue
            try:
                if self.client.get_model(target[0], name).aliases.get(alias) == target[1]:
                    continue  # imported before
                self.client.set_model_alias(target[0], name, alias, target[1])
                self.report.aliases += 1
            except PlinthError as exc:
                self.report.skipped.append((f"alias {alias!r} of {name!r}", exc.message))

    def _version(self, version: Version, run_id: str, path: str) -> tuple[str, int]:
        project = self.client.get_run(run_id).project
        try:
            existing = self.client.list_model_versions(project, version.name)
        except NotFound:
            existing = []
        same = [v for v in existing if (v.run_id, v.artifact_path) == (run_id, path)]
        if same:
            self.report.versions_already += 1
            return project, same[0].version
        tags = {}
        for key, value in self.store.version_tags(version.name, version.version).items():
            try:
                tags[ts.check_key(key)] = value
            except InvalidInput:
                self.report.skipped.append((f"tag {key!r} of {version.name!r}", "not a valid key"))
        made = self.client.register_model(
            run_id, path, version.name, project=project, description=version.description, tags=tags
        )
        if version.stage == "Archived":
            self.client.archive_model_version(project, version.name, made.version)
        if made.version != version.version:
            self.report.renumbered[f"{version.name}/{version.version}"] = made.version
        self.report.versions += 1
        return project, made.version


def _version_files(version: Version, owners: dict[str, str]) -> tuple[str, str] | None:
    """The run and the folder of its artifacts a version's source names: a logged model
    (``models:/MODEL_ID``, imported under ``models/MODEL_ID``), or a folder of its run's
    artifacts (``runs:/RUN/PATH``, ``…/RUN/artifacts/PATH``)."""
    source = version.source
    if source.startswith("models:/") and source.removeprefix("models:/") in owners:
        model_id = source.removeprefix("models:/")
        return owners[model_id], logged_path(model_id)
    found = re.match(r"^runs:/([0-9a-f]{32})/(.+)$", source)
    if found:
        return found[1], found[2].strip("/")
    run_id = version.run_id
    if run_id and f"/{run_id}/artifacts/" in source:
        return run_id, source.split(f"/{run_id}/artifacts/", 1)[1].strip("/")
    return None


def _has_artifacts_elsewhere(uri: str) -> bool:
    """Whether ``uri`` is an artifact location this import cannot reach (S3, a
    server), as opposed to a local folder that is simply empty or absent."""
    return urlparse(uri).scheme not in ("", "file")
