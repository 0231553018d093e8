"""The jobs' pages: a project's jobs (queue, running, ended; a status filter), a job's
page (its fields, attempts, escaped argv and log, the tracked run, Cancel offered only
to editors), the log fragment the page polls, the cancel form (its token, the
service's refusals), and the compute overview. Jobs run as real processes on the local
executor of one declared node (tests/compute/conftest.py); waits have deadlines."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from plinth.client import Client
from plinth.compute import schemas as s
from plinth.compute.service import JobService
from plinth.core.crypto import MasterKey
from plinth.ui.forms import FORM_CSRF_COOKIE
from plinth.ui.jobs import age, percent, resources
from tests.compute.conftest import compute, py, wait_for, wait_status
from tests.conftest import make_settings, raw_http

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
SECRET = "s3cr3t-value"
PAGE = "/projects/lab/jobs"


@dataclass
class Site:
    root: Client
    http: httpx.Client  # root's, with its token
    viewer: httpx.Client
    outsider: httpx.Client
    done: s.Job  # succeeded; its argv and its log hold EVIL, its log a secret's value
    running: s.Job  # printed "up", then sleeps


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A home with logins: root (admin), a viewer of ``lab``, an outsider; a finished
    job and a running one in ``lab``."""
    tmp = tmp_path_factory.mktemp("jobs-ui")
    key = SecretStr(MasterKey.generate().to_text())  # secrets are sealed under it
    settings = make_settings(tmp / "home", compute=compute(), master_key=key)
    with Client(settings=settings) as anonymous:
        token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    root = as_user(token)
    viewer = as_user(root.create_user("viewer").token.token)
    outsider = as_user(root.create_user("outsider").token.token)
    root.create_run("lab", name="first")
    root.add_member("lab", "viewer", "viewer")
    root.set_secret("lab", "API_KEY", SECRET)
    code = f"import os; print({EVIL!r}); print('key is', os.environ['API_KEY'])"
    done = root.submit_job("lab", py(code), secrets=["API_KEY"])
    running = root.submit_job("lab", py("import time; print('up', flush=True); time.sleep(60)"))
    done = root.wait_job("lab", done.id, timeout=20)
    wait_for(lambda: root.job_logs("lab", running.id).text == "up\n", what="the job's output")
    try:
        yield Site(root, raw_http(root), raw_http(viewer), raw_http(outsider), done, running)
    finally:
        for job in root.list_jobs("lab").jobs:
            if not job.ended:
                root.cancel_job("lab", job.id)
        for c in (outsider, viewer, root):
            c.close()


def test_the_jobs_page_lists_running_and_ended_with_a_tab(site: Site) -> None:
    page = site.http.get(PAGE)
    assert page.status_code == 200
    text = page.text
    assert f'href="{PAGE}" aria-current="page">Jobs</a>' in text
    running = _section(text, "running")
    assert f'href="{PAGE}/{site.running.id}"' in running and "status-running" in running
    ended = _section(text, "ended")
    assert f'href="{PAGE}/{site.done.id}"' in ended and "status-succeeded" in ended
    assert "1 CPU" in running and ">n1<" in running
    assert EVIL not in text and "&lt;script&gt;" in text  # the argv, escaped
    assert "Nothing waits." in text
    assert 'href="/projects/lab/jobs"' in site.http.get("/projects/lab").text  # the tab


def test_the_status_filter_lists_one_status(site: Site) -> None:
    text = site.http.get(PAGE, params={"status": "succeeded"}).text
    assert site.done.id in text and site.running.id not in text
    assert '<option value="succeeded" selected>' in text
    bad = site.http.get(PAGE, params={"status": "<b>nope</b>"})
    assert bad.status_code == 400 and "<b>nope</b>" not in bad.text


def test_a_finished_jobs_page_shows_fields_attempts_run_and_the_whole_log(site: Site) -> None:
    page = site.http.get(f"{PAGE}/{site.done.id}")
    assert page.status_code == 200
    text = page.text
    assert '<span id="job-status" class="status status-succeeded">succeeded</span>' in text
    assert f'href="/runs/{site.done.run_id}"' in text  # the tracked run
    assert EVIL not in text
    assert text.count(ESCAPED) == 2  # in the argv and in the log
    log = _log(text)
    assert log == f"{ESCAPED}\nkey is ********\n"  # the secret masked by the service
    assert SECRET not in text
    assert "data-follow" not in _log_tag(text)  # ended and read whole: nothing to poll
    assert "API_KEY" in text and '<table class="grid-table attempts">' in text
    assert 'id="cancel-form"' not in text  # an ended job has nothing to cancel


def test_the_log_fragment_follows_a_running_job(site: Site) -> None:
    url = f"{PAGE}/{site.running.id}"
    page = site.http.get(url).text
    assert _log(page) == "up\n" and "data-follow" in _log_tag(page)
    assert 'data-offset="3"' in _log_tag(page) and 'data-attempt="1"' in _log_tag(page)
    first = site.viewer.get(f"{url}/logs", params={"offset": 0, "attempt": 1})
    assert first.status_code == 200
    assert _chunk(first.text) == ("up\n", "3", "false", "running")
    more = site.viewer.get(f"{url}/logs", params={"offset": 3, "attempt": 1})
    assert _chunk(more.text) == ("", "3", "false", "running")


def test_the_log_fragment_of_an_ended_job_says_it_is_done(site: Site) -> None:
    url = f"{PAGE}/{site.done.id}/logs"
    whole = site.viewer.get(url, params={"attempt": 0})  # from the start, latest attempt
    text, end, done, status = _chunk(whole.text)
    assert text == f"{ESCAPED}\nkey is ********\n" and done == "true" and status == "succeeded"
    after = site.viewer.get(url, params={"attempt": 1, "offset": end})
    assert _chunk(after.text) == ("", end, "true", "succeeded")
    bad = site.viewer.get(url, params={"attempt": 9})
    assert bad.status_code == 400


def test_a_retried_jobs_attempts_each_show_their_log(site: Site) -> None:
    code = (
        "import os,sys; first=os.environ['PLINTH_JOB_ATTEMPT'] == '1'; "
        "print('first' if first else 'second'); sys.exit(1 if first else 0)"
    )
    job = site.root.submit_job("lab", py(code), retries=1)
    job = site.root.wait_job("lab", job.id, timeout=20)
    assert (job.status, job.attempt) == ("succeeded", 2)
    url = f"{PAGE}/{job.id}"
    latest = site.http.get(url).text
    assert _log(latest) == "second\n" and f'href="{url}?attempt=1"' in latest
    assert _log(site.http.get(url, params={"attempt": 1}).text) == "first\n"
    # a page that followed attempt 1 to its end moves on to attempt 2, marked
    moved = site.http.get(f"{url}/logs", params={"attempt": 1, "offset": 6})
    assert _chunk(moved.text) == ("── attempt 2 ──\nsecond\n", "7", "true", "succeeded")
    assert 'data-attempt="2"' in moved.text
    # one chosen attempt (latest=false) stays on it
    kept = site.http.get(f"{url}/logs", params={"attempt": 1, "offset": 6, "latest": "false"})
    assert _chunk(kept.text) == ("", "6", "true", "succeeded")


def test_a_viewer_sees_no_cancel_button_and_is_refused(site: Site) -> None:
    url = f"{PAGE}/{site.running.id}"
    assert 'id="cancel-form"' in site.http.get(url).text  # root may cancel
    page = site.viewer.get(url)
    assert page.status_code == 200 and 'id="cancel-form"' not in page.text
    refused = site.viewer.post(f"{url}/cancel")
    assert refused.status_code == 403 and "Not changed" in refused.text
    assert "viewer" in refused.text
    assert site.root.get_job("lab", site.running.id).status == "running"


def test_an_outsider_gets_404_pages_everywhere(site: Site) -> None:
    job = site.running.id
    for url in (PAGE, f"{PAGE}/{job}", f"{PAGE}/{job}/logs", f"{PAGE}/nope", "/projects/no/jobs"):
        page = site.outsider.get(url)
        assert page.status_code == 404 and "Not found" in page.text, url
    cancel = site.outsider.post(f"{PAGE}/{job}/cancel")
    assert cancel.status_code == 404
    assert site.root.get_job("lab", job).status == "running"
    assert site.http.get(f"{PAGE}/{'0' * 32}").status_code == 404


def test_an_editor_cancels_a_running_job_from_its_page(site: Site) -> None:
    job = site.root.submit_job("lab", py("import time; print('on', flush=True); time.sleep(60)"))
    wait_status(site.root, "lab", job.id, "running")
    url = f"{PAGE}/{job.id}"
    done = site.http.post(f"{url}/cancel")
    assert done.status_code == 303 and done.headers["location"] == url
    ended = site.root.wait_job("lab", job.id, timeout=20)
    assert ended.status == "cancelled"
    page = site.http.get(url).text
    assert "status-cancelled" in page and 'id="cancel-form"' not in page


@pytest.mark.parametrize("read", ["page", "fragment"])
def test_a_job_that_ends_between_its_reads_is_shown_ended(
    site: Site, read: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page reads the job, then its log: a job that ends in between must show its
    end with the log's end, or the page stops following while it says "running"."""
    job = site.root.submit_job("lab", py("import time; print('on', flush=True); time.sleep(60)"))
    wait_for(lambda: site.root.job_logs("lab", job.id).text == "on\n", what="the job's output")
    job_logs = JobService.job_logs

    def ending_first(self: JobService, project: str, job_id: str, *a: Any, **kw: Any) -> Any:
        if job_id == job.id and not self.get_job(project, job_id, principal=kw["principal"]).ended:
            self.cancel_job(project, job_id, principal=kw["principal"])
            wait_for(lambda: self.get_job(project, job_id, principal=kw["principal"]).ended)
        return job_logs(self, project, job_id, *a, **kw)

    monkeypatch.setattr(JobService, "job_logs", ending_first)
    url = f"{PAGE}/{job.id}"
    if read == "page":
        page = site.http.get(url).text
        assert "status-cancelled" in page and "data-follow" not in _log_tag(page)
        assert 'id="cancel-form"' not in page
    else:
        chunk = site.http.get(f"{url}/logs", params={"offset": 0, "attempt": 1}).text
        assert _chunk(chunk)[2:] == ("true", "cancelled")


def test_the_compute_overview_shows_pools_nodes_and_use(site: Site) -> None:
    page = site.viewer.get("/jobs")
    assert page.status_code == 200
    text = page.text
    pools = text.split('<table class="grid-table pools">')[1].split("</table>")[0]
    assert ">local<" in pools and '<td class="num running">1</td>' in pools
    nodes = text.split('<table class="grid-table nodes">')[1].split("</table>")[0]
    assert ">n1<" in nodes and "1 / 4" in nodes and 'class="use-fill w-25"' in nodes  # 1 of 4 CPUs
    assert "0 / 2" in nodes  # GPUs
    assert 'href="/projects/lab/jobs"' in text  # the viewer's project
    assert '<a href="/jobs">Jobs</a>' in text  # in the navigation


def test_a_browser_form_needs_the_form_token(tmp_path: Path) -> None:
    """Without logins, the form's own token (cookie + field) is what stops another
    site's page from cancelling a job; a queued job ends cancelled at once."""
    held = compute(dispatch=False)  # nothing starts: the jobs stay queued
    with Client(settings=make_settings(tmp_path / "home", compute=held)) as client:
        low = client.submit_job("lab", py("pass"), priority=0)
        high = client.submit_job("lab", py("pass"), priority=5)
        later = client.submit_job("lab", py("pass"), priority=0)
        http = raw_http(client)
        with httpx.Client(transport=http._transport, base_url=http.base_url) as browser:
            queue = _section(browser.get(PAGE).text, "queued")
            order = re.findall(r'href="/projects/lab/jobs/([0-9a-f]{32})"', queue)
            assert order == [high.id, low.id, later.id]  # priority, then first come
            url = f"{PAGE}/{low.id}"
            forged = browser.post(f"{url}/cancel", data={"csrf": "forged"})
            assert forged.status_code == 403 and "form has expired" in forged.text
            assert browser.post(f"{url}/cancel").status_code == 403  # no token at all
            assert client.get_job("lab", low.id).status == "queued"
            page = browser.get(url)
            field = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert field is not None and browser.cookies.get(FORM_CSRF_COOKIE) == field.group(1)
            done = browser.post(f"{url}/cancel", data={"csrf": field.group(1)})
            assert done.status_code == 303
        assert client.get_job("lab", low.id).status == "cancelled"


def test_formatting_helpers() -> None:
    assert [age(100.0 - d, now=100.0) for d in (5, 125, 7300)] == ["5 s", "2 min", "2 h"]
    assert age(None) == "—"
    assert percent(1, 4) == 25.0 and percent(3, 0) == 0.0 and percent(9, 4) == 100.0
    job = s.Job.model_validate(
        {
            **_job_fields(),
            "cpus": 2.0,
            "memory_bytes": 4 << 30,
            "gpus": 1,
            "nodes": 2,
            "procs_per_node": 4,
        }
    )
    assert resources(job) == "2 CPU · 4.0 GiB · 1 GPU, 2 nodes x 4"


# helpers -------------------------------------------------------------------------------


def _section(text: str, kind: str) -> str:
    """The table of one section of the jobs page (queued, running, ended)."""
    found = re.search(rf'<table class="grid-table jobs jobs-{kind}">(.*?)</table>', text, re.S)
    return found.group(1) if found else ""


def _log_tag(text: str) -> str:
    found = re.search(r'<pre id="job-log"[^>]*>', text)
    assert found is not None
    return found.group(0)


def _log(text: str) -> str:
    found = re.search(r'<pre id="job-log"[^>]*>(.*?)</pre>', text, re.S)
    assert found is not None
    return found.group(1)


def _chunk(text: str) -> tuple[str, str, str, str]:
    """A fragment's text, next offset, whether it is done, and the job's status."""
    found = re.search(
        r'<pre class="log-chunk" data-attempt="\d+" data-next-offset="(\d+)" '
        r'data-done="(\w+)" data-status="(\w+)">(.*?)</pre>',
        text,
        re.S,
    )
    assert found is not None, text
    return found.group(4), found.group(1), found.group(2), found.group(3)


def _job_fields() -> dict[str, object]:
    return {
        "id": "0" * 32,
        "project": "lab",
        "user": "u",
        "argv": ["true"],
        "env": {},
        "secrets": [],
        "pool": "local",
        "priority": 0,
        "retries": 0,
        "retries_used": 0,
        "disruptions": 0,
        "timeout_seconds": None,
        "status": "queued",
        "exit_code": None,
        "reason": None,
        "attempt": 0,
        "submitted_at": 0.0,
        "started_at": None,
        "ended_at": None,
        "retry_at": None,
        "snapshot": None,
        "run_id": None,
        "node": None,
    }
