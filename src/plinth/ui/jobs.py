"""Pages of jobs: a project's jobs (the queue in the order it is served, what runs,
what ended lately), one job's page (what it asked for, its attempts, the tracked run,
and its log, followed live), and the compute overview (each pool's and node's CPUs,
GPUs and memory, held against capacity, and each pool's queue).

As on the other pages, every read goes through ``JobService`` as the request's
principal, so a page shows only what the API would: an outsider gets the same 404 as
for a job that does not exist, and a log's secret values come masked by the service.

A running job's log is followed by polling ``…/logs`` (jobs.js) from the byte offset
the page has reached; each answer is a small fragment with the next offset and the
job's status, and says when nothing more will come. The Cancel form (job_changes.py)
is offered only to whom the project lets write; its POST checks that again anyway.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from plinth.api.auth import requires
from plinth.api.context import services_of
from plinth.compute import schemas as s
from plinth.compute.service import JobService
from plinth.core.access import Need, Permission, allows
from plinth.core.names import PROJECT_NAME
from plinth.errors import InvalidInput, NotFound, PlinthError
from plinth.governance.projects import ProjectsService
from plinth.ui.forms import form_token, keep_form_token
from plinth.ui.routes import PageRoute, _service, render
from plinth.ui.views import size, url_segment

READ = [requires(Permission.PROJECT_READ)]
WRITE = [requires(Permission.PROJECT_WRITE)]
SIGNED = [requires(Permission.AUTHENTICATED)]  # as the API's nodes and pools
LOG_CHUNK = 256 << 10  # bytes of log a page or a poll carries at most
POLL_SECONDS = 1  # how often an open job page asks for more of its log
RECENT = 50  # ended jobs shown on a project's jobs page
QUEUE_MAX = 1000  # queued (and running) jobs listed at most

Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
# An id's form is documented, not enforced: one not of that form names no job (404).
JobId = Annotated[str, Path(max_length=32)]
Attempt = Annotated[int, Query(ge=0, le=1_000_000)]
Rank = Annotated[int, Query(ge=0, le=16_384)]

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def jobs_url(project: str) -> str:
    return f"/projects/{url_segment(project)}/jobs"


def job_url(project: str, job_id: str) -> str:
    return f"{jobs_url(project)}/{url_segment(job_id)}"


# pages ------------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse, dependencies=SIGNED)
def compute_page(request: Request) -> HTMLResponse:
    """Pools and nodes: capacity against what running jobs hold; each pool's queue."""
    svc = _service(request, JobService)
    projects = _service(request, ProjectsService).list_projects()
    return render(
        "jobs_overview.html",
        pools=svc.pools(),
        nodes=svc.nodes(),
        projects=projects,
        jobs_url=jobs_url,
        percent=percent,
        size=size,
    )


@router.get("/projects/{project}/jobs", response_class=HTMLResponse, dependencies=READ)
def jobs_page(
    request: Request,
    project: Project,
    status: Annotated[str, Query(max_length=20)] = "",
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    """Without ``status``: queued (in the order the queue serves them), running, and
    the latest ended. With it: that status's jobs, newest first, a page at a time."""
    if status and status not in s.STATUSES:
        raise InvalidInput(f"status: one of {', '.join(s.STATUSES)}; not {status!r}")
    svc = _service(request, JobService)
    context: dict[str, Any] = {"project": project, "status": status, "statuses": s.STATUSES}
    if status:
        page = svc.list_jobs(project, s.JobsQuery(status=status, limit=100, cursor=cursor))
        next_url = f"{jobs_url(project)}?status={status}&cursor={page.next_cursor}"
        context.update(listed=page.jobs, next_url=next_url if page.next_cursor else None)
    else:
        context.update(listed=None, next_url=None, **_sections(svc, project))
    return render("jobs.html", **context, job_url=job_url, jobs_url=jobs_url, **_helpers())


@router.get("/projects/{project}/jobs/{job_id}", response_class=HTMLResponse, dependencies=READ)
def show_job(
    request: Request, project: Project, job_id: JobId, attempt: Attempt = 0, rank: Rank = 0
) -> Response:
    return job_page(request, project, job_id, attempt=attempt, rank=rank)


@router.get(
    "/projects/{project}/jobs/{job_id}/logs", response_class=HTMLResponse, dependencies=READ
)
def logs_fragment(
    request: Request,
    project: Project,
    job_id: JobId,
    offset: Annotated[int, Query(ge=0, lt=2**62)] = 0,
    attempt: Attempt = 0,
    rank: Rank = 0,
    latest: Annotated[bool, Query()] = True,
) -> HTMLResponse:
    """The log from ``offset`` of ``attempt`` (0: not started yet); with ``latest``,
    moving on to a newer attempt once this one's log is read to its end."""
    svc = _service(request, JobService)
    job, piece = read_log(svc, project, job_id, attempt, offset, rank, latest=latest)
    return render("_job_log.html", job=job, piece=piece)


def job_page(
    request: Request,
    project: str,
    job_id: str,
    *,
    attempt: int = 0,
    rank: int = 0,
    refusal: PlinthError | None = None,
) -> Response:
    """The page; after a refused cancel, with why (and the service's status)."""
    svc = _service(request, JobService)
    latest = attempt == 0  # read_log takes attempt 0 as the latest, and checks the others
    # The page shows the job as read with its log: one that ended in between shows so.
    job, piece = read_log(svc, project, job_id, attempt, 0, rank, latest=latest)
    token = form_token(request)
    here = job_url(project, job_id)
    response = render(
        "job.html",
        refusal.status_code if refusal else 200,
        job=job,
        piece=piece,
        rank=rank,
        following_latest=latest,
        may_cancel=not job.ended and may_write(request, project),
        refusal=refusal.message if refusal else None,
        csrf=token,
        here=here,
        poll_seconds=POLL_SECONDS,
        jobs_url=jobs_url,
        **_helpers(),
    )
    return keep_form_token(request, response, token)


# the log, a piece at a time ------------------------------------------------------------


@dataclass
class LogPiece:
    """What a read of the log brings: its text, where to ask next, and whether more
    can come (``done``: the job ended, or a newer attempt took over, and all is read)."""

    text: str
    attempt: int
    offset: int
    next_offset: int
    done: bool


def read_log(
    svc: Any, project: str, job_id: str, attempt: int, offset: int, rank: int, *, latest: bool
) -> tuple[s.Job, LogPiece]:
    job: s.Job = svc.get_job(project, job_id)
    if attempt > job.attempt:
        raise InvalidInput(f"attempt: this job has started {job.attempt} time(s), not {attempt}")
    heading = ""
    if latest and attempt < job.attempt:
        if attempt > 0:  # the rest of the older attempt first, then the newer one
            older = _logs(svc, project, job_id, attempt, offset, rank)
            if older.next_offset > offset:
                return job, LogPiece(older.text, attempt, offset, older.next_offset, False)
            heading = f"── attempt {job.attempt} ──\n"
        attempt, offset = job.attempt, 0
    if attempt == 0:  # not started yet: nothing to read
        return job, LogPiece("", 0, offset, offset, job.ended)
    logs = _logs(svc, project, job_id, attempt, offset, rank)
    if logs.ended and not job.ended:  # it ended since: say so with the log's end, or a
        job = svc.get_job(project, job_id)  # page would stop following, still "running"
    # An ended attempt's log comes whole, not in lines: a read short of the chunk
    # reached its end.
    at_end = logs.next_offset - offset < LOG_CHUNK
    if latest:  # all read once the job has ended and no newer attempt has begun
        done = at_end and logs.ended and attempt == job.attempt
    else:  # this attempt's log only
        done = at_end and (logs.ended or attempt < job.attempt)
    return job, LogPiece(heading + logs.text, attempt, offset, logs.next_offset, done)


def _logs(svc: Any, project: str, job_id: str, attempt: int, offset: int, rank: int) -> s.JobLogs:
    query = s.JobLogsQuery(offset=offset, limit=LOG_CHUNK, attempt=attempt, rank=rank)
    logs: s.JobLogs = svc.job_logs(project, job_id, query)
    return logs


# who may cancel, and what a page shows -------------------------------------------------


def may_write(request: Request, project: str) -> bool:
    """Whether the caller may change the project's jobs: what decides if the page
    offers Cancel (the service decides again when it is pressed). Asked without
    auditing: not offering a button is no refusal."""
    principal = request.state.principal
    if not allows(principal, Permission.PROJECT_WRITE):
        return False
    platform = services_of(request).platform
    with platform.db.read() as conn:
        pid = platform.projects.id_of(conn, project)
        try:
            hidden = NotFound(f"no project {project!r}")
            platform.projects.check(
                conn, pid, principal, Need.WRITE, hidden, project=project, record=False
            )
        except PlinthError:
            return False
    return True


def _sections(svc: Any, project: str) -> dict[str, list[s.Job]]:
    def listed(status: str, limit: int = QUEUE_MAX) -> list[s.Job]:
        jobs: list[s.Job] = svc.list_jobs(project, s.JobsQuery(status=status, limit=limit)).jobs
        return jobs

    # The queue serves higher priorities first, and first come first within one.
    queued = sorted(listed("queued"), key=lambda j: (-j.priority, j.submitted_at))
    running = listed("running") + listed("preempted")
    recent = svc.list_jobs(project, s.JobsQuery(limit=RECENT * 4)).jobs
    ended = [j for j in recent if j.ended][:RECENT]
    return {"queued": queued, "running": running, "ended": ended}


def _helpers() -> dict[str, Any]:
    return {"resources": resources, "age": age, "size": size, "command": command}


def command(job: s.Job) -> str:
    """The argv as one would type it in a shell (quoted), for reading only: a job is
    never run through a shell."""
    return shlex.join(job.argv)


def resources(job: s.Job) -> str:
    """``2 CPU · 4.0 GiB · 1 GPU`` per process; ``, 2 nodes x 4`` for a gang."""
    parts = [f"{job.cpus:g} CPU"]
    if job.memory_bytes:
        parts.append(size(job.memory_bytes))
    if job.gpus:
        parts.append(f"{job.gpus} GPU")
    text = " · ".join(parts)
    if job.nodes > 1 or job.procs_per_node > 1:
        text += f", {job.nodes} node{'s' if job.nodes > 1 else ''} x {job.procs_per_node}"
    return text


def age(timestamp: float | None, now: float | None = None) -> str:
    """How long ago, short: ``12 s``, ``3 min``, ``2 h``, ``4 d``."""
    if timestamp is None:
        return "—"
    seconds = max(0.0, (now or time.time()) - timestamp)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{int(seconds // length)} {unit}"
    return f"{int(seconds)} s"


def percent(used: float, total: float) -> float:
    """Of a bar's width; 0 for nothing to hold, at most 100."""
    return 0.0 if total <= 0 else round(min(100.0, 100.0 * used / total), 1)
