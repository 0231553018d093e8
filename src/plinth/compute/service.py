"""Jobs: submit one, list them, read one, cancel it, read its logs; see the nodes and
pools they run on. Editors submit and cancel, viewers read, outsiders see nothing (the
same 404 as for a job that does not exist); submits and cancels are audited. The
dispatcher (dispatcher.py) then starts, watches and ends them.

A job's working directory arrives first as an uploaded snapshot (``upload_snapshot``,
content-addressed, in the project's artifact storage); the submit names it by digest.
The server only stores and later unpacks it for the job: it never runs anything of it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.compute import launch
from plinth.compute import schemas as s
from plinth.compute import tables as t
from plinth.compute import usage as accounting
from plinth.compute.dispatcher import SYSTEM, Dispatcher
from plinth.compute.resources import Resources, parse_duration, parse_memory
from plinth.compute.scheduler import Request
from plinth.core import names
from plinth.core.access import Need, Principal
from plinth.core.artifacts import StoredContent
from plinth.core.platform import Platform
from plinth.core.projects import visible_projects
from plinth.errors import InvalidInput, NotFound, PayloadTooLarge, PlinthError
from plinth.governance.secrets import SecretsService, secrets_table
from plinth.tracking import schemas as ts
from plinth.tracking.service import TrackingService

log = logging.getLogger("plinth.compute")
SNAPSHOT_PUT = "jobs.snapshot"
SUBMIT = "jobs.submit"
MASK = "********"
_MASK_BYTES = MASK.encode()
_CURSOR = re.compile(r"[0-9]{1,18}")  # a page's next_cursor: a job's seq
_TOKEN = re.compile(rb"plt_[0-9a-f]{16}_[A-Za-z0-9-]{43}")  # identity's tokens, whole
_TOKEN_LENGTH = 4 + 16 + 1 + 43
# the start of one, cut short by the end of what is read
_TOKEN_START = re.compile(
    rb"p(?:l(?:t(?:_(?:[0-9a-f]{16}(?:_[A-Za-z0-9-]{0,42})?|[0-9a-f]{0,15}))?)?)?\Z"
)
MIN_MASKED = 4  # shorter secret values are not masked in logs: they would mask everything


class JobService:
    def __init__(
        self,
        platform: Platform,
        *,
        tracking: TrackingService,
        secrets: SecretsService,
        dispatcher: Dispatcher,
    ) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.projects = platform.projects
        self.artifacts = platform.artifacts
        self.settings = platform.settings
        self.tracking = tracking
        self.secrets = secrets
        self.dispatcher = dispatcher

    # change -----------------------------------------------------------------------------

    def upload_snapshot(
        self, project: str, chunks: Iterable[bytes], digest: str, *, principal: Principal
    ) -> s.Snapshot:
        """Store a working directory's archive in the project (outside any transaction:
        an upload takes a while); its bytes must hash to ``digest``."""
        limit = self.settings.compute.snapshot_max_bytes
        try:
            with self.db.write() as conn:  # a first job's snapshot comes before its project
                project_id = self.projects.create_or_require(conn, project, principal)
            content = self.artifacts.put(project_id, _capped(chunks, limit), digest)
        except PlinthError as exc:
            self.audit.refusal(principal, SNAPSHOT_PUT, exc, project=project, object=digest)
            raise
        return s.Snapshot(digest=content.digest, size=content.size)

    def download_snapshot(
        self, project: str, digest: str, *, principal: Principal
    ) -> tuple[int, Iterator[bytes]]:
        """A snapshot some job of the project runs in (a Kubernetes pod fetches its
        job's so), as its size and its bytes; anything else is NotFound."""
        j = t.jobs
        with self.db.read() as conn:
            project_id = self.projects.require(conn, project, principal, Need.READ)
            row = conn.execute(
                sa.select(j.c.snapshot_size, j.c.snapshot_encrypted)
                .where(j.c.project_id == project_id, j.c.snapshot_digest == digest)
                .limit(1)
            ).first()
        if row is None:
            raise NotFound(f"no job of project {project!r} runs in snapshot sha256:{digest}")
        content = StoredContent(digest, row.snapshot_size, row.snapshot_encrypted)
        return int(row.snapshot_size), self.artifacts.open(project_id, content)

    def submit_job(self, project: str, req: s.JobSubmit, *, principal: Principal) -> s.Job:
        values = self._checked(project, req)
        job_id = uuid.uuid4().hex
        # One transaction: the job, its run (creating the project if need be), both
        # audited; and its claim, when it can start at once.
        claim = None
        recorded = self.audit.recorded(principal, SUBMIT, project=project, object=job_id)
        try:
            with recorded as (conn, ch):
                row, ch.details = self._insert(conn, project, job_id, values, req, principal)
                claim = self.dispatcher.claim_within(conn, row, project)
        except BaseException:
            if claim is not None:
                self.dispatcher.unclaimed(claim)
            raise
        if claim is None:
            self.submitted(row, project)
            return _job(row, project)
        self.dispatcher.claimed(claim)
        try:
            return self.get_job(project, job_id, principal=principal)
        except PlinthError:  # the database away now: the job is there all the same
            return _job(row, project).model_copy(update={"status": "running", "attempt": 1})

    def check_job(self, project: str, req: s.JobSubmit) -> dict[str, Any]:
        """What ``submit_job_within`` needs, checked before its transaction opens (the
        check consults the dispatcher, which may itself wait on the database)."""
        return self._checked(project, req)

    def submit_job_within(
        self,
        conn: Connection,
        project: str,
        req: s.JobSubmit,
        checked: dict[str, Any],
        *,
        principal: Principal,
    ) -> Any:
        """A job queued and audited in the caller's write transaction (a pipeline's step
        commits with its job); ``checked`` is ``check_job``'s. Its row, for
        ``submitted`` once that commits."""
        values = checked
        job_id = uuid.uuid4().hex
        row, details = self._insert(conn, project, job_id, values, req, principal)
        self.audit.append(conn, principal, SUBMIT, project=project, object=job_id, details=details)
        return row

    def submitted(self, row: Any, project: str) -> None:
        """A job committed: the dispatcher takes it now instead of at its next round."""
        self.dispatcher.submitted(row, project)

    def _insert(
        self,
        conn: Connection,
        project: str,
        job_id: str,
        values: dict[str, Any],
        req: s.JobSubmit,
        principal: Principal,
    ) -> tuple[Any, dict[str, Any]]:
        run_id = uuid.uuid4().hex
        run = ts.RunCreate(
            id=run_id, project=project, name=f"job-{job_id[:8]}", tags={"plinth.job": job_id}
        )
        self.tracking.create_run_within(conn, run, principal=principal)
        project_id = self.projects.require(conn, project, principal, Need.WRITE, record=False)
        _require_secrets(conn, project, project_id, req.secrets)
        snapshot = self._claim_snapshot(conn, project_id, req.snapshot)
        seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.jobs.c.seq), 0))).scalar()
        row = conn.execute(
            t.jobs.insert().returning(*t.jobs.c),
            {
                **values,
                **snapshot,
                "id": job_id,
                "project_id": project_id,
                "seq": int(seq or 0) + 1,
                "user": principal.name,
                "user_id": principal.user_id,
                "status": "queued",
                "attempt": 0,
                "failures": 0,
                "disruptions": 0,
                "submitted_at": time.time(),
                "run_id": run_id,
            },
        ).one()
        details = {
            "argv0": req.argv[0][:200],
            "env": sorted(req.env),  # names only
            "secrets": req.secrets,
            "cpus": req.cpus,
            "gpus": req.gpus,
            "pool": values["pool"],
            "run_id": run_id,
        }
        return row, details

    def cancel_job(self, project: str, job_id: str, *, principal: Principal) -> s.Job:
        """A queued job is cancelled at once; a running one is stopped (SIGTERM, then
        SIGKILL after the grace period) and ends cancelled. An ended job stays as it is."""
        j = t.jobs
        act = "jobs.cancel"
        with self.audit.recorded(principal, act, project=project, object=job_id) as (conn, ch):
            row = self._require(conn, project, job_id, principal, Need.WRITE, record=False)
            now, ended_queued = time.time(), False
            if row.status == "queued":
                done = conn.execute(
                    j.update()
                    .where(j.c.id == row.id, j.c.status == "queued")
                    .values(
                        status="cancelled", ended_at=now, reason=f"cancelled by {principal.name}"
                    )
                ).rowcount
                ch.details = {"was": "queued"}
                ended_queued = bool(done)
            elif row.status in ("running", "preempted"):
                conn.execute(j.update().where(j.c.id == row.id).values(stop="cancel"))
                ch.details = {"was": row.status}
            else:
                ch.record = False  # ended already: nothing changes
        if ended_queued and row.run_id:
            try:
                self.dispatcher.end_run(row.run_id, "cancelled")
            except PlinthError as exc:  # the cancel stands; the run is reaped later
                log.warning("ending the run of cancelled job %s failed: %s", job_id, exc)
        self.dispatcher.wake()
        return self.get_job(project, job_id, principal=principal)

    # read -------------------------------------------------------------------------------

    def get_job(self, project: str, job_id: str, *, principal: Principal) -> s.Job:
        with self.db.read() as conn:
            row = self._require(conn, project, job_id, principal, Need.READ)
        return _job(row, project)

    def list_jobs(self, project: str, query: s.JobsQuery, *, principal: Principal) -> s.JobPage:
        """A project's jobs, newest first, a page at a time."""
        j = t.jobs
        with self.db.read() as conn:
            pid = self.projects.require(conn, project, principal, Need.READ)
            stmt = sa.select(j).where(j.c.project_id == pid)
            if query.status is not None:
                stmt = stmt.where(j.c.status == query.status)
            if query.cursor is not None:
                stmt = stmt.where(j.c.seq < _cursor(query.cursor))
            rows = conn.execute(stmt.order_by(j.c.seq.desc()).limit(query.limit + 1)).all()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        cursor = str(rows[-1].seq) if more and rows else None
        return s.JobPage(jobs=[_job(row, project) for row in rows], next_cursor=cursor)

    def job_logs(
        self, project: str, job_id: str, query: s.JobLogsQuery, *, principal: Principal
    ) -> s.JobLogs:
        """Bytes ``offset`` on of one worker's log (rank 0 of the latest attempt by
        default), as text, secret values and tokens masked (``_piece``)."""
        with self.db.read() as conn:
            row = self._require(conn, project, job_id, principal, Need.READ)
        attempt = query.attempt or row.attempt
        ended = row.status in t.ENDED
        if attempt == 0 or attempt > row.attempt:
            return s.JobLogs(
                text="",
                offset=query.offset,
                next_offset=query.offset,
                ended=ended,
                attempt=attempt,
                rank=query.rank,
            )
        path = launch.log_path(self.settings, row.id, attempt, query.rank)
        running = not (ended or attempt < row.attempt)
        values = self._masks(row, attempt, running)
        data, size = b"", 0
        if values is not None:
            data, size = _piece(path, query.offset, query.limit, values, running)
        return s.JobLogs(
            text=data.decode("utf-8", "replace"),
            offset=query.offset,
            next_offset=query.offset + size,
            ended=ended,
            attempt=attempt,
            rank=query.rank,
        )

    def nodes(self, *, principal: Principal) -> list[s.NodeUse]:
        used: dict[str, Resources] = {}
        for _, allocations in self.dispatcher.store.running_allocations():
            for a in allocations:
                old = used.get(a.node, Resources(0.0, 0, 0))
                used[a.node] = Resources(
                    old.cpus + a.resources.cpus,
                    old.memory_bytes + a.resources.memory_bytes,
                    old.gpus + a.resources.gpus,
                )
        return [_node_use(node, used.get(node.name)) for node in self.dispatcher.nodes()]

    def pools(self, *, principal: Principal) -> list[s.PoolUse]:
        nodes = self.nodes(principal=principal)
        j = t.jobs
        with self.db.read() as conn:
            counts = conn.execute(
                sa.select(j.c.pool, j.c.status, sa.func.count())
                .where(j.c.status.in_(("queued", "running", "preempted")))
                .group_by(j.c.pool, j.c.status)
            ).all()
        found = []
        for pool in self.settings.compute.pools:
            mine = [n for n in nodes if n.pool == pool.name]
            by = {status: n for name, status, n in counts if name == pool.name}
            found.append(
                s.PoolUse(
                    name=pool.name,
                    executor=pool.executor,
                    nodes=len(mine),
                    cpus=sum(n.cpus for n in mine),
                    memory_bytes=sum(n.memory_bytes for n in mine),
                    gpus=sum(n.gpus for n in mine),
                    cpus_used=sum(n.cpus_used for n in mine),
                    memory_bytes_used=sum(n.memory_bytes_used for n in mine),
                    gpus_used=sum(n.gpus_used for n in mine),
                    running=by.get("running", 0) + by.get("preempted", 0),
                    queued=by.get("queued", 0),
                )
            )
        return found

    def usage(self, query: s.UsageQuery, *, principal: Principal) -> s.Usage:
        """Resource-hours and their cost by project, user, pool or job over a window
        (see usage.py). Platform admins see every project; others the projects they
        have a role in (a scoped token: its one project). A ``project`` filter the
        caller may not read is the same 404 as one that does not exist."""
        now = time.time()
        until = now if query.until is None else min(query.until, now)
        if query.since is not None and query.since > until:
            raise InvalidInput("since: give a moment before until (and before now)")
        compute = self.settings.compute
        prices = s.Prices(
            cpu_hour=compute.price_cpu_hour,
            gpu_hour=compute.price_gpu_hour,
            gib_hour=compute.price_gib_hour,
        )
        window = accounting.Window(query.since, until, now)
        with self.db.read() as conn:
            pid = None
            if query.project is not None:
                pid = self.projects.require(conn, query.project, principal, Need.READ)
            found = accounting.usage_rows(conn, query.by, window, visible_projects(principal), pid)
        rows = accounting.ordered([accounting.usage_row(r, prices) for r in found])
        return s.Usage(
            by=query.by,
            since=query.since,
            until=until,
            prices=prices,
            rows=rows[: query.limit],
            total=accounting.total(rows),
        )

    # shared -----------------------------------------------------------------------------

    def _checked(self, project: str, req: s.JobSubmit) -> dict[str, Any]:
        """The job's columns from a request, or InvalidInput saying what is wrong."""
        if not req.argv[0]:
            raise InvalidInput("argv[0]: name the program to run (it is empty)")
        for field, given in (("env", req.env), ("secrets", req.secrets)):
            for name in given:
                if names.reserved_env(name):
                    raise InvalidInput(f"{field}: {names.reserved_env_refusal(name)}")
        memory = parse_memory(req.memory) if req.memory else 0
        timeout = parse_duration(req.timeout) if req.timeout else None
        if timeout is not None and timeout <= 0:
            raise InvalidInput("timeout: give a duration above zero")
        pool = req.pool or self.settings.compute.default_pool
        procs = req.procs_per_node
        request = Request(
            job_id="new",
            project=project,
            priority=req.priority,
            pool=pool,
            units=req.nodes,
            per_unit=Resources(
                cpus=req.cpus * procs, memory_bytes=memory * procs, gpus=req.gpus * procs
            ),
        )
        why = self.dispatcher.unplaceable(request)
        if why is not None:
            raise InvalidInput(f"this job can never start: {why}")
        return {
            "argv": json.dumps(req.argv),
            "env": json.dumps(req.env),
            "secrets": json.dumps(sorted(set(req.secrets))),
            "cpus": req.cpus,
            "memory_bytes": memory,
            "gpus": req.gpus,
            "units": req.nodes,
            "procs_per_node": procs,
            "pool": pool,
            "priority": req.priority,
            "retries": req.retries,
            "timeout_seconds": timeout,
        }

    def _claim_snapshot(
        self, conn: Connection, project_id: str, snapshot: s.Snapshot | None
    ) -> dict[str, Any]:
        if snapshot is None:
            return {"snapshot_digest": None, "snapshot_size": None, "snapshot_encrypted": None}
        content = self.artifacts.claim(conn, project_id, snapshot.digest, snapshot.size)
        return {
            "snapshot_digest": content.digest,
            "snapshot_size": content.size,
            "snapshot_encrypted": content.encrypted,
        }

    def _require(
        self,
        conn: Connection,
        project: str,
        job_id: str,
        principal: Principal,
        need: Need,
        *,
        record: bool = True,
    ) -> Any:
        hidden = NotFound(f"no job {job_id!r} in project {project!r}")
        try:
            pid = self.projects.require(conn, project, principal, need, record=record)
        except NotFound:
            raise hidden from None
        j = t.jobs
        mine = sa.select(j).where(j.c.project_id == pid)
        row = conn.execute(mine.where(j.c.id == job_id)).first()
        if row is None and _ID_PREFIX.fullmatch(job_id):  # as `jobs list` shows it
            found = conn.execute(mine.where(j.c.id.startswith(job_id)).limit(2)).all()
            if len(found) > 1:
                raise InvalidInput(f"job id prefix {job_id!r} is ambiguous; give more of it")
            row = found[0] if found else None
        if row is None:
            raise hidden
        return row

    def _masks(self, row: Any, attempt: int, running: bool) -> list[bytes] | None:
        """The values this attempt's logs mask: those handed to it (its secrets, its
        token), kept sealed at its launch, so a secret changed or deleted since is
        masked still. None: its launch is still being recorded, nothing may be read
        yet. An attempt of before they were kept (or one that failed to launch): the
        secrets' values now."""
        sealed = self.dispatcher.store.masks(row.id, attempt)
        if sealed:
            label = f"{row.id}/{attempt}"
            return [v.encode() for v in self.secrets.open_masks(row.project_id, label, sealed)]
        if sealed == b"" and running:
            return None
        values = []
        for name in json.loads(row.secrets):
            try:
                project = self._project_name(row.project_id)
                values.append(self.secrets.reveal(project, name, principal=SYSTEM).encode())
            except PlinthError:
                continue  # deleted since: nothing of it to mask
        return values

    def _project_name(self, project_id: str) -> str:
        with self.db.read() as conn:
            return str(self.projects.names(conn, {project_id})[project_id])


_ID_PREFIX = re.compile(r"[0-9a-f]{8,31}")  # a unique prefix stands for the job's id


def _job(row: Any, project: str) -> s.Job:
    snapshot = None
    if row.snapshot_digest is not None:
        snapshot = s.Snapshot(digest=row.snapshot_digest, size=row.snapshot_size)
    return s.Job(
        id=row.id,
        project=project,
        user=row.user,
        argv=json.loads(row.argv),
        env=json.loads(row.env),
        secrets=json.loads(row.secrets),
        cpus=row.cpus,
        memory_bytes=row.memory_bytes,
        gpus=row.gpus,
        nodes=row.units,
        procs_per_node=row.procs_per_node,
        pool=row.pool,
        priority=row.priority,
        retries=row.retries,
        retries_used=row.failures,
        disruptions=row.disruptions,
        timeout_seconds=row.timeout_seconds,
        status=row.status,
        exit_code=row.exit_code,
        reason=row.reason,
        attempt=row.attempt,
        submitted_at=row.submitted_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        retry_at=row.retry_at,
        snapshot=snapshot,
        run_id=row.run_id,
        node=row.node,
    )


def _node_use(node: Any, used: Resources | None) -> s.NodeUse:
    used = used or Resources(0.0, 0, 0)
    return s.NodeUse(
        name=node.name,
        pool=node.pool,
        executor=node.executor,
        cpus=node.capacity.cpus,
        memory_bytes=node.capacity.memory_bytes,
        gpus=node.capacity.gpus,
        cpus_used=used.cpus,
        memory_bytes_used=used.memory_bytes,
        gpus_used=used.gpus,
        gpu_models=[g.name for g in node.gpus],
    )


def _capped(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(
                f"the working directory's snapshot is over {limit} bytes "
                "(compute.snapshot_max_bytes): leave large files out (.gitignore) or "
                "store them as artifacts"
            )
        yield chunk


def _cursor(text: str) -> int:
    if not _CURSOR.fullmatch(text):
        raise InvalidInput("cursor: pass a page's next_cursor back as it came")
    return int(text)


def _require_secrets(conn: Connection, project: str, project_id: str, names: list[str]) -> None:
    """Refuse a job naming a secret its project does not have (one deleted after the
    submit fails the job when it starts)."""
    if not names:
        return
    table = secrets_table
    found = conn.execute(
        sa.select(table.c.name).where(table.c.project_id == project_id, table.c.name.in_(names))
    )
    missing = sorted(set(names) - set(found.scalars()))
    if missing:
        raise NotFound(f"project {project!r} has no secret {missing[0]!r}")


def _piece(
    path: Any, offset: int, limit: int, values: Sequence[bytes], running: bool
) -> tuple[bytes, int]:
    """Up to ``limit`` bytes of the log at ``path`` from ``offset``, masked (``_masked``),
    and how many bytes of the log they stand for. The log is read with a value's length
    of context either side, so no window, however placed, shows a part of one.

    While the attempt runs, the log's end may hold the start of a value whose rest is
    not written yet: from the first place one could begin, nothing is sent (a later
    read sends it, masked once whole); and only whole lines are sent, where the window
    holds a line's end."""
    values = [v for v in values if len(v) >= MIN_MASKED]
    reach = max([_TOKEN_LENGTH, *(len(v) for v in values)]) - 1
    start = max(0, offset - reach)
    want = offset - start + limit + reach
    context = _read(path, start, want)  # one read: what is held and masked agree
    low = offset - start
    high = min(len(context), low + limit)
    if running:
        if len(context) < want:  # the log's end is in reach: a value may start there
            high = min(high, max(low, _unfinished(context, values)))
        if high > low:
            high = low + len(_whole_lines(context[low:high]))
    if high <= low:
        return b"", 0
    return _masked(context, low, high, values), high - low


def _unfinished(context: bytes, values: Sequence[bytes]) -> int:
    """Where in ``context`` (which runs to the log's end) the first value or token
    begins that the end cuts short; ``len(context)`` if none does."""
    end = len(context)
    first = end
    token = _TOKEN_START.search(context, max(0, end - _TOKEN_LENGTH + 1))
    if token is not None:
        first = token.start()
    for value in values:
        at = context.find(value[:1], max(0, end - len(value) + 1), first)
        while at != -1:
            if context.endswith(value[: end - at]):
                first = at
                break
            at = context.find(value[:1], at + 1, first)
    return first


def _masked(context: bytes, low: int, high: int, values: Sequence[bytes]) -> bytes:
    """``context[low:high]`` with every byte that belongs to one of ``values`` or to a
    Plinth API token (the job's own, say) masked, where it starts or ends outside the
    window too."""
    found = [(m.start(), m.end()) for m in _TOKEN.finditer(context)]
    for value in values:
        at = context.find(value)
        while at != -1:
            found.append((at, at + len(value)))
            at = context.find(value, at + 1)
    spans = [(max(a, low), min(b, high)) for a, b in found if a < high and b > low]
    merged: list[list[int]] = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:  # overlapping or touching: one mask
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    out, done = [], low
    for begin, end in merged:
        out += [context[done:begin], _MASK_BYTES]
        done = end
    out.append(context[done:high])
    return b"".join(out)


def _read(path: Any, offset: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``offset``; none past the end (a file system refuses
    to seek far past it)."""
    try:
        with open(path, "rb") as f:
            if offset >= os.fstat(f.fileno()).st_size:
                return b""
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return b""


def _whole_lines(data: bytes) -> bytes:
    """``data`` up to its last line's end; with none, without a character cut at its
    end (it comes whole with the next read)."""
    if b"\n" in data:
        return data[: data.rindex(b"\n") + 1]
    for cut in range(min(3, len(data)) + 1):
        head = data[: len(data) - cut]
        try:
            head.decode("utf-8")
            return head
        except UnicodeDecodeError:
            continue
    return data
