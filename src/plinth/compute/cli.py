"""``plinth jobs``, ``plinth nodes`` and ``plinth pools``: call the client, render
with Rich."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from plinth.console import JsonFlag, escape, for_terminal, key_values, print_json, when
from plinth.console import client as _client

if TYPE_CHECKING:
    from plinth.compute import schemas as s

jobs_app = typer.Typer(
    help="Jobs: commands run with the CPUs, memory and GPUs they ask for, queued, "
    "scheduled, retried, and watched to their end.",
    no_args_is_help=True,
)
console = Console()
Project = Annotated[str, typer.Option("--project", "-p", help="The job's project.")]
JobId = Annotated[str, typer.Argument(help="The job's id.")]


class _Command(TyperGroup):
    """A group that is really one command (``plinth nodes``), mounted like a group."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [p for p in super().collect_usage_pieces(ctx) if p != self.subcommand_metavar]


nodes_app = typer.Typer(cls=_Command, rich_markup_mode=None)
pools_app = typer.Typer(cls=_Command, rich_markup_mode=None)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f}Gi"


def _show(job: s.Job, as_json: bool) -> None:
    if as_json:
        print_json(job.model_dump())
        return
    console.print(f"[bold]{job.id}[/] {escape(job.status)}  attempt {job.attempt}")
    console.print(f"  argv: {escape(' '.join(job.argv))}")
    asked = f"cpus {job.cpus:g}, memory {_gib(job.memory_bytes)}, gpus {job.gpus}"
    console.print(f"  {asked}, {job.nodes} x {job.procs_per_node}  pool {job.pool}")
    console.print(f"  exit code: {job.exit_code if job.exit_code is not None else '-'}")
    if job.reason:
        console.print(f"  reason: {escape(job.reason)}")
    console.print(f"  submitted {when(job.submitted_at)}  started {when(job.started_at)}")
    console.print(f"  ended {when(job.ended_at)}  node {job.node or '-'}  run {job.run_id or '-'}")


@jobs_app.command(
    "submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def submit(
    ctx: typer.Context,
    project: Project,
    cpus: Annotated[float, typer.Option(help="CPUs per process.")] = 1.0,
    gpus: Annotated[int, typer.Option(help="GPUs per process.")] = 0,
    memory: Annotated[str | None, typer.Option(help="Memory per process, e.g. 16Gi.")] = None,
    nodes: Annotated[int, typer.Option(help="Nodes of a gang, started together.")] = 1,
    procs_per_node: Annotated[int, typer.Option(help="Processes on each node.")] = 1,
    pool: Annotated[str | None, typer.Option(help="Pool (default: the default one).")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    retries: Annotated[int, typer.Option(help="Failures retried, with back-off.")] = 0,
    timeout: Annotated[str | None, typer.Option(help="e.g. 2h, 90m, 30s.")] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Directory snapshotted for the job (default: .).")
    ] = None,
    no_workdir: Annotated[
        bool, typer.Option("--no-workdir", help="Run in an empty directory.")
    ] = False,
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V, repeatable.")] = None,
    secret: Annotated[
        list[str] | None, typer.Option("--secret", help="A project secret's name, repeatable.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Queue a command: plinth jobs submit -p P --gpus 1 -- python train.py --lr 0.1"""
    from plinth.errors import InvalidInput

    argv = list(ctx.args)
    if not argv:
        raise InvalidInput("give the command after --: plinth jobs submit -p P -- python x.py")
    pairs = key_values(env, "--env")
    with _client() as c:
        job = c.submit_job(
            project,
            argv,
            cpus=cpus,
            gpus=gpus,
            memory=memory,
            nodes=nodes,
            procs_per_node=procs_per_node,
            pool=pool,
            priority=priority,
            retries=retries,
            timeout=timeout,
            workdir=None if no_workdir else (workdir or Path(".")),
            env=pairs,
            secrets=secret or [],
        )
    if as_json:
        print_json(job.model_dump())
    else:
        typer.echo(job.id)


@jobs_app.command("list")
def list_jobs(
    project: Project,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: JsonFlag = False,
) -> None:
    """The project's jobs, newest first."""
    with _client() as c:
        page = c.list_jobs(project, status=status, limit=limit)
    if as_json:
        print_json([j.model_dump() for j in page.jobs])
        return
    table = Table("id", "status", "exit", "attempt", "argv", "submitted", "node")
    for j in page.jobs:
        code = "-" if j.exit_code is None else str(j.exit_code)
        argv = escape(" ".join(j.argv))[:60]
        table.add_row(
            j.id, j.status, code, str(j.attempt), argv, when(j.submitted_at), j.node or "-"
        )
    console.print(table)


@jobs_app.command("show")
def show(job_id: JobId, project: Project, as_json: JsonFlag = False) -> None:
    with _client() as c:
        _show(c.get_job(project, job_id), as_json)


@jobs_app.command("cancel")
def cancel(job_id: JobId, project: Project, as_json: JsonFlag = False) -> None:
    """Cancel a queued job, or stop a running one (SIGTERM, then SIGKILL after grace)."""
    with _client() as c:
        _show(c.cancel_job(project, job_id), as_json)


@jobs_app.command("logs")
def logs(
    job_id: JobId,
    project: Project,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until it ends.")] = False,
    rank: Annotated[int, typer.Option(help="Which worker of a gang.")] = 0,
) -> None:
    """A job's log (stdout and stderr), or its stream with -f."""
    with _client() as c:
        if follow:
            for text in c.follow_job_logs(project, job_id, rank=rank):
                sys.stdout.write(for_terminal(text))
                sys.stdout.flush()
            return
        offset = 0
        while True:
            piece = c.job_logs(project, job_id, offset=offset, rank=rank)
            sys.stdout.write(for_terminal(piece.text))
            if piece.next_offset == offset:
                return
            offset = piece.next_offset


@jobs_app.command("wait")
def wait(
    job_id: JobId,
    project: Project,
    timeout: Annotated[float | None, typer.Option(help="Seconds; default: forever.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Wait for the job to end; exit with its exit code (1 when it has none)."""
    with _client() as c:
        job = c.wait_job(project, job_id, timeout=timeout)
    if as_json:
        print_json(job.model_dump())
    else:
        typer.echo(f"{job.id} {job.status}" + (f" ({job.reason})" if job.reason else ""))
    code = job.exit_code if job.exit_code is not None else (0 if job.status == "succeeded" else 1)
    raise typer.Exit(code if 0 <= code < 256 else 1)


@jobs_app.command("agent", hidden=True)
def agent(
    idle: Annotated[float, typer.Option(help="Seconds with nothing to do before exiting.")] = 5.0,
) -> None:
    """Dispatch this home's jobs until none waits or runs: started, detached, by an
    embedded program that ended with jobs left (see compute/dispatcher.py)."""
    import time

    with _client() as c:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            time.sleep(0.5)
            if any(p.running or p.queued for p in c.list_pools()):
                quiet_since = time.monotonic()


@nodes_app.callback(invoke_without_command=True)
def nodes(as_json: JsonFlag = False) -> None:
    """Every node of every pool: capacity and what running jobs use."""
    with _client() as c:
        found = c.list_nodes()
    if as_json:
        print_json([n.model_dump() for n in found])
        return
    table = Table("node", "pool", "executor", "cpus", "memory", "gpus", "gpu models")
    for n in found:
        table.add_row(
            n.name,
            n.pool,
            n.executor,
            f"{n.cpus_used:g}/{n.cpus:g}",
            f"{_gib(n.memory_bytes_used)}/{_gib(n.memory_bytes)}",
            f"{n.gpus_used}/{n.gpus}",
            ", ".join(n.gpu_models) or "-",
        )
    console.print(table)


@pools_app.callback(invoke_without_command=True)
def pools(as_json: JsonFlag = False) -> None:
    """Every pool: capacity, use, running and queued jobs."""
    with _client() as c:
        found = c.list_pools()
    if as_json:
        print_json([p.model_dump() for p in found])
        return
    table = Table("pool", "executor", "nodes", "cpus", "memory", "gpus", "running", "queued")
    for p in found:
        table.add_row(
            p.name,
            p.executor,
            str(p.nodes),
            f"{p.cpus_used:g}/{p.cpus:g}",
            f"{_gib(p.memory_bytes_used)}/{_gib(p.memory_bytes)}",
            f"{p.gpus_used}/{p.gpus}",
            str(p.running),
            str(p.queued),
        )
    console.print(table)
