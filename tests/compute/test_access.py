"""With auth on, a job acts as its submitter through a token scoped to its project
(editor at most), revoked when the job ends; viewers cannot submit or cancel, and
outsiders see no job at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plinth.client import Client
from plinth.errors import NotFound, PermissionDenied
from plinth.settings import Settings
from tests.compute.conftest import py, with_compute


def test_a_job_gets_a_scoped_token_revoked_at_its_end(
    own_settings: Settings, project: str, tmp_path: Path
) -> None:
    settings = with_compute(own_settings)
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    with as_user(root_token) as root:
        root.create_run(project)
        users = {name: root.create_user(name).token.token for name in ("ed", "vic", "out")}
        root.add_member(project, "ed", "editor")
        root.add_member(project, "vic", "viewer")
        seen = tmp_path / "seen.json"
        code = (
            "import json, os\n"
            "keys = ('PLINTH_URL', 'PLINTH_TOKEN', 'PLINTH_HOME', 'PLINTH_RUN_ID')\n"
            f"json.dump({{k: os.environ.get(k) for k in keys}}, open({str(seen)!r}, 'w'))\n"
            "print('token', os.environ['PLINTH_TOKEN'])\n"
        )
        with as_user(users["ed"]) as ed:
            job = ed.submit_job(project, py(code))
            done = ed.wait_job(project, job.id, timeout=20)
            assert done.status == "succeeded" and done.user == "ed"
        env = json.loads(seen.read_text())
        assert env["PLINTH_URL"] == "http://127.0.0.1:8765" and env["PLINTH_HOME"] is None
        assert env["PLINTH_RUN_ID"] == done.run_id
        token_id = env["PLINTH_TOKEN"].split("_")[1]
        [token] = [t for t in root.list_tokens() if t.id == token_id]
        assert (token.user, token.project, token.role) == ("ed", project, "editor")
        assert token.revoked_at is not None

        with as_user(users["vic"]) as vic:
            assert vic.get_job(project, job.id).id == job.id
            # the job's token is masked in its log, as its secrets are: a viewer reads
            # the log, and the token acts as an editor until the job ends
            assert vic.job_logs(project, job.id).text == "token ********\n"
            with pytest.raises(PermissionDenied):
                vic.submit_job(project, py("pass"))
            with pytest.raises(PermissionDenied):
                vic.cancel_job(project, job.id)
        with as_user(users["out"]) as out:
            for call in (
                lambda: out.get_job(project, job.id),
                lambda: out.cancel_job(project, job.id),
                lambda: out.job_logs(project, job.id),
                lambda: out.list_jobs(project),
            ):
                with pytest.raises(NotFound):
                    call()
