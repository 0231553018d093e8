"""``plinth import mlflow``: an MLflow tracking store, moved into Plinth whole.

The store is read where MLflow keeps it: its database (SQLite or Postgres, read only,
with SQL MLflow's schema has had since 1.x) and its artifact folder. Everything is
written through Plinth's SDK, so it works on an embedded home and against a server
alike, under the importing user's rights and in the audit trail.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import sqlalchemy as sa

from plinth.core.names import is_project_name
from plinth.errors import InvalidInput, NotFound, PlinthError
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
    projects: dict[str, str] = field(default_factory=dict)  # experiment name → project
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    artifact_location: str | None
    deleted: bool


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
        return [Experiment(str(r[0]), r[1], r[2], r[3] == "deleted") for r in rows]

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

    def registered_models(self) -> int:
        try:
            return int(self._rows("SELECT count(*) FROM registered_models")[0][0])
        except sa.exc.SQLAlchemyError:
            return 0


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


def artifact_dir(run: Run, experiment: Experiment, root: Path | None) -> Path | None:
    """Where the run's artifacts lie: its ``artifact_uri`` when that is a local folder,
    else under ``root`` (``--artifacts``) as MLflow lays them out
    (``EXPERIMENT/RUN/artifacts``, also the form behind ``mlflow-artifacts:/``)."""
    candidates: list[Path] = []
    uri = run.artifact_uri or ""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") and uri:
        candidates.append(Path(unquote(parsed.path)))
    if root is not None:
        if parsed.scheme == "mlflow-artifacts":
            candidates.append(root / unquote(parsed.path).lstrip("/"))
        candidates.append(root / experiment.id / run.id / "artifacts")
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
        store: SqlStore,
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
        models = self.store.registered_models()
        if models:
            self.report.skipped.append(
                (f"{models} registered model(s)", "the model registry is not imported yet")
            )
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
            self.report.experiments += 1
            for run in runs:
                try:
                    self._run(project, experiment, run)
                except PlinthError as exc:
                    self.report.skipped.append((f"run {run.id}", exc.message))
                self.on_run(run)
        return self.report

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
        folder = artifact_dir(run, experiment, self.artifacts)
        if folder is not None:
            for artifact in self.client.log_artifacts(run.id, folder, progress=False):
                self.report.artifacts += 1
                self.report.artifact_bytes += artifact.size
        elif run.artifact_uri and _has_artifacts_elsewhere(run.artifact_uri):
            self.report.skipped.append(
                (f"artifacts of run {run.id}", f"not found locally ({run.artifact_uri})")
            )
        status = _STATUS.get(run.status)
        if status is None:
            status = "killed"
            self.report.skipped.append(
                (f"state of run {run.id}", f"{run.status or 'no status'} in MLflow: ended killed")
            )
        self.client.end_run(run.id, status, end_time=run.end_time or run.start_time)
        self.report.runs += 1


def _has_artifacts_elsewhere(uri: str) -> bool:
    """Whether ``uri`` is an artifact location this import cannot reach (S3, a
    server), as opposed to a local folder that is simply empty or absent."""
    return urlparse(uri).scheme not in ("", "file")
