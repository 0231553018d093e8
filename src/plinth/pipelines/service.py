"""Pipeline runs, held by the server: their steps run as compute jobs, in parallel as
far as the graph allows, skipped when an earlier step of the project already made the
same outputs from the same inputs.

A run is rows, not a process: the ``advance`` loop of the process that holds the
dispatch lease (a server, or an embedded app) reads the runs in progress and moves
each step on. A step
whose upstream steps are done gets its **cache key**, sha256 over its code digest, its
value arguments, the digests of the upstream outputs it reads and of the dataset
versions it reads; a succeeded step of the project with that key lends its outputs
(the step is ``cached``), otherwise its job is queued, in the same transaction as the
step's move to ``running``. Every move is a compare-and-set on the step's state, so two
server processes advancing the same run never both start a step, and a server killed
anywhere leaves rows the next round picks up.

A step's job runs ``python -m plinth.pipelines.worker`` in the run's snapshot, which
reads the step's resolved inputs from this service, calls the function and logs its
return value as artifacts ``outputs/<i>/…`` of the job's tracked run. When the job
succeeds those artifacts are the step's outputs (their manifest digests feed the keys
downstream); when it fails the steps after it are skipped and the run fails, and
``resume`` takes it up again from the failed steps.

Triggers (``triggers.py``) start runs through ``insert_run``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.compute import schemas as cs
from plinth.compute.service import JobService
from plinth.core import lineage
from plinth.core.access import Need, Principal
from plinth.core.blobs import manifest_digest
from plinth.core.db import database_fault
from plinth.core.platform import Platform
from plinth.data.service import DatasetService
from plinth.errors import Conflict, InvalidInput, NotFound, PermissionDenied, PlinthError
from plinth.governance.identity import IdentityService
from plinth.pipelines import schemas as s
from plinth.pipelines import tables as t
from plinth.tracking.artifacts import RunArtifactsService

log = logging.getLogger(__name__)

SYSTEM = Principal(name="plinth-pipelines", is_admin=True)
RUN, RESUME, CANCEL = "pipelines.run", "pipelines.resume", "pipelines.cancel"
POLL_SECONDS = 0.5
OUTPUTS = "outputs"
WORKER = "plinth.pipelines.worker"
_RETRY_FAILED = ("failed", "skipped", "cancelled")


def _now() -> float:
    return time.time()


class PipelineService:
    def __init__(
        self,
        platform: Platform,
        *,
        jobs: JobService,
        datasets: DatasetService,
        artifacts: RunArtifactsService,
        identity: IdentityService,
    ) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.projects = platform.projects
        self.blobs = platform.artifacts
        self.jobs, self.datasets, self.artifacts, self.identity = (
            jobs,
            datasets,
            artifacts,
            identity,
        )
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage: str | None = None  # the database's fault while it lasts

    # the app's life ---------------------------------------------------------------------

    def start(self) -> None:
        self._halt.clear()
        self._thread = threading.Thread(target=self._loop, name="plinth-pipelines", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._halt.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._halt.is_set():
                return
            if not self.jobs.dispatcher.leading:
                continue  # the process holding the dispatch lease moves pipelines on
            try:
                self.advance()
            except Exception as exc:  # the database away: the next round tries again
                self._failed(exc)
            else:
                if self._outage is not None:
                    log.warning("the database is back: pipelines advance again")
                self._outage = None

    def _failed(self, exc: Exception) -> None:
        """A bug with its traceback; the database down or full in one line, once per
        outage, so a long outage does not bury the log."""
        fault = database_fault(exc)
        if fault is None:
            log.exception("advancing pipelines failed")
        elif self._outage != fault:
            self._outage = fault
            log.warning("advancing pipelines failed: the database is %s; waiting for it", fault)

    # runs -------------------------------------------------------------------------------

    def create_run(
        self, project: str, req: s.PipelineRunCreate, *, principal: Principal
    ) -> s.PipelineRun:
        """A new run of ``req.spec`` in ``req.snapshot`` (uploaded to the project
        first); its dataset arguments are pinned to versions now. Audited."""
        run_id = uuid.uuid4().hex
        with self.audit.recorded(principal, RUN, project=project, object=run_id) as (conn, ch):
            pid = self.projects.require(conn, project, principal, Need.WRITE, record=False)
            self.insert_run(
                conn, run_id, pid, project, req.spec, req.snapshot, req.no_cache, principal
            )
            ch.details = {"pipeline": req.spec.name, "steps": len(req.spec.steps)}
        self.wake()
        return self.get_run(project, run_id, principal=principal)

    def insert_run(
        self,
        conn: Connection,
        run_id: str,
        project_id: str,
        project: str,
        spec: s.PipelineSpec,
        snapshot: cs.Snapshot,
        no_cache: bool,
        principal: Principal,
        trigger: str | None = None,
        newest: dict[str, int] | None = None,
    ) -> None:
        """The run's rows, its dataset arguments pinned to versions (``newest``: the
        version a bare NAME means, where the caller has already chosen it)."""
        self.blobs.claim(conn, project_id, snapshot.digest, snapshot.size)
        r = t.pipeline_runs
        seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(r.c.seq), 0))).scalar()
        conn.execute(
            r.insert(),
            {
                "id": run_id,
                "project_id": project_id,
                "seq": int(seq or 0) + 1,
                "name": spec.name,
                "function": spec.function,
                "spec": spec.model_dump_json(),
                "snapshot_digest": snapshot.digest,
                "snapshot_size": snapshot.size,
                "no_cache": no_cache,
                "status": "running",
                "user": principal.name,
                "user_id": principal.user_id,
                "trigger": trigger,
                "created_at": _now(),
            },
        )
        rows = []
        for position, step in enumerate(spec.steps):
            pinned = {}
            for arg, source in step.inputs.items():
                if isinstance(source, s.DatasetInput):
                    ref = source.ref
                    if newest and ref in newest:  # a trigger's version, not a later one
                        ref = f"{ref}@{newest[ref]}"
                    try:
                        pinned[arg] = self.datasets.pin(conn, project, ref, principal)[0]
                    except NotFound as exc:
                        raise NotFound(f"step {step.name} argument {arg}: {exc.message}") from None
            rows.append(
                {
                    "run_id": run_id,
                    "name": step.name,
                    "position": position,
                    "project_id": project_id,
                    "status": "waiting",
                    "datasets": json.dumps(pinned),
                }
            )
        conn.execute(t.pipeline_steps.insert(), rows)

    def get_run(self, project: str, run_id: str, *, principal: Principal) -> s.PipelineRun:
        with self.db.read() as conn:
            row = self._require(conn, project, run_id, principal, Need.READ)
            return self._run(conn, project, row)

    def list_runs(
        self, project: str, query: s.PipelineRunsQuery, *, principal: Principal
    ) -> s.PipelineRunPage:
        r, st = t.pipeline_runs, t.pipeline_steps
        with self.db.read() as conn:
            pid = self.projects.require(conn, project, principal, Need.READ)
            stmt = sa.select(r).where(r.c.project_id == pid)
            if query.name is not None:
                stmt = stmt.where(r.c.name == query.name)
            if query.status is not None:
                stmt = stmt.where(r.c.status == query.status)
            if query.cursor is not None:
                seq, run_id = _cursor(query.cursor)
                stmt = stmt.where(sa.or_(r.c.seq < seq, sa.and_(r.c.seq == seq, r.c.id < run_id)))
            newest_first = (r.c.seq.desc(), r.c.id.desc())
            rows = conn.execute(stmt.order_by(*newest_first).limit(query.limit + 1)).all()
            more = len(rows) > query.limit
            rows = rows[: query.limit]
            counts: dict[str, dict[str, int]] = {row.id: {} for row in rows}
            if rows:
                for run_id, status, _cached_from, n in conn.execute(
                    sa.select(st.c.run_id, st.c.status, st.c.cached_from, sa.func.count())
                    .where(st.c.run_id.in_(list(counts)))
                    .group_by(st.c.run_id, st.c.status, st.c.cached_from)
                ):
                    into = counts[run_id]
                    into["steps"] = into.get("steps", 0) + n
                    into[status] = into.get(status, 0) + n
        page = [
            s.PipelineRunSummary(
                id=row.id,
                project=project,
                name=row.name,
                status=row.status,
                user=row.user,
                trigger=row.trigger,
                created_at=row.created_at,
                ended_at=row.ended_at,
                steps=counts[row.id].get("steps", 0),
                cached=counts[row.id].get("cached", 0),
                failed=counts[row.id].get("failed", 0),
            )
            for row in rows
        ]
        cursor = f"{rows[-1].seq}.{rows[-1].id}" if more and rows else None
        return s.PipelineRunPage(runs=page, next_cursor=cursor)

    def cancel_run(self, project: str, run_id: str, *, principal: Principal) -> s.PipelineRun:
        """Steps not started are cancelled at once, running ones' jobs are stopped; the
        run ends cancelled once they have."""
        st = t.pipeline_steps
        with self.audit.recorded(principal, CANCEL, project=project, object=run_id) as (conn, ch):
            row = self._require(conn, project, run_id, principal, Need.WRITE, record=False)
            if row.status != "running":
                ch.record = False
                return self._run(conn, project, row)
            conn.execute(
                st.update()
                .where(st.c.run_id == row.id, st.c.status == "waiting")
                .values(
                    status="cancelled", reason=f"cancelled by {principal.name}", ended_at=_now()
                )
            )
            jobs = conn.execute(
                sa.select(st.c.job_id).where(st.c.run_id == row.id, st.c.status == "running")
            ).scalars()
            running = [j for j in jobs if j]
            if not running:  # nothing to wait for: the run ends now
                conn.execute(
                    t.pipeline_runs.update()
                    .where(t.pipeline_runs.c.id == row.id, t.pipeline_runs.c.status == "running")
                    .values(status="cancelled", reason="cancelled", ended_at=_now())
                )
        for job_id in running:
            try:
                self.jobs.cancel_job(project, job_id, principal=SYSTEM)
            except PlinthError as exc:  # ended meanwhile: the next round settles it
                log.info("cancelling job %s of pipeline run %s: %s", job_id, run_id, exc)
        self.wake()
        return self.get_run(project, row.id, principal=principal)

    def resume_run(self, project: str, run_id: str, *, principal: Principal) -> s.PipelineRun:
        """Run a failed or cancelled run's unfinished steps again, in its snapshot and
        with its dataset versions; its succeeded steps stand. Conflict while it runs."""
        r, st = t.pipeline_runs, t.pipeline_steps
        with self.audit.recorded(principal, RESUME, project=project, object=run_id) as (conn, ch):
            row = self._require(conn, project, run_id, principal, Need.WRITE, record=False)
            if row.status in ("running", "succeeded"):
                raise Conflict(f"pipeline run {row.id[:8]} is {row.status}: nothing to resume")
            again = conn.execute(
                st.update()
                .where(st.c.run_id == row.id, st.c.status.in_(_RETRY_FAILED))
                .values(
                    status="waiting",
                    cache_key=None,
                    inputs=None,
                    job_id=None,
                    outputs_run_id=None,
                    outputs=None,
                    outputs_digest=None,
                    cached_from=None,
                    reason=None,
                    started_at=None,
                    ended_at=None,
                )
            ).rowcount
            conn.execute(
                r.update()
                .where(r.c.id == row.id)
                .values(status="running", reason=None, ended_at=None, user=principal.name)
            )
            if principal.user_id is not None:
                conn.execute(r.update().where(r.c.id == row.id).values(user_id=principal.user_id))
            ch.object = row.id
            ch.details = {"steps": again}
        self.wake()
        return self.get_run(project, row.id, principal=principal)

    # moving runs on ---------------------------------------------------------------------

    def advance(self) -> None:
        """One round: every run in progress moved on as far as it can go now."""
        r = t.pipeline_runs
        with self.db.read() as conn:
            ids = list(
                conn.execute(
                    sa.select(r.c.id).where(r.c.status == "running").order_by(r.c.seq)
                ).scalars()
            )
        for run_id in ids:
            try:
                self._advance(run_id)
            except PlinthError as exc:
                log.warning("pipeline run %s: %s", run_id, exc)

    def _advance(self, run_id: str) -> None:
        r, st = t.pipeline_runs, t.pipeline_steps
        with self.db.read() as conn:
            run = conn.execute(sa.select(r).where(r.c.id == run_id)).one()
            steps = conn.execute(
                sa.select(st).where(st.c.run_id == run_id).order_by(st.c.position)
            ).all()
            project = self.projects.names(conn, {run.project_id})[run.project_id]
        spec = s.PipelineSpec.model_validate_json(run.spec)
        by_name = {row.name: row for row in steps}
        for step_spec in spec.steps:
            row = by_name[step_spec.name]
            if row.status == "running":
                by_name[row.name] = self._watch(project, row) or row
            elif row.status == "waiting":
                upstream = [by_name[name] for name in spec.upstream(step_spec)]
                if any(u.status in _RETRY_FAILED for u in upstream):
                    self._end_step(row, "skipped", "an upstream step did not succeed")
                    by_name[row.name] = self._reread(row)
                elif all(u.status in s.DONE for u in upstream):
                    self._start(run, project, step_spec, row, by_name)
                    by_name[row.name] = self._reread(row)
        statuses = [row.status for row in by_name.values()]
        if any(status in ("waiting", "running") for status in statuses):
            return
        if "cancelled" in statuses:
            outcome, reason = "cancelled", "cancelled"
        elif "failed" in statuses or "skipped" in statuses:
            failed = [row.name for row in by_name.values() if row.status == "failed"]
            outcome, reason = "failed", f"step {', '.join(failed)} failed"
        else:
            outcome, reason = "succeeded", None
        with self.db.write() as conn:
            conn.execute(
                r.update()
                .where(r.c.id == run_id, r.c.status == "running")
                .values(status=outcome, reason=reason, ended_at=_now())
            )

    def _reread(self, row: Any) -> Any:
        st = t.pipeline_steps
        with self.db.read() as conn:
            return conn.execute(
                sa.select(st).where(st.c.run_id == row.run_id, st.c.name == row.name)
            ).one()

    def _watch(self, project: str, row: Any) -> Any:
        """A running step whose job has ended: succeeded with its outputs, or failed.
        Its start becomes its job's (it waited in the queue from queuing until then)."""
        job = self.jobs.get_job(project, row.job_id, principal=SYSTEM)
        if not job.ended:
            return None
        started = {} if job.started_at is None else {"started_at": job.started_at}
        if job.status != "succeeded":
            why = f"its job {job.status}" + (f": {job.reason}" if job.reason else "")
            raised = self._raised(job.run_id)
            if raised:
                why = f"{raised} ({why})"
            status = "cancelled" if job.status == "cancelled" else "failed"
            self._end_step(row, status, why, **started)
            return self._reread(row)
        assert job.run_id is not None
        listed = self.artifacts.list_artifacts(job.run_id, OUTPUTS, principal=SYSTEM)
        files = [(a.path, a.digest, a.size) for a in listed]
        if not files:
            self._end_step(row, "failed", "its job succeeded but left no outputs", **started)
            return self._reread(row)
        self._end_step(
            row,
            "succeeded",
            None,
            outputs_run_id=job.run_id,
            outputs=json.dumps(files),
            outputs_digest=manifest_digest(files),
            **started,
        )
        return self._reread(row)

    def _raised(self, run_id: str | None) -> str | None:
        """What the step's function raised, as its worker tagged the job's run."""
        if run_id is None:
            return None
        try:
            tags = self.artifacts.runs.get_run(run_id, principal=SYSTEM).tags
        except NotFound:
            return None
        return tags.get(s.ERROR_TAG)

    def _end_step(self, row: Any, status: str, reason: str | None, **values: Any) -> None:
        """Move a step from the state it was read in to an ended one (compare-and-set:
        a process that moved it first wins)."""
        st = t.pipeline_steps
        with self.db.write() as conn:
            conn.execute(
                st.update()
                .where(st.c.run_id == row.run_id, st.c.name == row.name, st.c.status == row.status)
                .values(
                    status=status,
                    reason=None if reason is None else reason[:2000],
                    ended_at=_now(),
                    **values,
                )
            )

    def _start(
        self,
        run: Any,
        project: str,
        spec: s.StepSpec,
        row: Any,
        done: dict[str, Any],
    ) -> None:
        """A waiting step whose inputs are all known: reuse what an earlier step with the
        same key made, or queue its job."""
        pinned = json.loads(row.datasets)
        inputs: dict[str, dict[str, Any]] = {}
        key_parts: dict[str, Any] = {}
        with self.db.read() as conn:
            for arg, source in sorted(spec.inputs.items()):
                if isinstance(source, s.ValueInput):
                    inputs[arg] = {"kind": "value", "value": source.value}
                    key_parts[arg] = {"value": source.value}
                elif isinstance(source, s.OutputInput):
                    upstream = done[source.step]
                    path = f"{OUTPUTS}/{source.index}"
                    digest = _part_digest(json.loads(upstream.outputs), path)
                    inputs[arg] = {
                        "kind": "output",
                        "run_id": upstream.outputs_run_id,
                        "path": path,
                        "digest": digest,
                    }
                    key_parts[arg] = {"output": digest}
                else:
                    ref = pinned[arg]
                    _, digest = self.datasets.pin(conn, project, ref, SYSTEM)
                    inputs[arg] = {"kind": "dataset", "ref": ref, "digest": digest}
                    key_parts[arg] = {"dataset": digest}
        key = _cache_key(spec, key_parts)
        st = t.pipeline_steps
        where = sa.and_(st.c.run_id == row.run_id, st.c.name == row.name, st.c.status == "waiting")
        hit = None if run.no_cache else self._cached(run, key)
        if hit is not None:
            with self.db.write() as conn:
                conn.execute(
                    st.update()
                    .where(where)
                    .values(
                        status="cached",
                        cache_key=key,
                        inputs=json.dumps(inputs),
                        outputs_run_id=hit.outputs_run_id,
                        outputs=hit.outputs,
                        outputs_digest=hit.outputs_digest,
                        cached_from=hit.run_id,
                        started_at=_now(),
                        ended_at=_now(),
                    )
                )
            return
        submit = cs.JobSubmit(
            argv=[sys.executable, "-m", WORKER, project, run.id, spec.name],
            cpus=spec.cpus,
            gpus=spec.gpus,
            memory=spec.memory,
            pool=spec.pool,
            retries=spec.retries,
            timeout=spec.timeout,
            snapshot=cs.Snapshot(digest=run.snapshot_digest, size=run.snapshot_size),
        )
        try:
            principal = self.acting(run, project)
            checked = self.jobs.check_job(project, submit)
            with self.db.write() as conn:
                claimed = conn.execute(
                    st.update()
                    .where(where)
                    .values(
                        status="running",
                        cache_key=key,
                        inputs=json.dumps(inputs),
                        started_at=_now(),
                    )
                ).rowcount
                if not claimed:
                    return  # another process started it
                job = self.jobs.submit_job_within(
                    conn, project, submit, checked, principal=principal
                )
                conn.execute(
                    st.update()
                    .where(st.c.run_id == row.run_id, st.c.name == row.name)
                    .values(job_id=job.id)
                )
                self._record_lineage(conn, run, project, job.run_id, inputs)
        except PlinthError as exc:
            self._end_step(row, "failed", f"its job could not be queued: {exc.message}")
            return
        self.jobs.submitted(job, project)

    def _record_lineage(
        self, conn: Connection, run: Any, project: str, job_run: str, inputs: dict[str, Any]
    ) -> None:
        """The step's run read these dataset versions and upstream steps' runs."""
        dst = lineage.Node(f"runs:/{job_run}", run.project_id)
        for source in inputs.values():
            if source["kind"] == "dataset":
                src = lineage.Node(f"datasets:/{project}/{source['ref']}", run.project_id)
                lineage.record(self.db, conn, src, dst, "read")
            elif source["kind"] == "output":
                src = lineage.Node(f"runs:/{source['run_id']}", run.project_id)
                lineage.record(self.db, conn, src, dst, "fed")

    def _cached(self, run: Any, key: str) -> Any:
        """A succeeded step of the project with ``key`` that ``run`` may trust: one run
        in the same snapshot, or started by the same user. The key's code digest is the
        client's word, checked inside the step's job, which runs code the snapshot's
        submitter chose: another user's snapshot could have claimed any digest."""
        st, pr = t.pipeline_steps, t.pipeline_runs
        same_user = pr.c.user_id.is_(None) if run.user_id is None else pr.c.user_id == run.user_id
        with self.db.read() as conn:
            return conn.execute(
                sa.select(st)
                .join(pr, pr.c.id == st.c.run_id)
                .where(
                    st.c.project_id == run.project_id,
                    st.c.cache_key == key,
                    st.c.status == "succeeded",
                    sa.or_(pr.c.snapshot_digest == run.snapshot_digest, same_user),
                )
                .order_by(st.c.ended_at.desc())
                .limit(1)
            ).first()

    def acting(self, run: Any, project: str) -> Principal:
        """Who a run's steps are queued as: the user who started (or resumed) it."""
        if run.user_id is None:  # no sign-in here: the home's own user
            if self.identity.auth_enabled():
                raise PermissionDenied(
                    f"{run.user!r} started this before sign-in was turned on: start it "
                    "again as a user"
                )
            return Principal(name=run.user, is_admin=True)
        return self.identity.acting_as(run.user_id, run.project_id, project)

    # shared -----------------------------------------------------------------------------

    def _require(
        self,
        conn: Connection,
        project: str,
        run_id: str,
        principal: Principal,
        need: Need,
        *,
        record: bool = True,
    ) -> Any:
        """The run's row (by id, or a unique prefix of 8 or more), if the principal may
        ``need`` its project; a run that does not exist and a project one cannot see
        answer alike."""
        hidden = NotFound(f"no pipeline run {run_id!r} in project {project!r}")
        try:
            pid = self.projects.require(conn, project, principal, need, record=record)
        except NotFound:
            raise hidden from None
        r = t.pipeline_runs
        if not (8 <= len(run_id) <= 32) or not all(c in "0123456789abcdef" for c in run_id):
            raise hidden
        rows = conn.execute(
            sa.select(r).where(r.c.project_id == pid, r.c.id.startswith(run_id)).limit(2)
        ).all()
        if len(rows) != 1:
            if len(rows) > 1:
                raise InvalidInput(f"{run_id!r} names more than one run: give more of its id")
            raise hidden
        return rows[0]

    def _run(self, conn: Connection, project: str, row: Any) -> s.PipelineRun:
        st = t.pipeline_steps
        spec = s.PipelineSpec.model_validate_json(row.spec)
        rows = {r.name: r for r in conn.execute(sa.select(st).where(st.c.run_id == row.id)).all()}
        steps = []
        for step in spec.steps:
            r = rows[step.name]
            steps.append(
                s.Step(
                    name=step.name,
                    function=step.function,
                    code_digest=step.code_digest,
                    status=r.status,
                    upstream=spec.upstream(step),
                    cpus=step.cpus,
                    gpus=step.gpus,
                    outputs=step.outputs,
                    cache_key=r.cache_key,
                    cached=r.status == "cached",
                    cached_from=r.cached_from,
                    job_id=r.job_id,
                    run_id=r.outputs_run_id,
                    outputs_digest=r.outputs_digest,
                    datasets=json.loads(r.datasets),
                    inputs=None if r.inputs is None else json.loads(r.inputs),
                    reason=r.reason,
                    started_at=r.started_at,
                    ended_at=r.ended_at,
                )
            )
        return s.PipelineRun(
            id=row.id,
            project=project,
            name=row.name,
            function=row.function,
            status=row.status,
            reason=row.reason,
            user=row.user,
            params=spec.params,
            no_cache=row.no_cache,
            trigger=row.trigger,
            snapshot=cs.Snapshot(digest=row.snapshot_digest, size=row.snapshot_size),
            created_at=row.created_at,
            ended_at=row.ended_at,
            steps=steps,
        )


def _cache_key(spec: s.StepSpec, parts: dict[str, Any]) -> str:
    body = {
        "function": spec.function,
        "code": spec.code_digest,
        "outputs": spec.outputs,
        "inputs": parts,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _part_digest(files: list[list[Any]], path: str) -> str:
    """The manifest digest of one output: the files under ``path/``."""
    prefix = f"{path}/"
    return manifest_digest(
        (p.removeprefix(prefix), d, n) for p, d, n in files if p.startswith(prefix)
    )


def _cursor(text: str) -> tuple[int, str]:
    """A page's ``next_cursor``: the last run's number and id (numbers are not unique:
    two runs created at one moment may share one)."""
    seq, _, run_id = text.partition(".")
    if not seq.isdecimal() or len(run_id) != 32 or not run_id.isalnum():
        raise InvalidInput("cursor: pass a page's next_cursor")
    return int(seq), run_id
