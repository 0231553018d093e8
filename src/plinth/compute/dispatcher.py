"""The dispatcher: carries out what the scheduler decides, and watches what runs.

One loop per server, woken at once by a submit or a cancel (so a job starts within
milliseconds, not at the next tick) and at least every ``POLL_SECONDS``. Each round:
queued jobs join the scheduler, running workers are polled (an exit settles the job:
succeeded, failed, or queued again to retry with back-off; a preemption requeues it
without using a retry), asked stops (cancel, preempt, timeout) are carried out with
SIGTERM and a grace period, and placements start: each job is claimed in the
database first (queued → running only if still queued, so no job starts twice).

One dispatcher per database: a process dispatches only while it holds the
``dispatcher_lease`` row (renewed every third of ``lease_seconds``); another one (a
second server, a job's own embedded client, a CLI call) only queues, and takes over
when the holder stops or dies. An embedded app that ends while jobs wait or run hands
them to a detached ``plinth jobs agent``, which dispatches until the home is idle, so
a job submitted from a script or the CLI still starts, and ends, after it exits.

Leases: a running attempt's ``lease_expires_at`` is renewed while its workers are
seen running. At start the dispatcher re-adopts every attempt whose workers still run
(their executor handles are in the database) and settles the dead ones with their
real exit codes; later, attempts whose lease ran out (their server died) are adopted
or settled the same way. So no job stays running without a live lease. Stopping the
app leaves workers running, for the next start to adopt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from plinth.compute import launch
from plinth.compute.executors import Executor, Handle, Status, by_name, sandbox
from plinth.compute.resources import Node, nodes_from_settings, parse_memory
from plinth.compute.scheduler import Placement, Quota, Request, Scheduler
from plinth.compute.store import JobStore, Outcome, allocations_of, handles_of, request_of
from plinth.core.access import Principal
from plinth.core.artifacts import StoredContent
from plinth.core.db import database_fault
from plinth.core.platform import Platform
from plinth.errors import DigestMismatch, PlinthError
from plinth.governance.identity import IdentityService
from plinth.governance.secrets import SecretsService
from plinth.serving.supervisor import DeploymentSupervisor
from plinth.tracking import schemas as ts
from plinth.tracking.service import TrackingService

log = logging.getLogger("plinth.compute")
SYSTEM = Principal(name="plinth-dispatcher", is_admin=True)
POLL_SECONDS = 0.5
# A job whose snapshot is bigger is not claimed in its submit: its unpack would hold the
# submit's answer (and the dispatcher) for longer than the claim saves.
CLAIM_SNAPSHOT_BYTES = 4 << 20
TOKEN_SLACK_SECONDS = 7 * 86400  # a job token outlives a lost server by at most this
_RUN_STATUS = {"succeeded": "finished", "failed": "failed", "lost": "failed", "cancelled": "killed"}


@dataclass
class Active:
    """A started attempt this dispatcher watches."""

    job_id: str
    attempt: int
    pool: str
    started_at: float
    timeout: float | None
    run_id: str | None
    handles: list[Handle] = field(default_factory=list)
    token_id: str | None = None
    stop: str | None = None  # cancel | preempt | timeout, once asked
    stop_sent: bool = False
    gang_broken: Status | None = None  # the member's end that is stopping the others
    last_seen: float = field(default_factory=time.time)


class Dispatcher:
    def __init__(
        self,
        platform: Platform,
        *,
        tracking: TrackingService,
        identity: IdentityService,
        secrets: SecretsService,
        supervisor: DeploymentSupervisor,
    ) -> None:
        # deployments' replicas run in the jobs' sandbox, hiding what jobs may not see
        supervisor.use_sandbox(sandbox.Provider(lambda: launch.server_paths(self.settings)))
        self.platform = platform
        self.settings = platform.settings
        self.compute = platform.settings.compute
        self.store = JobStore(platform.db)
        self.tracking, self.identity, self.secrets = tracking, identity, secrets
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._scheduler: Scheduler | None = None
        self._nodes: list[Node] | None = None
        self._executors: dict[str, Executor] = {}
        self._queued: dict[str, Request] = {}
        self._rows: dict[str, Any] = {}  # the queued jobs' rows, as last read
        self._fresh: dict[str, Any] = {}  # jobs submitted here since the last round
        self._fresh_lock = threading.Lock()
        self._dirty = True  # something besides a submit changed: read the whole queue
        self._synced_at = 0.0
        self._active: dict[str, Active] = {}
        self._renewed_at = 0.0
        self._swept_at = time.time()
        self._next_retry: float | None = None  # when a job waiting to retry may start
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leading = False
        self._lead_checked = 0.0
        self._outage: str | None = None  # the database's fault while it lasts

    # the app's life ---------------------------------------------------------------------

    def start(self) -> None:
        """At the app's start: adopt what runs, settle what died, then loop."""
        if not self.compute.dispatch:
            return
        with self._lock:
            try:
                self._lead(time.time())
            except Exception as exc:  # the database away: the loop tries again
                self._failed("taking the dispatcher lease", exc)
        self._halt.clear()
        self._thread = threading.Thread(target=self._loop, name="plinth-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """At the app's stop: the loop ends, workers keep running (the next start
        adopts them)."""
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            if self._leading:
                self._resign()
            for executor in self._executors.values():
                executor.close()
            self._executors.clear()
            self._forget()

    def _forget(self) -> None:
        self._active.clear()
        self._queued.clear()
        self._rows.clear()
        self._scheduler = None

    def _lead(self, now: float) -> bool:
        """Whether this process dispatches: take or renew the lease when due. On taking
        it, adopt what runs; on losing it, forget (the new holder adopts)."""
        due = self.compute.lease_seconds / 3 if self._leading else 1.0
        if now - self._lead_checked < due:
            return self._leading
        leading = self.store.lead(self._holder, now, now + self.compute.lease_seconds)
        self._lead_checked = now  # only once the database said (a claim trusts it)
        if leading != self._leading:
            self._forget()
            self._leading = leading
            if leading:
                self._adopt(self.store.live_attempts(), at_start=True)
        return leading

    def _resign(self) -> None:
        """Give the lease up; an embedded app with jobs left hands them to an agent."""
        try:
            hand_off = self.platform.embedded and self.compute.handoff and self.store.has_work()
            self.store.resign(self._holder)
        except Exception:
            log.exception("giving the dispatcher lease up failed")
            return
        finally:
            self._leading = False
        if hand_off:
            start_agent(self.settings)

    @property
    def leading(self) -> bool:
        """Whether this process holds the dispatch lease (background work that must run
        in one process at a time, a pipeline's advance, goes where this is true)."""
        return self._leading

    def wake(self) -> None:
        """Something changed (a cancel, say): run a round now."""
        self._dirty = True
        self._wake.set()

    def submitted(self, row: Any, project: str) -> None:
        """A job was submitted through this process: run a round now, one that takes
        the job as committed instead of reading the queue again."""
        if self.compute.dispatch:
            with self._fresh_lock:
                self._fresh[row.id] = _WithProject(row, project)
        self._wake.set()

    def claim_within(self, conn: Connection, row: Any, project: str) -> Claim | None:
        """Claim a job in its submit's own transaction when it can start at once: this
        process dispatches and is not in a round, no other job waits (in the scheduler
        or the database), its pool is local and it fits. That saves the claim's own
        commit and the hand-off to the dispatcher's thread. A claim holds the
        dispatcher until ``claimed`` (once the transaction commits: it launches the
        job) or ``unclaimed`` (if it does not): no round, lease change or stop comes
        between. None: the job goes the usual way (a job with a big snapshot always does:
        its unpack would hold the submit's answer)."""
        if (row.snapshot_size or 0) > CLAIM_SNAPSHOT_BYTES:
            return None
        if not self.compute.dispatch or not self._lock.acquire(blocking=False):
            return None
        held = False
        try:
            now = time.time()
            lease_ok = now - self._lead_checked < self.compute.lease_seconds / 2
            scheduler = self._scheduler
            if not (self._leading and lease_ok) or scheduler is None:
                return None
            pool = [p for p in self.compute.pools if p.name == row.pool]
            if pool and pool[0].executor != "local":  # a remote launch may take long
                return None
            request = request_of(row, project)
            if scheduler.queued() or scheduler.unplaceable(request) is not None:
                return None
            if self.store.others_waiting(conn, row.id, now):
                return None
            scheduler.submit(request)
            placements = scheduler.place()
            if [p.job_id for p in placements] != [row.id]:  # it does not fit now
                for placement in placements:
                    scheduler.release(placement.job_id)
                scheduler.withdraw(row.id)
                return None
            placement = placements[0]
            nodes = [a.node for a in placement.allocations]
            lease = self.compute.lease_seconds
            try:
                attempt = self.store.claim_in(conn, row, placement.allocations, nodes, lease)
            except BaseException:
                scheduler.release(row.id)
                raise
            if attempt is None:
                scheduler.release(row.id)
                return None
            held = True
            return Claim(_WithProject(row, project), attempt, placement)
        finally:
            if not held:
                self._lock.release()

    def claimed(self, claim: Claim) -> None:
        """A claim's transaction committed: its job launched now, on the caller's
        thread; the dispatcher is free again. A failure is the job's (settled as any
        launch's), never the caller's: the job exists and is reported so."""
        try:
            self._begin(claim.row, claim.attempt, claim.placement)
        except Exception as exc:  # settling it failed too (the database away, say)
            self._failed(f"starting job {claim.row.id}", exc)
        finally:
            self._lock.release()

    def unclaimed(self, claim: Claim) -> None:
        """A claim's transaction did not commit: its resources are free again."""
        try:
            if self._scheduler is not None:
                self._scheduler.release(claim.row.id)
        finally:
            self._lock.release()

    def _loop(self) -> None:
        while not self._halt.is_set():
            retry_in = POLL_SECONDS if self._next_retry is None else self._next_retry - time.time()
            self._wake.wait(max(0.0, min(POLL_SECONDS, retry_in)))
            self._wake.clear()
            if self._halt.is_set():
                return
            try:
                self.step()
            except Exception as exc:  # the database away, say: the next round tries again
                self._failed("a dispatch round", exc)
            else:
                if self._outage is not None:
                    log.warning("the database is back: dispatching resumes")
                    self._outage = None

    def _failed(self, what: str, exc: Exception) -> None:
        """Report a failure: a bug with its traceback; the database down or full in one
        line, once per outage, so a long outage does not bury the log."""
        fault = database_fault(exc)
        if fault is None:
            log.exception("%s failed", what)
        elif self._outage != fault:
            self._outage = fault
            log.warning("%s failed: the database is %s; waiting for it", what, fault)

    # configuration ----------------------------------------------------------------------

    def nodes(self) -> list[Node]:
        if self._nodes is None:
            self._nodes = nodes_from_settings(self.compute)
        return self._nodes

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            quotas = {name: _quota(q) for name, q in self.compute.quotas.items()}
            self._scheduler = Scheduler(
                self.nodes(), quotas, default_pool=self.compute.default_pool
            )
        return self._scheduler

    def unplaceable(self, request: Request) -> str | None:
        """Why a job could never start here (too big for any node, no such pool)."""
        with self._lock:
            return self.scheduler.unplaceable(request)

    def _executor(self, pool: str) -> Executor:
        if pool not in self._executors:
            found = [p for p in self.compute.pools if p.name == pool]
            kind = found[0].executor if found else "local"
            options: dict[str, Any] = {}
            if found and kind == "ray":
                options.update(
                    address=found[0].address, shared_filesystem=found[0].shared_filesystem
                )
            if found and kind == "kubernetes":
                pool_settings = found[0]
                options.update(
                    namespace=pool_settings.namespace,
                    image=pool_settings.image,
                    service_account=pool_settings.service_account,
                    image_pull_policy=pool_settings.image_pull_policy,
                    node_selector=dict(pool_settings.node_selector),
                    run_as_user=pool_settings.run_as_user,
                )
            self._executors[pool] = by_name(kind, **options)
        return self._executors[pool]

    # one round --------------------------------------------------------------------------

    def step(self) -> None:
        with self._lock:
            now = time.time()
            if not self._lead(now):
                with self._fresh_lock:
                    self._fresh.clear()  # the leader elsewhere reads them from the database
                return
            self._sync_queue(now)
            self._watch(now)
            self._preempt()
            for placement in self.scheduler.place():
                self._queued.pop(placement.job_id, None)
                try:
                    self._start(placement)
                except Exception as exc:
                    self._failed(f"starting job {placement.job_id}", exc)
                    self.scheduler.release(placement.job_id)
            if now - self._swept_at >= self.compute.lease_seconds / 2:
                self._swept_at = now
                self._adopt(self.store.live_attempts(expired_before=now), at_start=False)

    def _sync_queue(self, now: float) -> None:
        """The scheduler's queue follows the database's: new jobs join, cancelled ones
        leave; a job that can never fit fails now instead of waiting forever. A round
        woken only by submits made here just adds them (the next poll reads it all)."""
        with self._fresh_lock:
            fresh, self._fresh = self._fresh, {}
        if self._dirty or now - self._synced_at >= POLL_SECONDS or not fresh:
            self._dirty, self._synced_at = False, now
            ready, self._next_retry = self.store.ready_ids(now)
            for gone in set(self._queued) - ready:
                self.scheduler.withdraw(gone)
                del self._queued[gone]
                self._rows.pop(gone, None)
            new = ready - set(self._queued) - set(self._active)
            rows = [fresh[i] for i in new & set(fresh)] + self.store.jobs(new - set(fresh))
        else:
            # One a round already read from the database may be queued or running.
            rows = [r for i, r in fresh.items() if i not in self._queued and i not in self._active]
        for row in rows:
            request = request_of(row, row.project)
            why = self.scheduler.unplaceable(request)
            if why is not None:
                self.store.fail_queued(row.id, why)
                continue
            self.scheduler.submit(request)
            self._queued[row.id] = request
            self._rows[row.id] = row

    def _start(self, placement: Placement) -> None:
        # The row as queued: a claim takes it only if that is still so in the database.
        row = self._rows.pop(placement.job_id, None) or self.store.job(placement.job_id)
        nodes = [a.node for a in placement.allocations]
        attempt = None
        if row is not None and row.status == "queued":
            attempt = self.store.claim(
                row, placement.allocations, nodes, self.compute.lease_seconds
            )
        if row is None or attempt is None:  # cancelled, or another dispatcher took it
            self.scheduler.release(placement.job_id)
            return
        self._begin(row, attempt, placement)

    def _begin(self, row: Any, attempt: int, placement: Placement) -> None:
        """A claimed attempt launched and watched (or, failing to launch, settled)."""
        active = Active(row.id, attempt, row.pool, time.time(), row.timeout_seconds, row.run_id)
        self._active[row.id] = active
        try:
            self._launch(row, active, placement)
        except Exception as exc:
            log.warning("job %s could not start: %s", row.id, _safe(exc))
            self._settle(active, Outcome("failed", None, f"could not start: {_safe(exc)}"))

    def _launch(self, row: Any, active: Active, placement: Placement) -> None:
        cwd = launch.job_dir(self.settings, row.id, active.attempt) / "work"
        cwd.mkdir(parents=True, exist_ok=True)
        if row.snapshot_digest:
            self._unpack(row, cwd.parent, cwd)
        reach = self._reach(row, active)
        env = launch.base_env(self.settings, row, active.attempt, reach)
        secrets = self._secret_env(row)
        env.update(secrets)
        label = f"{row.id}/{active.attempt}"
        masks = self.secrets.seal_masks(row.project_id, label, list(secrets.values()))
        executor = self._executor(row.pool)
        hidden = launch.server_paths(self.settings) if self._sandboxed(reach) else ()
        specs = launch.workers(
            row, active.attempt, placement.allocations, env, cwd, self.settings, hidden
        )
        try:
            for spec in specs:
                active.handles.append(executor.launch(spec))
        except Exception:
            for handle in active.handles:
                executor.stop(handle, 0.0)
            raise
        self.store.launched(row.id, active.attempt, active.handles, active.token_id, masks)

    def _sandboxed(self, reach: launch.Connection) -> bool:
        """Whether a local worker runs in a sandbox: with auth on (the job reaches the
        server by URL, not through its home), unless the setting says not to."""
        return reach.url is not None and self.compute.local_sandbox

    def _reach(self, row: Any, active: Active) -> launch.Connection:
        """How the job reaches Plinth: with auth on, this server's URL and a token of
        the job's user scoped to its project; otherwise the home."""
        if not self.identity.auth_enabled():
            return launch.Connection()
        url = self.compute.server_url or self.settings.server.local_url()
        if row.user_id is None:
            return launch.Connection(url)
        expires = time.time() + (row.timeout_seconds or 0) + TOKEN_SLACK_SECONDS
        name = f"job-{row.id[:12]}-{active.attempt}"
        token, active.token_id = self.identity.issue_job_token(
            row.user_id, row.project_id, row.project, name, expires
        )
        return launch.Connection(url, token)

    def _secret_env(self, row: Any) -> dict[str, str]:
        import json

        names = json.loads(row.secrets)
        return {n: self.secrets.reveal(row.project, n, principal=SYSTEM) for n in names}

    def _unpack(self, row: Any, directory: Path, cwd: Path) -> None:
        """The job's snapshot from the project's artifacts, checked against its digest,
        unpacked by ``snapshot.unpack`` (which refuses a hostile archive)."""
        from plinth.compute import snapshot

        content = StoredContent(row.snapshot_digest, row.snapshot_size, row.snapshot_encrypted)
        archive = directory / "snapshot.tar"
        digest = hashlib.sha256()
        with open(archive, "wb") as out:
            for chunk in self.platform.artifacts.open(row.project_id, content):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != row.snapshot_digest:
            raise DigestMismatch("the job's snapshot does not match its digest")
        try:
            snapshot.unpack(archive, cwd, self.compute.snapshot_max_bytes)
        finally:
            archive.unlink(missing_ok=True)

    # watching ---------------------------------------------------------------------------

    def _watch(self, now: float) -> None:
        if not self._active:
            return
        asked = self.store.stops(self._active)
        alive: list[tuple[str, int]] = []
        for active in list(self._active.values()):
            try:
                if self._watch_one(active, asked.get(active.job_id), now):
                    alive.append((active.job_id, active.attempt))
            except Exception as exc:
                self._failed(f"watching job {active.job_id}", exc)
        if alive and now - self._renewed_at >= self.compute.lease_seconds / 3:
            self.store.renew(alive, now + self.compute.lease_seconds)
            self._renewed_at = now

    def _watch_one(self, active: Active, asked: str | None, now: float) -> bool:
        """Poll one attempt, carry out a stop; True while it runs. Polled first: an
        attempt that ended by itself before its deadline came round ended as it did,
        not timed out."""
        if asked is not None and active.stop is None:
            active.stop = asked
        unanswered: Exception | None = None
        try:
            statuses = self._poll(active)
        except Exception as exc:
            statuses, unanswered = [], exc
        if unanswered is not None or any(s.state == "running" for s in statuses):
            timed_out = active.timeout is not None and now - active.started_at > active.timeout
            if timed_out and active.stop is None:
                active.stop = "timeout"
                self.store.ask_stop(active.job_id, active.attempt, "timeout")
            if active.stop is not None and not active.stop_sent:
                self._stop_workers(active, self.compute.grace_seconds)
        if unanswered is not None:
            if now - active.last_seen <= self.compute.lease_seconds:
                log.warning("polling job %s failed: %s", active.job_id, unanswered)
                return True
            why = f"its executor did not answer: {unanswered}"
            self._settle(active, Outcome("lost", None, why))
            return False
        active.last_seen = now
        outcome = self._outcome(active, statuses)
        if outcome is None:
            return True
        self._settle(active, outcome)
        return False

    def _poll(self, active: Active) -> list[Status]:
        executor = self._executor(active.pool)
        return [executor.poll(handle) for handle in active.handles]

    def _stop_workers(self, active: Active, grace: float) -> None:
        executor = self._executor(active.pool)
        for handle in active.handles:
            try:
                executor.stop(handle, grace)
            except Exception as exc:
                log.warning("stopping a worker of job %s failed: %s", active.job_id, exc)
        active.stop_sent = True

    def _outcome(self, active: Active, statuses: list[Status]) -> Outcome | None:
        """How the attempt ended, or None while a worker runs. A gang member that
        fails or vanishes stops the others."""
        lost = [s for s in statuses if s.state == "lost"]
        failed = [s for s in statuses if s.state == "exited" and s.exit_code != 0]
        if any(s.state == "running" for s in statuses):
            if (lost or failed) and not active.stop_sent:
                active.gang_broken = (lost or failed)[0]
                self._stop_workers(active, self.compute.grace_seconds)
            return None
        broke = active.gang_broken  # the gang ends as its first failing member did
        if broke is not None and broke.state == "exited":
            failed = [broke, *failed]
        elif broke is not None:
            lost = [broke, *lost]
        code = failed[0].exit_code if failed else (0 if statuses and not lost else None)
        if active.stop == "cancel":
            return Outcome("cancelled", code, "cancelled")
        if active.stop == "preempt":
            return Outcome("preempted", code, "preempted by higher-priority work")
        if active.stop == "timeout":
            return Outcome("timeout", code, f"timed out after {active.timeout:g} s")
        if not statuses:
            return Outcome("lost", None, "no worker was running")
        if lost:
            return Outcome("lost", None, lost[0].reason or "its worker vanished")
        if failed:
            return Outcome("failed", code, failed[0].reason or f"exited with code {code}")
        return Outcome("succeeded", 0, None)

    def _preempt(self) -> None:
        for preemption in self.scheduler.preemptions():
            active = self._active.get(preemption.job_id)
            attempt = active.attempt if active else None
            asked = self.store.ask_stop(preemption.job_id, attempt, "preempt", "preempted")
            if asked and active is not None and active.stop is None:
                active.stop = "preempt"

    # ends -------------------------------------------------------------------------------

    def _settle(self, active: Active, outcome: Outcome) -> None:
        """Write the outcome (fenced by the attempt), free the resources, revoke the
        job's token, end its run when the job ended, drop its working directory."""
        self._active.pop(active.job_id, None)
        self.scheduler.release(active.job_id)
        settled = self.store.settle(active.job_id, active.attempt, outcome, self._backoff)
        if settled is None and outcome.status not in ("lost",):  # a stale attempt
            self._stop_workers(active, 0.0)
        if active.token_id is not None:
            _quietly(self.identity.revoke_job_token, active.token_id)
        if settled is not None and settled.ended and active.run_id:
            _quietly(self.end_run, active.run_id, settled.status)
        for scratch in ("work", "tmp"):  # tmp: a sandboxed worker's /tmp
            shutil.rmtree(
                launch.job_dir(self.settings, active.job_id, active.attempt) / scratch,
                ignore_errors=True,
            )
        if settled is not None and not settled.ended:
            self._wake.set()

    def end_run(self, run_id: str, status: str) -> None:
        """End a job's tracked run as the job ended, unless its program ended it."""
        run = self.tracking.get_run(run_id, principal=SYSTEM)
        if run.status == "running":
            update = ts.RunUpdate(status=_RUN_STATUS[status])
            self.tracking.end_run(run_id, update, principal=SYSTEM)

    def _backoff(self, failures: int) -> float:
        first, cap = self.compute.retry_backoff_seconds, self.compute.retry_backoff_max_seconds
        return float(min(cap, first * 2**failures))

    def _adopt(self, rows: list[Any], *, at_start: bool) -> None:
        """Attempts started by an earlier server (or one whose lease ran out): adopt
        those whose workers run, settle the others with what their executor says."""
        now = time.time()
        for row in rows:
            if row.job_id in self._active:
                continue
            handles = handles_of(row.handles)
            if at_start and not handles and (row.lease_expires_at or 0) > now:
                continue  # maybe still being launched elsewhere: its lease decides
            try:
                self._adopt_one(row, handles, now)
            except Exception as exc:
                self._failed(f"adopting job {row.job_id}", exc)

    def _adopt_one(self, row: Any, handles: list[Handle], now: float) -> None:
        job = self.store.job(row.job_id)
        if job is None:
            return
        active = Active(
            job.id,
            row.attempt,
            job.pool,
            row.started_at,
            job.timeout_seconds,
            job.run_id,
            handles=handles,
            token_id=row.token_id,
            stop=row.stop,
        )
        self._active[job.id] = active
        outcome = self._outcome(active, self._poll(active))
        if outcome is not None:
            self._settle(active, outcome)
            return
        self.scheduler.adopt(request_of(job, job.project), allocations_of(row.allocations))
        self.store.renew([(job.id, row.attempt)], now + self.compute.lease_seconds)
        log.info("adopted job %s attempt %s", job.id, row.attempt)


def start_agent(settings: Any) -> None:
    """``plinth jobs agent``, detached, on this home: it dispatches until no job waits
    or runs. Its output goes to ``compute/agent.log`` in the home."""
    env = {**os.environ, **launch.home_env(settings)}
    env["PLINTH_COMPUTE"] = settings.compute.model_dump_json()
    env.pop("PLINTH_URL", None)
    log_file = settings.home / "compute" / "agent.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "plinth", "jobs", "agent"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def _quota(settings: Any) -> Quota:
    memory = parse_memory(settings.memory) if settings.memory else None
    return Quota(cpus=settings.cpus, memory_bytes=memory, gpus=settings.gpus, jobs=settings.jobs)


def _safe(exc: BaseException) -> str:
    """An error as a job's reason: a Plinth error's message, else its type and text."""
    if isinstance(exc, PlinthError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"[:500]


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)


@dataclass(frozen=True)
class Claim:
    """A job claimed in its submit's transaction (``Dispatcher.claim_within``)."""

    row: Any
    attempt: int
    placement: Placement


class _WithProject:
    """A job's row with its project's name as ``project``, as the store reads them."""

    def __init__(self, row: Any, project: str) -> None:
        self._row, self.project = row, project

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)
