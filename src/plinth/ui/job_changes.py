"""The change a person makes on a job's page: cancel it.

The form posts here; the route checks the form token (forms.py), reads the job (an
outsider, or a job that is not there, gets the uniform 404 page), then makes the same
service call the API, the SDK and the CLI make, as the request's principal: the
service decides who may cancel, and audits it. A refusal (a viewer, an expired form)
is shown on the job's page with the service's status and changes nothing; an accepted
cancel redirects back to the page, which follows the job until it has ended.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from plinth.compute.service import JobService
from plinth.errors import PermissionDenied
from plinth.ui.forms import SHOWN_ON_PAGE, CsrfField, check_form_token
from plinth.ui.jobs import WRITE, JobId, Project, job_page, job_url
from plinth.ui.routes import PageRoute, _service

router = APIRouter(include_in_schema=False, route_class=PageRoute)


@router.post("/projects/{project}/jobs/{job_id}/cancel", dependencies=WRITE)
def cancel(request: Request, project: Project, job_id: JobId, csrf: CsrfField = "") -> Response:
    """A queued job ends cancelled at once; a running one is stopped, then ends so."""
    try:
        check_form_token(request, csrf)
    except PermissionDenied as exc:
        return job_page(request, project, job_id, refusal=exc)
    service = _service(request, JobService)
    service.get_job(project, job_id)  # read first: the uniform 404 for an outsider
    try:
        service.cancel_job(project, job_id)
    except SHOWN_ON_PAGE as exc:
        return job_page(request, project, job_id, refusal=exc)
    return RedirectResponse(job_url(project, job_id), status_code=303)
