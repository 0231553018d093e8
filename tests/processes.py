"""Real processes for the end-to-end tests: a ``plinth server`` on a free loopback port,
worker scripts in their own interpreters, and a teardown that kills every one of them
(by its own pid) whatever the test did."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import free_port

PLINTH = Path(sys.executable).with_name("plinth")
REPO = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """This environment without the caller's PLINTH_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """``plinth server`` over ``home`` on 127.0.0.1:``port``; restartable on both."""

    def __init__(self, home: Path, port: int, env: dict[str, str], log: Path) -> None:
        self.home, self.port, self.env, self.log = home, port, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(PLINTH), "server", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"plinth server exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if get(self.port, "/healthz", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"plinth server not healthy after {timeout}s:\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing, like a crash or the OOM killer."""
        _kill(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _kill(self.proc, signal.SIGTERM)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def _kill(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Worker:
    """A script running in its own interpreter, its output in a log file."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        _kill(self.proc, signal.SIGKILL)


def wait_all(workers: list[Worker], timeout: float) -> None:
    """Wait for every worker to exit 0 within one shared deadline."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running after {timeout}s:\n{worker.output()[-3000:]}")
        code = worker.proc.returncode
        assert code == 0, f"worker exited {code}:\n{worker.output()[-3000:]}"


class Processes:
    """Every process a test starts goes through here and is killed at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workers: list[Worker] = []
        self.servers: list[Server] = []

    def server(self, home: Path, port: int | None = None, **env: str) -> Server:
        """Start a server over ``home`` and wait until ``/healthz`` answers."""
        port = port or free_port()
        log = self.workdir / f"server-{port}.log"
        server = Server(home, port, child_env(PLINTH_HOME=str(home), **env), log)
        self.servers.append(server)
        return server.start()

    def python(self, code: str, *args: str, **env: str) -> Worker:
        """Run ``code`` (dedented) with ``args`` in a fresh interpreter."""
        script = self.workdir / f"worker-{len(self.workers)}.py"
        script.write_text(textwrap.dedent(code))
        log = script.with_suffix(".log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(script), *args],
                env=child_env(**env),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, log)
        self.workers.append(worker)
        return worker

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()
        for server in self.servers:
            server.kill()


@contextlib.contextmanager
def started(workdir: Path) -> Iterator[Processes]:
    procs = Processes(workdir)
    try:
        yield procs
    finally:
        procs.kill_all()
