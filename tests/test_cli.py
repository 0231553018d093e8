"""The ``plinth`` command, run as a user would: a subprocess with PLINTH_HOME set."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import plinth
from plinth.settings import ServerSettings, Settings


def plinth_cmd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLINTH_HOME": str(home), "COLUMNS": "200"}
    env.pop("PLINTH_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "plinth", *args], env=env, text=True, capture_output=True, timeout=60
    )


@pytest.fixture
def home_with_runs(tmp_path: Path) -> tuple[Path, list[str]]:
    home = tmp_path / "home"
    ids = []
    with plinth.Client(settings=Settings(home=home, url=None, token=None)) as client:
        for lr in (0.01, 0.1):
            with plinth.start_run(
                "churn", name=f"lr-{lr}", params={"lr": lr}, client=client
            ) as run:
                run.log({"acc": 0.5 + lr}, step=0)
                model = tmp_path / "model.txt"
                model.write_text(f"model {lr}")
                run.log_artifact(str(model))
            ids.append(run.id)
    return home, ids


def test_runs_list_json_filters_and_orders(home_with_runs: tuple[Path, list[str]]) -> None:
    home, ids = home_with_runs
    out = plinth_cmd(
        home,
        "runs",
        "list",
        "--project",
        "churn",
        "--filter",
        "metrics.acc > 0.5",
        "--order-by",
        "metrics.acc desc",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)
    assert [r["id"] for r in runs] == [ids[1], ids[0]]
    assert runs[0]["params"] == {"lr": 0.1}


def test_runs_list_renders_a_table(home_with_runs: tuple[Path, list[str]]) -> None:
    home, _ = home_with_runs
    out = plinth_cmd(home, "runs", "list", "--project", "churn")
    assert out.returncode == 0, out.stderr
    assert "lr-0.01" in out.stdout and "acc" in out.stdout


def test_runs_show_and_artifacts(home_with_runs: tuple[Path, list[str]], tmp_path: Path) -> None:
    home, ids = home_with_runs
    shown = json.loads(plinth_cmd(home, "runs", "show", ids[0][:10], "--json").stdout)
    assert shown["id"] == ids[0]  # found by the prefix the tables show
    assert shown["status"] == "finished"
    assert [a["path"] for a in shown["artifacts"]] == ["model.txt"]
    out = plinth_cmd(home, "artifacts", "download", ids[0], "model.txt", str(tmp_path / "dl"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dl" / "model.txt").read_text() == "model 0.01"
    listed = json.loads(plinth_cmd(home, "artifacts", "list", ids[0], "--json").stdout)
    assert listed[0]["size"] == len("model 0.01")
    projects = json.loads(plinth_cmd(home, "projects", "list", "--json").stdout)
    assert [p["name"] for p in projects] == ["churn"]


def test_errors_print_one_line_not_a_traceback(home_with_runs: tuple[Path, list[str]]) -> None:
    home, _ = home_with_runs
    out = plinth_cmd(home, "runs", "list", "--project", "churn", "--filter", "x; DROP TABLE runs")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: filter:")
    out = plinth_cmd(home, "runs", "show", "nope")
    assert out.returncode == 1 and "no run 'nope'" in out.stderr
    out = plinth_cmd(home, "runs", "list")
    assert out.returncode == 2 and "--project" in out.stderr
    # values out of an option's range: what the server says of each, on one line
    args = ("jobs", "submit", "-p", "churn", "--no-workdir", "--cpus", "0.0004")
    out = plinth_cmd(home, *args, "--priority", "5000", "--", "true")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines() == [
        "error: cpus: Input should be greater than or equal to 0.001; "
        "priority: Input should be less than or equal to 1000"
    ]


def test_text_others_wrote_is_text_in_a_table() -> None:
    """Escaped for a Rich table or line: markup shown as text, and every escape and C1
    control a terminal would act on (a table is no place for a job's colours either)."""
    from rich.console import Console

    from plinth.console import escape

    shown = escape("[/]col\x1b[31m\x1b]52;c;eA==\x07\x9b2J")
    assert shown == "\\[/]col^[[31m^[]52;c;eA==\x07\\x9b2J"
    console = Console(width=200)
    with console.capture() as seen:
        console.print(shown, highlight=False)
    assert seen.get() == "[/]col^[[31m^[]52;c;eA==\\x9b2J\n"  # no markup error; no BEL


def test_a_value_refused_before_any_request_prints_one_line_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model built in the CLI (not the server's answer) that refuses its values."""
    from pydantic import BaseModel, Field

    from plinth import cli

    class Options(BaseModel):
        cpus: float = Field(ge=0.001)
        nodes: int = Field(ge=1)

    monkeypatch.setattr(cli, "app", lambda: Options(cpus=-1, nodes=0))
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: cpus: Input should be greater than or equal to 0.001",
        "error: nodes: Input should be greater than or equal to 1",
    ]


def test_text_others_wrote_reaches_a_terminal_without_its_escapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job's log shown on a reader's terminal: colours and cursor moves pass, a
    clipboard write, a title or a C1 control is shown as text; to a pipe, all as is."""
    from plinth.console import for_terminal

    log = (
        "\x1b[31mred\x1b[0m 50%\r\x1b[2K60%\n"  # colours, a progress bar's moves
        "\x1b]52;c;ZXZpbA==\x07"  # OSC 52: write the reader's clipboard
        "\x1b]0;title\x1b\\ \x1bP+q\x1b\\ \x9d8;;x\x9c \x1b"
    )
    assert for_terminal(log) == log  # pytest's stdout is no terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert for_terminal(log) == (
        "\x1b[31mred\x1b[0m 50%\r\x1b[2K60%\n"
        "^[]52;c;ZXZpbA==\x07"
        "^[]0;title^[\\ ^[P+q^[\\ \\x9d8;;x\\x9c ^["
    )


def test_help_lists_commands(tmp_path: Path) -> None:
    out = plinth_cmd(tmp_path, "--help")
    assert out.returncode == 0
    for command in ("server", "demo", "runs", "artifacts"):
        assert command in out.stdout


# start-up ------------------------------------------------------------------------------

HEAVY = {"fastapi", "starlette", "sqlalchemy", "uvicorn", "alembic", "jinja2"}


def _imported(*args: str) -> set[str]:
    """Top-level packages imported by ``python -X importtime *args``."""
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("PLINTH_URL", None)
    out = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines}


@pytest.mark.parametrize(
    "args",
    [
        ("-c", "import plinth"),
        ("-c", "from plinth import Client, PlinthError, Run, start_run, __version__"),
        ("-m", "plinth", "--help"),
        ("-m", "plinth", "runs", "--help"),
        ("-m", "plinth", "runs", "list", "--help"),
        ("-m", "plinth", "--version"),
    ],
    ids=lambda args: " ".join(args[1:]),
)
def test_start_up_loads_no_server_database_or_web_framework(args: tuple[str, ...]) -> None:
    if "Client" in args[-1]:  # naming the SDK may load it (httpx, pydantic), not the server
        assert _imported(*args) & HEAVY == set()
        return
    assert _imported(*args) & (HEAVY | {"httpx", "pydantic_settings"}) == set()


def test_the_sdk_names_still_resolve() -> None:
    from plinth.client import Client
    from plinth.tracking.run import Run, start_run

    assert (plinth.Client, plinth.Run, plinth.start_run) == (Client, Run, start_run)
    assert set(plinth.__all__) <= set(dir(plinth))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = plinth.nope  # type: ignore[attr-defined]


# habits ---------------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    out = plinth_cmd(tmp_path, "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"plinth {plinth.__version__}\n"
    assert plinth_cmd(tmp_path, "version").stdout == out.stdout


def _every_command() -> list[tuple[str, ...]]:
    import typer

    from plinth.cli import app

    root = typer.main.get_command(app)
    ctx = root.make_context("plinth", ["--help"], resilient_parsing=True)
    found: list[tuple[str, ...]] = [()]

    def walk(group: Any, path: tuple[str, ...]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            found.append((*path, name))
            if hasattr(command, "list_commands"):  # a group
                walk(command, (*path, name))

    walk(root, ())
    return found


def test_help_is_rewrapped_and_shows_no_bool_placeholders() -> None:
    """Every command's help at a wide terminal: a docstring written over several lines
    reads as one paragraph, and flags show no ``<bool>`` as if they took a value."""
    from typer.testing import CliRunner

    from plinth.cli import app

    runner = CliRunner()
    commands = _every_command()
    assert ("runs", "list") in commands and ("projects", "members", "add") in commands
    for path in commands:
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"}, terminal_width=250)
        assert out.exit_code == 0, (path, out.output)
        assert "<bool>" not in out.output, (path, out.output)
        if path in {("tokens", "create"), ("keys", "rotate"), ("admin", "init")}:  # long docstrings
            lines = [line.strip() for line in out.output.splitlines() if line.strip()]
            assert any(len(line) > 100 for line in lines), out.output  # not cut at 80


@pytest.fixture
def home_with_odd_params(tmp_path: Path) -> tuple[Path, str]:
    home = tmp_path / "home"
    params = {
        "flag": True,
        "nothing": None,
        "nested": {"a": 1, "b": [1, 2]},
        "lr": 0.1,
        "style": "[red]as typed[/red]",  # a value, not markup for the terminal
    }
    with (
        plinth.Client(settings=Settings(home=home, url=None, token=None)) as client,
        plinth.start_run("odd", name="odd-run", params=params, client=client) as run,
    ):
        run.log({"acc": 0.5})
    return home, run.id


def test_params_print_as_json_not_python_repr(home_with_odd_params: tuple[Path, str]) -> None:
    home, run_id = home_with_odd_params
    for args in (("runs", "show", run_id), ("runs", "list", "-p", "odd")):
        out = plinth_cmd(home, *args)
        assert out.returncode == 0, out.stderr
        assert '{"a": 1, "b": [1, 2]}' in out.stdout, out.stdout
        assert "true" in out.stdout and "null" in out.stdout
        assert "True" not in out.stdout and "None" not in out.stdout and "{'a'" not in out.stdout
        assert "[red]as typed[/red]" in out.stdout


@pytest.mark.parametrize("columns", [60, 80])
def test_runs_list_keeps_the_status_column_on_narrow_terminals(
    home_with_runs: tuple[Path, list[str]], columns: int
) -> None:
    home, ids = home_with_runs
    env = {**os.environ, "PLINTH_HOME": str(home), "COLUMNS": str(columns)}
    env.pop("PLINTH_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "plinth", "runs", "list", "-p", "churn"],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert all(len(line) <= columns for line in out.stdout.splitlines()), out.stdout
    rows = [line for line in out.stdout.splitlines() if ids[0][:8] in line]
    assert len(rows) == 1 and "finished" in rows[0] and "lr-0.01" in rows[0], out.stdout
    assert "status" in out.stdout and "acc" in out.stdout


def test_a_narrow_table_names_the_columns_it_leaves_out() -> None:
    from plinth.tracking import schemas as s
    from plinth.tracking.cli import runs_table

    params = {f"a_rather_long_param_{i}": i for i in range(8)}
    run = s.Run(
        id="f" * 32,
        project="p",
        name="n",
        status="failed",
        start_time=0,
        end_time=None,
        params=params,
        metrics={"acc": 0.5},
    )
    table = runs_table([run], width=80)
    headers = [str(column.header) for column in table.columns]
    # metrics claim room before params; the rest are named
    assert headers == ["run", "name", "status", "a_rather_long_param_0", "acc"]
    assert str(table.caption).startswith("not shown, for want of width: a_rather_long_param_1, ")
    assert len(runs_table([run]).columns) == 3 + 8 + 1  # no width: every column


# the server's start-up and access log ----------------------------------------------------


def _server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_")}
    return {**env, "PLINTH_HOME": str(home), "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_server_refuses_a_port_out_of_range_in_one_line(tmp_path: Path, port: str) -> None:
    out = plinth_cmd(tmp_path, "server", "--port", port)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"error: port {port} is out of range: use 1 to 65535 (or 0 for any free one)"
    ]


def test_server_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = plinth_cmd(tmp_path, "server", "--port", str(port))
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"error: port {port} is in use (on 127.0.0.1): stop what holds it, or pass another --port"
    ]
    assert "serving" not in out.stdout + out.stderr


def test_server_writes_an_access_log_without_queries_or_tokens(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plinth", "server", "--port", "0"],
            env=_server_env(tmp_path / "home"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = _served_at(proc, log)
        assert httpx.get(f"{base}/healthz?token=s3cret").status_code == 200
        headers = {"Authorization": "Bearer plinth_s3cret"}
        assert httpx.get(f"{base}/api/v1/runs/nope", headers=headers).status_code == 404
        assert httpx.get(f"{base}/api/v1/a%0Ab").status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("Plinth serving ") and base in lines[0]
    access = [line.split(" ", 2)[2] for line in lines[1:] if " GET " in f" {line}"]
    assert [re.sub(r"\d+\.\d ms$", "N ms", line) for line in access[-3:]] == [
        "GET /healthz 200 N ms",
        "GET /api/v1/runs/nope 404 N ms",
        "GET /api/v1/a%0Ab 404 N ms",
    ]
    assert "s3cret" not in log.read_text()


def _served_at(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The URL from the server's "serving at" line, once it answers there."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        found = re.search(r"at (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{found[1]}/healthz?warm-up")
                return found[1]
        time.sleep(0.1)
    raise AssertionError(f"no 'serving at' line within 30 s:\n{log.read_text()}")


def test_server_tells_its_jobs_the_port_it_really_listens_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--port`` (0: any free one) is where jobs are told to reach the server, not
    the configured default, whose owner would otherwise be sent the jobs' tokens."""
    import plinth.server.app
    from plinth.cli import server

    monkeypatch.setenv("PLINTH_HOME", str(tmp_path / "home"))
    seen = []

    def create_app(settings: Settings) -> None:
        seen.append(settings.server)
        raise KeyboardInterrupt  # stop before serving

    monkeypatch.setattr(plinth.server.app, "create_app", create_app)
    with pytest.raises(KeyboardInterrupt):
        server(host=None, port=0, allow_unauthenticated=False, trusted_proxy=None)
    [told] = seen
    assert told.port not in (0, 8765) and told.local_url() == f"http://127.0.0.1:{told.port}"
    assert ServerSettings(host="0.0.0.0", port=9).local_url() == "http://127.0.0.1:9"
    assert ServerSettings(host="::", port=9).local_url() == "http://[::1]:9"
    assert ServerSettings(host="10.0.0.5", port=9).local_url() == "http://10.0.0.5:9"


def test_server_exits_on_sigterm_within_its_grace_with_an_upload_trickling_in(
    tmp_path: Path,
) -> None:
    """A client sending a byte now and then (never idle long enough for the 408) must
    not keep a stopped server alive: a supervisor waits for it to exit."""
    import signal
    import threading

    from plinth.cli import SHUTDOWN_GRACE_S

    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plinth", "server", "--port", "0"],
            env=_server_env(tmp_path / "home"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stop = threading.Event()
    try:
        port = int(_served_at(proc, log).rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port))
        head = (
            "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
        )
        slow.sendall(head.encode())

        def trickle() -> None:
            while not stop.wait(1.0):
                with contextlib.suppress(OSError):
                    slow.sendall(b" ")

        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(1.5)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=SHUTDOWN_GRACE_S + 15)
        assert time.monotonic() - began < SHUTDOWN_GRACE_S + 15
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
