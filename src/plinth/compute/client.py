"""Compute's SDK calls, reached as methods of ``plinth.Client``."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from plinth.compute import schemas as s
from plinth.errors import InvalidInput

if TYPE_CHECKING:
    from plinth.client import Transport
    from plinth.settings import Settings

WAIT_POLL_FIRST_S = 0.05
WAIT_POLL_MAX_S = 1.0
Moment = float | datetime | str  # when a usage window starts or ends
T = TypeVar("T")


def _jobs(project: str, job_id: str | None = None) -> str:
    base = f"/api/v1/projects/{quote(project, safe='')}/jobs"
    return base if job_id is None else f"{base}/{quote(job_id, safe='')}"


class ComputeCalls:
    _transport: Transport
    settings: Settings

    def submit_job(
        self,
        project: str,
        argv: Sequence[str],
        *,
        cpus: float = 1.0,
        gpus: int = 0,
        memory: str | None = None,
        nodes: int = 1,
        procs_per_node: int = 1,
        pool: str | None = None,
        priority: int = 0,
        retries: int = 0,
        timeout: str | float | None = None,
        workdir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        snapshot: s.Snapshot | None = None,
    ) -> s.Job:
        """Queue ``argv`` (a list, never a shell line) in ``project``; ``workdir`` is
        snapshotted (respecting .gitignore) and the job runs in a copy of it, or in
        ``snapshot`` (one ``upload_snapshot`` made, for jobs that must run the same
        files). ``timeout``: seconds or a duration such as ``2h``."""
        if isinstance(argv, str):
            raise InvalidInput("argv is a list of arguments, not a shell line")
        if workdir is not None and snapshot is not None:
            raise InvalidInput("give workdir or snapshot, not both")
        if workdir is not None:
            snapshot = self.upload_snapshot(project, workdir)
        body = {  # checked by the server, which says what is wrong (InvalidInput)
            "argv": list(argv),
            "cpus": cpus,
            "gpus": gpus,
            "memory": memory,
            "nodes": nodes,
            "procs_per_node": procs_per_node,
            "pool": pool,
            "priority": priority,
            "retries": retries,
            "timeout": None if timeout is None else _duration(timeout),
            "env": dict(env or {}),
            "secrets": list(secrets),
            "snapshot": None if snapshot is None else snapshot.model_dump(),
        }
        sent = {k: v for k, v in body.items() if v is not None}
        return s.Job(**self._transport.request("POST", _jobs(project), json=sent))

    def upload_snapshot(self, project: str, workdir: str | os.PathLike[str]) -> s.Snapshot:
        """Pack ``workdir`` (as ``git add`` would see it, size-capped) and upload it to
        the project: the Snapshot a submit names."""
        from plinth.compute.snapshot import pack

        archive = pack(Path(workdir), self.settings.compute.snapshot_max_bytes)
        url = f"/api/v1/projects/{quote(project, safe='')}/snapshots"
        data = self._transport.request(
            "PUT",
            url,
            content=archive,
            retry=True,  # content-addressed: sending it twice stores it once
            headers={
                "X-Plinth-Digest": hashlib.sha256(archive).hexdigest(),
                "Content-Type": "application/octet-stream",
            },
        )
        return s.Snapshot(**data)

    def list_jobs(
        self,
        project: str,
        *,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> s.JobPage:
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        return s.JobPage(**self._transport.request("GET", _jobs(project), params=params))

    def get_job(self, project: str, job_id: str) -> s.Job:
        return s.Job(**self._transport.request("GET", _jobs(project, job_id)))

    def cancel_job(self, project: str, job_id: str) -> s.Job:
        url = f"{_jobs(project, job_id)}/cancel"
        return s.Job(**self._transport.request("POST", url, retry=True))

    def job_logs(
        self,
        project: str,
        job_id: str,
        *,
        offset: int = 0,
        attempt: int | None = None,
        rank: int = 0,
        limit: int = 1 << 20,
    ) -> s.JobLogs:
        """A piece of a worker's log from byte ``offset``; ask again from its
        ``next_offset`` to follow."""
        params: dict[str, Any] = {"offset": offset, "rank": rank, "limit": limit}
        if attempt is not None:
            params["attempt"] = attempt
        url = f"{_jobs(project, job_id)}/logs"
        return s.JobLogs(**self._transport.request("GET", url, params=params))

    def follow_job_logs(
        self, project: str, job_id: str, *, rank: int = 0, poll: float = 0.2
    ) -> Iterator[str]:
        """The log's text as it is written, until the job ends: each attempt's whole,
        in turn (a retried job's later ones after a ``── attempt N ──`` line)."""
        attempt, offset = 1, 0
        over: s.Job | None = None  # the job, read once this attempt was over
        while True:
            piece = self.job_logs(project, job_id, offset=offset, attempt=attempt, rank=rank)
            if piece.text:
                yield piece.text
            if piece.next_offset != offset:
                offset = piece.next_offset
                continue
            if over is not None:  # read to its end after it was over: all of it is read
                if over.attempt <= attempt:
                    return
                attempt, offset, over = attempt + 1, 0, None
                yield f"── attempt {attempt} ──\n"
                continue
            job = self.get_job(project, job_id)
            if job.ended or job.attempt > attempt:
                over = job  # the next read finds what came before it ended
            else:
                time.sleep(poll)

    def wait_job(self, project: str, job_id: str, *, timeout: float | None = None) -> s.Job:
        """The job once it has ended (succeeded, failed, cancelled or lost); with
        ``timeout``, TimeoutError if it has not by then."""
        return wait_until(
            lambda: self.get_job(project, job_id),
            lambda job: job.ended,
            timeout,
            lambda job: f"job {job_id} is still {job.status} after {timeout} s",
        )

    def list_nodes(self) -> list[s.NodeUse]:
        return [s.NodeUse(**n) for n in self._transport.request("GET", "/api/v1/compute/nodes")]

    def list_pools(self) -> list[s.PoolUse]:
        return [s.PoolUse(**p) for p in self._transport.request("GET", "/api/v1/compute/pools")]

    def usage(
        self,
        *,
        by: str = "project",
        since: Moment | None = None,
        until: Moment | None = None,
        project: str | None = None,
        limit: int = 1000,
    ) -> s.Usage:
        """Resource-hours and cost by ``project``, ``user``, ``pool`` or ``job``.
        ``since``/``until``: seconds since the epoch, a datetime, an ISO date or time
        (``2025-01-31``), or a duration back from now (``7d``, ``12h``)."""
        params: dict[str, Any] = {"by": by, "limit": limit}
        if since is not None:
            params["since"] = moment(since, "since")
        if until is not None:
            params["until"] = moment(until, "until")
        if project is not None:
            params["project"] = project
        return s.Usage(**self._transport.request("GET", "/api/v1/usage", params=params))


def wait_until(
    get: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float | None,
    still: Callable[[T], str],
) -> T:
    """``get()`` again, backing off, until ``done`` says so; with ``timeout``,
    TimeoutError (``still`` says what it was still doing) if that takes longer."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = WAIT_POLL_FIRST_S
    while True:
        found = get()
        if done(found):
            return found
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(still(found))
        time.sleep(pause)
        pause = min(WAIT_POLL_MAX_S, pause * 1.5)


def moment(value: Moment, name: str = "time") -> float:
    """Seconds since the epoch from what a user gives; a naive datetime is local time."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        pass
    from plinth.compute.resources import parse_duration

    try:
        return time.time() - parse_duration(text)
    except InvalidInput:
        raise InvalidInput(
            f"{name} {value!r}: give an ISO date or time (2025-01-31, 2025-01-31T09:00) "
            "or a duration back from now (7d, 12h, 30m)"
        ) from None


def _duration(value: str | float) -> str:
    if isinstance(value, int | float):
        if value <= 0:
            raise InvalidInput("timeout: give a duration above zero")
        return f"{float(value):g}s"
    return value
