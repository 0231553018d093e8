"""``plinth pipelines``: call the client, render with Rich."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from plinth.console import JsonFlag, escape, for_terminal, key_values, print_json, when
from plinth.console import client as _client

if TYPE_CHECKING:
    from plinth.pipelines import schemas as s

pipelines_app = typer.Typer(
    help="Pipelines of cached steps: run one (each step a compute job, in parallel as the "
    "graph allows, skipped when its code and inputs are unchanged), follow it, resume a "
    "failed run, and start runs on a schedule or on new dataset versions.",
    no_args_is_help=True,
)
triggers_app = typer.Typer(
    help="Start a pipeline on a cron schedule (UTC) or on each new version of a dataset; "
    "the server holds them (run `plinth server`).",
    no_args_is_help=True,
)
console = Console()

ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name.")]
Target = Annotated[
    str, typer.Argument(help="MODULE:FUNCTION of a @plinth.pipeline, such as pipeline:train.")
]
RunId = Annotated[str, typer.Argument(help="A pipeline run's id (8 or more characters).")]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-P", help="KEY=VALUE for the pipeline's parameter; repeat it."),
]
WorkdirOpt = Annotated[
    Path,
    typer.Option("--workdir", "-C", help="The working directory steps run in (snapshotted)."),
]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Run every step, reusing no earlier outputs.")
]
DetachOpt = Annotated[
    bool, typer.Option("--detach", "-d", help="Start it and return; do not follow it.")
]
STYLE = {
    "waiting": "dim",
    "running": "cyan",
    "succeeded": "green",
    "cached": "blue",
    "failed": "red",
    "skipped": "yellow",
    "cancelled": "yellow",
}


@pipelines_app.command("run")
def run(
    target: Target,
    project: ProjectOpt,
    param: ParamOpt = None,
    no_cache: NoCacheOpt = False,
    workdir: WorkdirOpt = Path("."),
    detach: DetachOpt = False,
    as_json: JsonFlag = False,
) -> None:
    """Run a pipeline: trace it here, snapshot the working directory, and follow its
    steps until it ends (exit status 1 if it failed)."""
    params = key_values(param, "--param")
    with _client() as c:  # closed: an embedded app hands running jobs on as it stops
        found = c.run_pipeline(project, target, params, no_cache=no_cache, workdir=workdir)
        _follow(c, found, detach, as_json)


@pipelines_app.command("resume")
def resume(
    run_id: RunId, project: ProjectOpt, detach: DetachOpt = False, as_json: JsonFlag = False
) -> None:
    """Run a failed or cancelled run again from its failed steps (same snapshot and
    dataset versions). To pick up changed code, `pipelines run` again: unchanged steps
    come from the cache."""
    with _client() as c:
        _follow(c, c.resume_pipeline_run(project, run_id), detach, as_json)


def _follow(c: Any, found: s.PipelineRun, detach: bool, as_json: bool) -> None:
    if not detach:
        found = c.wait_pipeline_run(found.project, found.id) if as_json else _watch(c, found)
    if as_json:
        print_json(found.model_dump())
    elif detach:
        console.print(
            f"started pipeline run [bold]{found.id[:12]}[/] ({escape(found.name)}, "
            f"{len(found.steps)} steps): plinth pipelines show {found.id[:12]} -p "
            f"{escape(found.project)}"
        )
    if not detach and found.status != "succeeded":
        raise typer.Exit(1)


def _watch(c: Any, found: s.PipelineRun) -> s.PipelineRun:
    from rich.live import Live

    with Live(_table(found), console=console, refresh_per_second=4, transient=False) as live:
        while not found.ended:
            time.sleep(0.5)
            found = c.get_pipeline_run(found.project, found.id)
            live.update(_table(found))
    console.line()
    _summary(found)
    return found


def _summary(found: s.PipelineRun) -> None:
    style = STYLE.get(found.status, "")
    cached = sum(step.cached for step in found.steps)
    console.print(
        f"pipeline run [bold]{found.id[:12]}[/] [{style}]{found.status}[/]"
        + (f": {escape(found.reason)}" if found.reason else "")
        + f" ({len(found.steps)} steps, {cached} from cache)"
    )
    for step in found.steps:
        if step.status == "failed":
            console.print(
                f"  logs: plinth pipelines logs {found.id[:12]} {escape(step.name)} "
                f"-p {escape(found.project)}"
            )


def _table(found: s.PipelineRun) -> Table:
    table = Table(title=f"{found.name} · {found.id[:12]} · {found.status}", title_justify="left")
    for column in ("step", "status", "after", "took", "job", "note"):
        table.add_column(column)
    now = time.time()
    for step in found.steps:
        style = STYLE.get(step.status, "")
        took = "-"
        if step.started_at is not None and not step.cached:
            took = f"{(step.ended_at or now) - step.started_at:.1f} s"
        note = step.reason or ""
        if step.cached and step.cached_from:
            note = f"from run {step.cached_from[:8]}"
        table.add_row(
            escape(step.name),
            f"[{style}]{step.status}[/]",
            escape(", ".join(step.upstream)) or "-",
            took,
            (step.job_id or "-")[:12],
            escape(note[:80]),
        )
    return table


@pipelines_app.command("show")
def show(run_id: RunId, project: ProjectOpt, as_json: JsonFlag = False) -> None:
    """A run's steps: state, what they read, cache hits, jobs."""
    with _client() as c:
        found = c.get_pipeline_run(project, run_id)
    if as_json:
        print_json(found.model_dump())
        return
    console.print(_table(found))
    if found.params:
        console.print(
            "params: " + ", ".join(f"{escape(k)}={escape(str(v))}" for k, v in found.params.items())
        )
    _summary(found)


@pipelines_app.command("list")
def list_runs(
    project: ProjectOpt,
    name: Annotated[str | None, typer.Option(help="Only runs of this pipeline.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs in this state.")] = None,
    limit: Annotated[int, typer.Option(help="Runs at most, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """A project's pipeline runs, newest first."""
    with _client() as c:
        page = c.list_pipeline_runs(project, name=name, status=status, limit=limit)
    if as_json:
        print_json(page.model_dump())
        return
    table = Table()
    for column in ("id", "pipeline", "status", "steps", "cached", "trigger", "user", "started"):
        table.add_column(column)
    for r in page.runs:
        style = STYLE.get(r.status, "")
        table.add_row(
            r.id[:12],
            escape(r.name),
            f"[{style}]{r.status}[/]",
            str(r.steps),
            str(r.cached),
            escape(r.trigger or "-"),
            escape(r.user),
            when(r.created_at),
        )
    console.print(table)


@pipelines_app.command("logs")
def logs(
    run_id: RunId,
    step: Annotated[str, typer.Argument(help="The step's name.")],
    project: ProjectOpt,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until it ends.")] = False,
) -> None:
    """The log of a step's job."""
    with _client() as c:
        found = c.get_pipeline_run(project, run_id)
        try:
            job_id = found.step(step).job_id
        except KeyError:
            names = ", ".join(each.name for each in found.steps)
            raise typer.BadParameter(
                f"run {found.id[:12]} has no step {step!r} (it has {names})"
            ) from None
        if job_id is None:
            console.print(f"step {escape(step)} ran no job ({found.step(step).status})")
            return
        if follow:
            for text in c.follow_job_logs(project, job_id):
                typer.echo(for_terminal(text), nl=False)
        else:
            typer.echo(for_terminal(c.job_logs(project, job_id).text), nl=False)


@pipelines_app.command("cancel")
def cancel(run_id: RunId, project: ProjectOpt, as_json: JsonFlag = False) -> None:
    """Cancel a run: steps not started never start, running steps' jobs are stopped."""
    with _client() as c:
        found = c.cancel_pipeline_run(project, run_id)
    if as_json:
        print_json(found.model_dump())
        return
    console.print(f"cancelling pipeline run [bold]{found.id[:12]}[/]")


@triggers_app.command("add")
def triggers_add(
    name: Annotated[str, typer.Argument(help="The trigger's name in the project.")],
    target: Target,
    project: ProjectOpt,
    cron: Annotated[
        str | None, typer.Option(help="A cron schedule in UTC, such as '0 3 * * *'.")
    ] = None,
    on_dataset: Annotated[
        str | None, typer.Option("--on-dataset", help="Run on each new version of it.")
    ] = None,
    param: ParamOpt = None,
    no_cache: NoCacheOpt = False,
    workdir: WorkdirOpt = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Have the server start a pipeline (traced and snapshotted now) on a schedule or on
    new versions of a dataset."""
    with _client() as c:
        found = c.create_pipeline_trigger(
            project,
            name,
            target,
            key_values(param, "--param"),
            cron=cron,
            dataset=on_dataset,
            no_cache=no_cache,
            workdir=workdir,
        )
    if as_json:
        print_json(found.model_dump())
        return
    console.print(f"trigger [bold]{escape(found.name)}[/]: {_when(found)}")


def _when(found: s.Trigger) -> str:
    if found.cron is not None:
        return f"cron '{escape(found.cron)}' UTC, next {when(found.next_at)}"
    return f"each new version of dataset {escape(found.dataset or '')} (seen: {found.seen_version})"


@triggers_app.command("list")
def triggers_list(project: ProjectOpt, as_json: JsonFlag = False) -> None:
    """A project's triggers: when each fires, how often it has, its last run."""
    with _client() as c:
        found = c.list_pipeline_triggers(project)
    if as_json:
        print_json([t.model_dump() for t in found])
        return
    table = Table()
    for column in ("name", "pipeline", "when", "fired", "last run", "by"):
        table.add_column(column)
    for t in found:
        table.add_row(
            escape(t.name),
            escape(t.pipeline),
            _when(t),
            str(t.fired),
            (t.last_run or "-")[:12],
            escape(t.user),
        )
    console.print(table)


@triggers_app.command("rm")
def triggers_rm(
    name: Annotated[str, typer.Argument(help="The trigger's name.")], project: ProjectOpt
) -> None:
    """Remove a trigger: it fires no more (runs it started go on)."""
    with _client() as c:
        c.delete_pipeline_trigger(project, name)
    console.print(f"removed trigger [bold]{escape(name)}[/]")


pipelines_app.add_typer(triggers_app, name="triggers")
