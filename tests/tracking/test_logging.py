"""The SDK's background logging: bounded memory, flush at exit, failure at a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import plinth
from plinth.client import Client
from plinth.settings import Settings
from tests.conftest import make_settings


def test_buffer_is_bounded_when_the_server_is_slow(tmp_path: Path, project: str) -> None:
    settings = make_settings(tmp_path / "home")
    settings.tracking.queue_points = 200
    settings.tracking.flush_batch_points = 50
    with Client(settings=settings) as client:
        real_send_batch = client.send_batch

        def slow_send_batch(*args, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(0.002)
            return real_send_batch(*args, **kwargs)

        client.send_batch = slow_send_batch  # type: ignore[method-assign]
        with plinth.start_run(project, client=client) as run:
            high_water = 0
            for step in range(2000):
                run.log({"a": 1.0, "b": 2.0}, step=step)
                high_water = max(high_water, len(run._logger.buffer))
        assert high_water <= 200 + 2
        assert len(client.metric_history(run.id, "a")) == 2000


def _script(home: Path, body: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent("""
        import plinth
        run = plinth.start_run("exit-test", name="scripted")
        print(run.id, flush=True)
        for step in range(5000):
            run.log({"loss": step * 0.5}, step=step)
    """) + textwrap.dedent(body)
    env = {**os.environ, "PLINTH_HOME": str(home)}
    env.pop("PLINTH_URL", None)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("", "finished", 0),
        ("raise SystemExit(0)", "finished", 0),
        ("raise RuntimeError('boom')", "failed", 1),
    ],
)
def test_interpreter_exit_flushes_and_ends_the_run(
    tmp_path: Path, body: str, status: str, code: int
) -> None:
    home = tmp_path / "home"
    out = _script(home, body)
    assert out.returncode == code, out.stderr
    run_id = out.stdout.split()[0]
    with Client(settings=Settings(home=home, url=None, token=None)) as client:
        run = client.get_run(run_id)
        assert run.status == status
        assert len(client.metric_history(run_id, "loss")) == 5000


def test_log_after_a_refused_batch_raises(tmp_path: Path, project: str) -> None:
    with Client(settings=make_settings(tmp_path / "home")) as client:
        run = plinth.start_run(project, client=client)
        run.flush()  # made: what is refused below is a batch, not the create

        def refuse(*_a, **_k):  # type: ignore[no-untyped-def]
            raise plinth.InvalidInput("refused")

        client.send_batch = refuse  # type: ignore[method-assign]
        run.log({"x": 1.0})
        with pytest.raises(plinth.InvalidInput):
            run.flush()
        with pytest.raises(plinth.InvalidInput):
            run.log({"x": 2.0})
        with pytest.raises(plinth.InvalidInput):
            run.end()  # reports the lost batch, yet still ends the run
        assert client.get_run(run.id).status == "finished"


def test_an_outage_delays_points_but_loses_none(tmp_path: Path, project: str) -> None:
    settings = make_settings(tmp_path / "home")
    settings.tracking.flush_batch_points = 100
    with Client(settings=settings) as client:
        real_send_batch = client.send_batch
        attempts: list[str] = []

        def flaky(run_id, batch_id, *args, **kwargs):  # type: ignore[no-untyped-def]
            attempts.append(batch_id)
            if len(attempts) <= 3:  # the server is down for the first three tries
                raise plinth.errors.ServiceUnavailable("cannot reach Plinth")
            return real_send_batch(run_id, batch_id, *args, **kwargs)

        client.send_batch = flaky  # type: ignore[method-assign]
        with plinth.start_run(project, client=client) as run:
            run.flush()  # made: the outage hits its batches
            for step in range(300):
                run.log({"m": float(step)}, step=step)
        assert attempts[0] == attempts[1] == attempts[2] == attempts[3]  # one batch, resent
        steps = [p.step for p in client.metric_history(run.id, "m")]
        assert steps == list(range(300))
        assert client.get_run(run.id).status == "finished"


def test_logging_to_an_ended_run_is_an_error(tmp_path: Path, project: str) -> None:
    with Client(settings=make_settings(tmp_path / "home")) as client:
        with plinth.start_run(project, client=client) as run:
            run.log({"m": 1.0})
        with pytest.raises(plinth.Conflict, match="has ended"):
            run.log({"m": 2.0})


def test_the_users_exception_survives_a_failing_end(tmp_path: Path, project: str) -> None:
    with Client(settings=make_settings(tmp_path / "home")) as client:

        def refuse(*_a, **_k):  # type: ignore[no-untyped-def]
            raise plinth.InvalidInput("refused")

        with pytest.raises(KeyError), plinth.start_run(project, client=client) as run:
            run.flush()  # made: the end's batch is what is refused
            client.send_batch = refuse  # type: ignore[method-assign]
            run.log({"m": 1.0})
            raise KeyError("the user's own error")
        assert client.get_run(run.id).status == "failed"


def test_a_run_dropped_without_end_is_still_flushed_at_exit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = _script(
        home,
        """
        def train():
            inner = plinth.start_run("exit-test", name="dropped")
            print(inner.id, flush=True)
            inner.log({"x": 1.0}, step=0)
        del run
        train()
        import gc; gc.collect()
    """,
    )
    assert out.returncode == 0, out.stderr
    with Client(settings=Settings(home=home, url=None, token=None)) as client:
        for run_id in out.stdout.split():
            assert client.get_run(run_id).status == "finished"
        assert [p.value for p in client.metric_history(out.stdout.split()[1], "x")] == [1.0]


def test_importing_plinth_leaves_sys_excepthook_alone(tmp_path: Path) -> None:
    code = (
        "import sys; before = sys.excepthook; import plinth; "
        "assert sys.excepthook is before, 'import replaced sys.excepthook'; "
        "run = plinth.start_run('p'); assert sys.excepthook is not before; run.end()"
    )
    env = {**os.environ, "PLINTH_HOME": str(tmp_path / "home")}
    env.pop("PLINTH_URL", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
