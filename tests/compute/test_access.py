"""With auth on, a job acts as its submitter through a token scoped to its project
(editor at most), revoked when the job ends; viewers cannot submit or cancel, and
outsiders see no job at all."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from plinth.client import Client
from plinth.errors import NotFound, PermissionDenied
from plinth.settings import Settings
from tests.compute.conftest import py, wait_for, with_compute


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
        code = (  # the token's id alone is no secret; the whole token is masked
            "import json, os\n"
            "keys = ('PLINTH_URL', 'PLINTH_HOME', 'PLINTH_RUN_ID')\n"
            "seen = {k: os.environ.get(k) for k in keys}\n"
            "print(json.dumps({**seen, 'token id': os.environ['PLINTH_TOKEN'].split('_')[1]}))\n"
            "print('token', os.environ['PLINTH_TOKEN'])\n"
        )
        with as_user(users["ed"]) as ed:
            job = ed.submit_job(project, py(code))
            done = ed.wait_job(project, job.id, timeout=20)
            log = ed.job_logs(project, job.id).text
            assert done.status == "succeeded" and done.user == "ed", log
        env = json.loads(log.splitlines()[0])
        assert env["PLINTH_URL"] == "http://127.0.0.1:8765" and env["PLINTH_HOME"] is None
        assert env["PLINTH_RUN_ID"] == done.run_id
        token_id = env["token id"]
        [token] = [t for t in root.list_tokens() if t.id == token_id]
        assert (token.user, token.project, token.role) == ("ed", project, "editor")
        assert token.revoked_at is not None

        with as_user(users["vic"]) as vic:
            assert vic.get_job(project, job.id).id == job.id
            # the job's token is masked in its log, as its secrets are: a viewer reads
            # the log, and the token acts as an editor until the job ends
            assert vic.job_logs(project, job.id).text.splitlines()[1:] == ["token ********"]
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


# What a job tries to read of what the server keeps; it prints one JSON line of results.
PRYING = r"""
import json, os, sys
home, key, server, other = sys.argv[1:5]
def read(path):
    try:
        with open(path, 'rb') as f:
            return f.read()[:64].decode('latin-1')
    except OSError as exc:
        return type(exc).__name__
def listed(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({
    'database': read(os.path.join(home, 'plinth.db')),
    'home': listed(home),
    'key': read(key),
    'server environ': read(f'/proc/{server}/environ'),
    'server root': listed(f'/proc/{server}/root/'),
    'other job': listed(other),
    'up from here': listed('../../..'),
    'own file': read('mine.txt'),
    'processes': len([p for p in os.listdir('/proc') if p.isdigit()]),
    'environment': sorted(os.environ),
    'TMPDIR': os.environ.get('TMPDIR'),
}))
# root in its namespaces (the server runs as root here): try to lift the cover
import subprocess
lifts = [['umount', '-l', home], ['unshare', '-Um', 'umount', '-l', home]]
for lift in [*lifts, ['unshare', '-Urm', 'umount', '-l', home]]:
    subprocess.run(lift, capture_output=True)
print(json.dumps({'database after umount': read(os.path.join(home, 'plinth.db'))}))

"""


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "not-sandboxed"])
def test_a_local_job_of_a_server_with_sign_in_sees_nothing_the_server_keeps(
    own_settings: Settings,
    project: str,
    tmp_path: Path,
    sandboxed: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With auth on, a job on a local pool is another tenant's code on the server's
    machine: it must not read the server's database, master key, process or other
    jobs' files, and still has its own working directory. The unsandboxed case shows
    what the sandbox takes away."""
    from plinth.core.crypto import MasterKey

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the server's, which jobs inherit
    key = tmp_path / "master.key"
    key.write_text(MasterKey.generate().to_text())
    key.chmod(0o600)
    settings = with_compute(own_settings, local_sandbox=sandboxed).model_copy(
        update={"master_key_file": key}
    )
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    with Client(settings=settings.model_copy(update={"token": root_token})) as root:
        root.create_run(project)
        code = "open('theirs.txt', 'w').write('theirs'); import time; time.sleep(60)"
        earlier = root.submit_job(project, py(code))  # another job, running meanwhile
        other = settings.home / "compute" / "jobs" / earlier.id / "1" / "work"
        wait_for(lambda: (other / "theirs.txt").exists(), what="the other job's file")
        workdir = tmp_path / "workdir"
        workdir.mkdir()
        (workdir / "mine.txt").write_text("mine")
        args = [str(settings.home), str(key), str(os.getpid()), str(other)]
        job = root.submit_job(project, py(PRYING) + args, workdir=workdir)
        done = root.wait_job(project, job.id, timeout=30)
        log = root.job_logs(project, job.id).text
        root.cancel_job(project, earlier.id)
        assert done.status == "succeeded", log
    seen = json.loads(log.strip().splitlines()[-2])
    seen |= json.loads(log.strip().splitlines()[-1])
    assert seen["own file"] == "mine"
    assert "PWD" not in seen["environment"] and "PLINTH_TOKEN" in seen["environment"]
    if sandboxed:
        assert seen["database"] == seen["database after umount"] == "FileNotFoundError"
        assert seen["home"] == ["compute"]  # the cover, with the way to its own folder
        assert seen["key"] == "FileNotFoundError"  # it lies in /tmp, and the job's is its own
        assert seen["server environ"] == seen["server root"] == "FileNotFoundError"
        assert seen["other job"] == "FileNotFoundError"
        assert seen["up from here"] == [job.id]
        assert seen["processes"] <= 3  # the sandbox's shell, the job (and a reader)
        assert seen["TMPDIR"] == "/tmp"  # its own
    else:  # what a job could read before
        if settings.database_url is None:  # SQLite, in the home
            assert seen["database"].startswith("SQLite format 3")
        assert seen["key"] == key.read_text()[:64]
        assert "compute" in seen["home"] and "artifacts" in seen["home"]
        assert seen["other job"] == ["theirs.txt"]
        assert seen["processes"] > 3
        assert seen["TMPDIR"] == str(tmp_path)


def test_a_sandboxed_job_is_stopped_as_any_other(own_settings: Settings, project: str) -> None:
    """A cancel's SIGTERM reaches a sandboxed job with its default action (it ends at
    once, not at the grace's SIGKILL), and a job's own handler runs to its end: the
    exit code recorded is the handler's, not the sandbox's."""
    settings = with_compute(own_settings, grace_seconds=30.0)
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    handler = (
        "import signal, sys, time\n"
        "def done(*_):\n"
        "    time.sleep(0.5); print('handled', flush=True); sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, done)\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    plain = "print('ready', flush=True); import time; time.sleep(60)"
    with Client(settings=settings.model_copy(update={"token": root_token})) as root:
        root.create_run(project)
        jobs = [root.submit_job(project, py(code)) for code in (handler, plain)]
        for job in jobs:
            wait_for(lambda job=job: "ready" in root.job_logs(project, job.id).text)
        began = time.monotonic()
        for job in jobs:
            root.cancel_job(project, job.id)
        ended = [root.wait_job(project, job.id, timeout=20) for job in jobs]
        assert time.monotonic() - began < 15  # neither waited for the grace's SIGKILL
        assert [j.status for j in ended] == ["cancelled", "cancelled"]
        assert ended[0].exit_code == 3 and "handled" in root.job_logs(project, jobs[0].id).text
        assert ended[1].exit_code == 128 + 15
