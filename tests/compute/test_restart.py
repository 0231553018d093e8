"""Nothing lost when things fail: a restarted app re-adopts the jobs still running and
settles those that ended meanwhile with their real exit codes; a worker killed with
SIGKILL (its whole process group) ends failed or lost, or is retried."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from plinth.client import Client
from plinth.settings import Settings
from tests.compute.conftest import py, wait_for, wait_status, with_compute


def _gated(gate: Path, code: int) -> list[str]:
    """Writes its pid, runs until ``gate`` exists, then exits with ``code``."""
    return py(
        "import os, time\n"
        f"open({str(gate) + '.pid'!r}, 'w').write(str(os.getpid()))\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
        f"raise SystemExit({code})\n"
    )


def _pid(gate: Path) -> int:
    pid_file = Path(str(gate) + ".pid")
    return int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the pid"))


def test_a_restart_adopts_running_jobs_and_settles_ended_ones(
    settings: Settings, project: str, tmp_path: Path
) -> None:
    configured = with_compute(settings)
    with Client(settings=configured) as first:
        alive = first.submit_job(project, _gated(tmp_path / "alive", 7))
        ended = first.submit_job(project, _gated(tmp_path / "ended", 5))
        for job in (alive, ended):
            wait_status(first, project, job.id, "running")
        pids = [_pid(tmp_path / "alive"), _pid(tmp_path / "ended")]
    # the app is gone; its workers are not
    for pid in pids:
        os.kill(pid, 0)
    (tmp_path / "ended").write_text("")  # this one ends while no server watches
    wait_for(lambda: not _alive(pids[1]), what="the job to end unwatched")
    with Client(settings=configured) as second:
        settled = wait_status(second, project, ended.id, "failed")
        assert (settled.exit_code, settled.attempt) == (5, 1)
        still = second.get_job(project, alive.id)
        assert (still.status, still.attempt) == ("running", 1)  # adopted, not restarted
        (tmp_path / "alive").write_text("")
        done = second.wait_job(project, alive.id, timeout=20)
        assert (done.status, done.exit_code, done.attempt) == ("failed", 7, 1)
        assert all(n.cpus_used == 0 for n in second.list_nodes())


def test_a_killed_process_group_is_retried_or_ends(
    settings: Settings, project: str, tmp_path: Path
) -> None:
    with Client(settings=with_compute(settings)) as c:
        once = c.submit_job(project, _gated(tmp_path / "once", 0))
        code = (
            "import os, sys, time\n"
            "if os.environ['PLINTH_JOB_ATTEMPT'] == '2': sys.exit(0)\n"
            f"open({str(tmp_path / 'retried.pid')!r}, 'w').write(str(os.getpid()))\n"
            "time.sleep(60)\n"
        )
        retried = c.submit_job(project, py(code), retries=1)
        for pid in (_pid(tmp_path / "once"), _pid(tmp_path / "retried")):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        gone = c.wait_job(project, once.id, timeout=20)
        assert gone.status in ("failed", "lost") and gone.attempt == 1
        again = c.wait_job(project, retried.id, timeout=20)
        assert (again.status, again.attempt, again.retries_used) == ("succeeded", 2, 1)
        assert all(n.cpus_used == 0 for n in c.list_nodes())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
