"""Jobs end to end through the SDK on the real local executor: submit, run, exit
codes, retries, cancel, timeout, logs, the linked run, env and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from plinth.client import Client
from plinth.compute import launch
from plinth.core.crypto import MasterKey
from plinth.errors import InvalidInput, NotFound
from plinth.settings import Settings
from tests.compute.conftest import PY, py, wait_for, wait_status, with_compute

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_a_job_runs_to_its_exit_code(jobs: Client, project: str) -> None:
    job = jobs.submit_job(project, py("print('hello'); raise SystemExit(0)"))
    assert job.status in ("queued", "running") and job.attempt in (0, 1)
    done = jobs.wait_job(project, job.id, timeout=20)
    assert (done.status, done.exit_code, done.attempt) == ("succeeded", 0, 1)
    assert done.started_at and done.ended_at and done.node == "n1"
    assert jobs.job_logs(project, job.id).text == "hello\n"
    [listed] = jobs.list_jobs(project).jobs
    assert listed.id == job.id


def test_a_unique_prefix_of_a_job_id_names_it(jobs: Client, project: str) -> None:
    job = jobs.submit_job(project, py("print('hi')"))
    assert jobs.get_job(project, job.id[:8]).id == job.id  # as `jobs list` shows it
    assert jobs.wait_job(project, job.id[:12], timeout=20).status == "succeeded"
    assert jobs.job_logs(project, job.id[:8]).text == "hi\n"
    other = f"{(int(job.id[:8], 16) + 1) % 16**8:08x}"  # a prefix of no job here
    shouted = job.id[:8].upper()  # unchanged when the prefix is all digits
    for unknown in {other, job.id[:7], shouted, "%" * 8} - {job.id[:8]}:
        with pytest.raises((NotFound, InvalidInput)):
            jobs.get_job(project, unknown)
    with pytest.raises(NotFound):  # looked up in a project that is not its own
        jobs.get_job(f"{project}-other", job.id[:8])


def test_a_failing_job_fails_with_its_code(jobs: Client, project: str) -> None:
    job = jobs.submit_job(project, py("import sys; sys.exit(3)"))
    done = jobs.wait_job(project, job.id, timeout=20)
    assert (done.status, done.exit_code, done.attempt, done.retries_used) == ("failed", 3, 1, 0)


def test_retries_then_success(jobs: Client, project: str, tmp_path: Path) -> None:
    marker = tmp_path / "tries"
    code = (
        f"import pathlib,sys; p=pathlib.Path({str(marker)!r}); "
        "n=len(p.read_text()) if p.exists() else 0; p.write_text('x'*(n+1)); "
        "sys.exit(0 if n >= 2 else 1)"
    )
    job = jobs.submit_job(project, py(code), retries=5)
    done = jobs.wait_job(project, job.id, timeout=20)
    assert (done.status, done.attempt, done.retries_used, done.exit_code) == ("succeeded", 3, 2, 0)


def test_retries_run_out(jobs: Client, project: str) -> None:
    job = jobs.submit_job(project, py("raise SystemExit(2)"), retries=2)
    done = jobs.wait_job(project, job.id, timeout=20)
    assert (done.status, done.attempt, done.retries_used, done.exit_code) == ("failed", 3, 2, 2)


def test_cancel_a_queued_and_a_running_job(jobs: Client, project: str) -> None:
    running = jobs.submit_job(project, py("import time; print('up', flush=True); time.sleep(60)"))
    wait_for(lambda: jobs.job_logs(project, running.id).text == "up\n", what="the job's output")
    # the node has 2 GPU slots: a third GPU job waits in the queue
    hogs = [jobs.submit_job(project, py("import time; time.sleep(60)"), gpus=1) for _ in range(2)]
    for hog in hogs:
        wait_status(jobs, project, hog.id, "running")
    queued = jobs.submit_job(project, py("pass"), gpus=1)
    assert jobs.get_job(project, queued.id).status == "queued"
    cancelled = jobs.cancel_job(project, queued.id)
    assert cancelled.status == "cancelled" and cancelled.attempt == 0
    for job in (running, *hogs):
        jobs.cancel_job(project, job.id)
    for job in (running, *hogs):
        done = jobs.wait_job(project, job.id, timeout=20)
        assert done.status == "cancelled" and done.exit_code == 128 + 15
    assert jobs.cancel_job(project, running.id).status == "cancelled"  # again: no change


def test_a_job_over_its_timeout_is_stopped(jobs: Client, project: str) -> None:
    job = jobs.submit_job(project, py("import time; time.sleep(60)"), timeout=0.5, retries=3)
    done = jobs.wait_job(project, job.id, timeout=20)
    assert done.status == "failed" and done.reason and "timed out" in done.reason
    assert done.attempt == 1  # a timeout is not retried


def test_logs_stream_while_running_and_stay_after(jobs: Client, project: str) -> None:
    code = (
        "import sys,time\n"
        "print('first', flush=True)\n"
        "sys.stdin = None\n"
        "import os\n"
        "while not os.path.exists('go'): time.sleep(0.02)\n"
        "print('second', flush=True)\n"
        "sys.stderr.write('partial-line')\n"
    )
    job = jobs.submit_job(project, py(code))
    first = wait_for(lambda: jobs.job_logs(project, job.id).text or None, what="output")
    assert first == "first\n"
    piece = jobs.job_logs(project, job.id)
    assert not piece.ended and piece.next_offset == len(b"first\n")
    # let it finish: the job waits for a file in its working directory
    job_dir = Path(jobs.settings.home) / "compute" / "jobs" / job.id / "1" / "work"
    (job_dir / "go").write_text("")
    jobs.wait_job(project, job.id, timeout=20)
    rest = jobs.job_logs(project, job.id, offset=piece.next_offset)
    assert rest.text == "second\npartial-line" and rest.ended
    followed = "".join(jobs.follow_job_logs(project, job.id))
    assert followed == "first\nsecond\npartial-line"


def test_following_a_retried_job_shows_every_attempts_log(jobs: Client, project: str) -> None:
    code = (
        "import os\n"
        "n = os.environ['PLINTH_JOB_ATTEMPT']\n"
        "print('attempt', n, 'with a longer line than the next' if n == '1' else '')\n"
        "raise SystemExit(0 if n == '3' else 1)\n"
    )
    job = jobs.submit_job(project, py(code), retries=2)
    followed = "".join(jobs.follow_job_logs(project, job.id, poll=0.02))
    assert followed == (
        "attempt 1 with a longer line than the next\n"
        "── attempt 2 ──\nattempt 2 \n"
        "── attempt 3 ──\nattempt 3 \n"
    )
    assert jobs.get_job(project, job.id).status == "succeeded"


def test_the_job_logs_to_its_linked_run(jobs: Client, project: str) -> None:
    code = (
        "import plinth\n"
        "with plinth.start_run() as run:\n"
        "    run.log({'loss': 0.5}, step=1)\n"
        "    print(run.info.id)\n"
    )
    job = jobs.submit_job(project, py(code), env={"PYTHONPATH": SRC})
    done = jobs.wait_job(project, job.id, timeout=60)
    assert done.status == "succeeded", jobs.job_logs(project, job.id).text
    assert done.run_id and jobs.job_logs(project, job.id).text.strip() == done.run_id
    run = jobs.get_run(done.run_id)
    assert run.project == project and run.tags["plinth.job"] == job.id
    assert run.status == "finished"
    [point] = jobs.metric_history(done.run_id, "loss")
    assert point.value == 0.5


def test_env_and_secrets_reach_the_job_not_its_logs_nor_the_audit(
    settings: Settings, project: str, tmp_path: Path
) -> None:
    key = SecretStr(MasterKey.generate().to_text())  # secrets are sealed under it
    with Client(settings=with_compute(settings).model_copy(update={"master_key": key})) as jobs:
        _env_and_secrets(jobs, project, tmp_path)


def _env_and_secrets(jobs: Client, project: str, tmp_path: Path) -> None:
    jobs.create_run(project)  # the project
    jobs.set_secret(project, "API_KEY", "s3cr3t-value")
    out = tmp_path / "seen"
    code = (
        "import os, pathlib\n"
        f"pathlib.Path({str(out)!r}).write_text(os.environ['API_KEY'] + ' ' + os.environ['MODE'])\n"
        "print('key is', os.environ['API_KEY'])\n"
    )
    job = jobs.submit_job(project, py(code), env={"MODE": "fast"}, secrets=["API_KEY"])
    done = jobs.wait_job(project, job.id, timeout=20)
    assert done.status == "succeeded"
    assert out.read_text() == "s3cr3t-value fast"
    assert jobs.job_logs(project, job.id).text == "key is ********\n"
    trail = repr([e.model_dump() for e in jobs.audit_events(project=project)])
    assert "s3cr3t-value" not in trail and "jobs.submit" in trail
    # no window of the log, however placed, shows a piece of the value
    secret = "s3cr3t-value"
    pieces = {secret[i : i + 3] for i in range(len(secret) - 2)}
    inside = range(len("key is "), len("key is ") + len(secret))
    for offset in range(len("key is s3cr3t-value\n")):
        for limit in (1, 2, 5, 9):
            text = jobs.job_logs(project, job.id, offset=offset, limit=limit).text
            assert not any(piece in text for piece in pieces), (offset, limit, text)
            if offset in inside and offset + limit <= inside.stop:
                assert text == "********", (offset, limit, text)
    # the value handed to the job stays masked after the secret is changed or deleted
    jobs.set_secret(project, "API_KEY", "another-value")
    assert jobs.job_logs(project, job.id).text == "key is ********\n"
    jobs.delete_secret(project, "API_KEY")
    assert jobs.job_logs(project, job.id).text == "key is ********\n"


KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
PASSWORD = "SuperSecretValue123"
TOKEN = "plt_0123456789abcdef_" + "Ab-9" * 10 + "xyz"  # an API token's shape


def test_a_running_jobs_log_shows_no_piece_of_a_secret_however_read(
    settings: Settings, project: str
) -> None:
    key = SecretStr(MasterKey.generate().to_text())
    with Client(settings=with_compute(settings).model_copy(update={"master_key": key})) as jobs:
        _running_log(jobs, project)


def _running_log(jobs: Client, project: str) -> None:
    jobs.create_run(project)  # the project
    jobs.set_secret(project, "KEY", KEY)
    jobs.set_secret(project, "PASSWORD", PASSWORD)
    wait = "import os, time\nwhile not os.path.exists('go'): time.sleep(0.02)"
    job = jobs.submit_job(project, py(wait), secrets=["KEY", "PASSWORD"])
    log = launch.log_path(jobs.settings, job.id, 1, 0)
    wait_for(log.exists, what="the job's log")
    followed, offset = "", 0  # as `plinth jobs logs -f` reads it

    def write(text: str, hidden: tuple[str, ...] = (PASSWORD, KEY, TOKEN[21:])) -> None:
        nonlocal followed, offset
        with log.open("a") as f:  # as the job would print it, a piece at a time
            f.write(text)
        for start in range(log.stat().st_size + 1):
            for limit in (5, 1 << 20):
                shown = jobs.job_logs(project, job.id, offset=start, limit=limit).text
                assert not _pieces(shown, hidden), (text, start, limit, shown)
        piece = jobs.job_logs(project, job.id, offset=offset)
        followed, offset = followed + piece.text, piece.next_offset
        assert not _pieces(followed, hidden), (text, followed)

    write("start\n")
    wait_for(lambda: jobs.job_logs(project, job.id).text, what="its launch recorded")
    for text in ("x=SuperSecretValue12", "3\n"):  # its last character a moment later
        write(text)
    for line in KEY.splitlines(keepends=True):  # a multi-line value, line by line
        write(line)
    for text in ("t=" + TOKEN[:10], TOKEN[10:30], TOKEN[30:] + "\n"):
        write(text)
    write("-----BEGIN PRIVATE KEY-----\n")  # the start of the key again, held…
    assert followed.endswith("t=********\n")
    write("not the key\n", (PASSWORD, KEY.splitlines()[1], TOKEN[21:]))  # …till it is not
    assert followed.endswith("t=********\n-----BEGIN PRIVATE KEY-----\nnot the key\n")
    (launch.job_dir(jobs.settings, job.id, 1) / "work" / "go").write_text("")
    assert jobs.wait_job(project, job.id, timeout=20).status == "succeeded"
    whole = "start\nx=********\n********t=********\n-----BEGIN PRIVATE KEY-----\nnot the key\n"
    assert jobs.job_logs(project, job.id).text == whole == followed


def _pieces(text: str, values: tuple[str, ...]) -> list[str]:
    """The pieces of ``values``, past a few characters, that ``text`` shows."""
    return [v[i : i + 5] for v in values for i in range(len(v) - 4) if v[i : i + 5] in text]


def test_names_plinth_sets_are_refused_as_env_and_secrets(settings: Settings, project: str) -> None:
    key = SecretStr(MasterKey.generate().to_text())
    with Client(settings=with_compute(settings).model_copy(update={"master_key": key})) as jobs:
        jobs.create_run(project)  # the project
        for name in ("PLINTH_TOKEN", "PLINTH_RUN_ID", "PLINTH_EXIT_RECORD", "IFS", "RANK"):
            with pytest.raises(InvalidInput, match=f"{name} is Plinth's to set"):
                jobs.set_secret(project, name, "value-of-it")  # a job could never have it
            with pytest.raises(InvalidInput, match=f"secrets: {name} is Plinth's to set"):
                jobs.submit_job(project, py("pass"), secrets=[name])
            with pytest.raises(InvalidInput, match=f"env: {name} is Plinth's to set"):
                jobs.submit_job(project, py("pass"), env={name: "x"})
        assert jobs.list_jobs(project).jobs == []  # nothing queued


def test_a_job_naming_a_secret_its_project_lacks_is_refused(jobs: Client, project: str) -> None:
    jobs.create_run(project)  # the project
    with pytest.raises(NotFound, match="NOPE"):
        jobs.submit_job(project, py("pass"), secrets=["NOPE"])
    assert jobs.list_jobs(project).jobs == []  # nothing queued


def test_bad_requests_are_refused(jobs: Client, project: str) -> None:
    with pytest.raises(InvalidInput):
        jobs.submit_job(project, "python x.py")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="never start"):
        jobs.submit_job(project, py("pass"), gpus=3)  # the node has 2
    with pytest.raises(InvalidInput, match="never start"):
        jobs.submit_job(project, py("pass"), pool="nowhere")
    with pytest.raises(InvalidInput):
        jobs.submit_job(project, py("pass"), memory="lots")
    with pytest.raises(InvalidInput):
        jobs.submit_job(project, py("pass"), env={"PLINTH_TOKEN": "x"})
    with pytest.raises(NotFound):
        jobs.get_job(project, "0" * 32)
    with pytest.raises(InvalidInput, match="argv"):
        jobs.submit_job(project, [""])
    with pytest.raises(InvalidInput, match="argv and env hold 1,0"):  # not at its start
        jobs.submit_job(project, ["echo", *["x" * 16_000] * 66])
    with pytest.raises(InvalidInput, match="at most 1,048,576 reach a program"):
        jobs.submit_job(project, py("pass"), env={f"V{i}": "x" * 32_000 for i in range(40)})
    with pytest.raises(NotFound):  # nothing of them stays, not even the project
        jobs.list_jobs(project)
    job = jobs.submit_job(project, py("pass"))
    for cursor in ("9" * 20, "\u00b2", "-1", "1.5"):  # too big for the database, not ASCII…
        with pytest.raises(InvalidInput, match="cursor"):
            jobs.list_jobs(project, cursor=cursor)
    with pytest.raises(InvalidInput):
        jobs.job_logs(project, job.id, offset=2**63)  # past any file's end: refused, no 500
    jobs.wait_job(project, job.id, timeout=20)  # its log there to read
    for offset in (2**40, 2**53, 2**60):  # far past the end (ext4 refuses to seek there)
        piece = jobs.job_logs(project, job.id, offset=offset)
        assert (piece.text, piece.next_offset) == ("", offset)


def test_the_job_runs_in_a_snapshot_of_its_working_directory(
    jobs: Client, project: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text(
        "import os, pathlib\nprint(pathlib.Path('data.txt').read_text(), sorted(os.listdir('.')))\n"
    )
    (work / "data.txt").write_text("rows")
    (work / ".gitignore").write_text("big.bin\n")
    (work / "big.bin").write_bytes(b"x" * 1000)
    job = jobs.submit_job(project, [PY, "train.py"], workdir=work)
    assert job.snapshot is not None and job.snapshot.size > 0
    (work / "data.txt").write_text("changed after the submit")  # the snapshot is what runs
    done = jobs.wait_job(project, job.id, timeout=20)
    assert done.status == "succeeded", jobs.job_logs(project, job.id).text
    listing = "['.gitignore', 'data.txt', 'train.py']"
    assert jobs.job_logs(project, job.id).text == f"rows {listing}\n"
    again = jobs.submit_job(project, [PY, "train.py"], workdir=work)
    assert again.snapshot is not None and again.snapshot.digest != job.snapshot.digest
