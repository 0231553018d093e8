"""``plinth runs``, ``plinth projects`` and ``plinth artifacts``: call the client, render."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from plinth.tracking import schemas as s

if TYPE_CHECKING:
    from plinth.client import Client

runs_app = typer.Typer(help="Search and inspect runs.", no_args_is_help=True)
projects_app = typer.Typer(help="List projects.", no_args_is_help=True)
artifacts_app = typer.Typer(help="List, upload and download run artifacts.", no_args_is_help=True)
console = Console()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
RunId = Annotated[str, typer.Argument(help="Run id, or its first 8+ characters.")]


def _client() -> Client:
    from plinth.client import Client

    return Client()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _fmt(value: Any, digits: int = 6) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def runs_table(
    runs: list[s.Run],
    title: str | None = None,
    highlight: str | None = None,
    compact: bool = False,
) -> Table:
    """A table of runs with every param and metric they carry as columns.

    ``compact`` shortens ids to 8 characters (still accepted by ``runs show``) and
    drops the status column, for narrow terminals.
    """
    params = sorted({k for r in runs for k in r.params})
    metrics = sorted({k for r in runs for k in r.metrics if not k.startswith("system/")})
    table = Table(title=title)
    table.add_column("run", style="cyan", no_wrap=True)
    table.add_column("name", no_wrap=compact)
    if not compact:
        table.add_column("status")
    for p in params:
        table.add_column(p, style="magenta")
    for m in metrics:
        table.add_column(m, style="bold green" if m == highlight else "green", justify="right")
    for r in runs:
        status = [] if compact else [f"[{_STATUS[r.status]}]{r.status}[/]"]
        table.add_row(
            r.id[: 8 if compact else 12],
            r.name,
            *status,
            *[_fmt(r.params.get(p, "")) for p in params],
            *[_fmt(r.metrics.get(m, ""), 4) for m in metrics],
        )
    return table


_STATUS = {"finished": "green", "failed": "red", "killed": "yellow", "running": "blue"}


@projects_app.command("list")
def list_projects(as_json: JsonFlag = False) -> None:
    """List projects."""
    projects = _client().list_projects()
    if as_json:
        _print_json([p.model_dump() for p in projects])
        return
    table = Table("name", "created")
    for p in projects:
        table.add_row(p.name, _when(p.created_at))
    console.print(table)


@runs_app.command("list")
def list_runs(
    project: Annotated[str, typer.Option("--project", "-p", help="Project name.")],
    filter: Annotated[
        str, typer.Option("--filter", "-f", help='e.g. "metrics.acc > 0.9 and params.lr = 0.1"')
    ] = "",
    order_by: Annotated[str, typer.Option("--order-by", "-o", help='e.g. "metrics.acc desc"')] = "",
    limit: Annotated[int, typer.Option(help="Most runs to show.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Search the runs of a project, filtered and ordered."""
    page = _client().search_runs(project, filter=filter, order_by=order_by, limit=limit)
    if as_json:
        _print_json([r.model_dump() for r in page.runs])
        return
    narrow = console.width < 120  # ids and status columns would squeeze the rest
    console.print(runs_table(page.runs, title=f"runs of {project}", compact=narrow))
    if page.next_page_token:
        console.print(f"[dim]more runs match; raise --limit (now {limit})[/]")


@runs_app.command("show")
def show_run(run_id: RunId, as_json: JsonFlag = False) -> None:
    """Show one run: status, times, params, tags, latest metrics and artifacts."""
    client = _client()
    run = client.get_run(run_id)
    artifacts = client.list_artifacts(run.id)
    if as_json:
        _print_json({**run.model_dump(), "artifacts": [a.model_dump() for a in artifacts]})
        return
    console.print(f"[bold]{run.name}[/]  [cyan]{run.id}[/]  project [bold]{run.project}[/]")
    console.print(
        f"status {run.status}, started {_when(run.start_time)}, ended {_when(run.end_time)}"
    )
    for title, values in (("params", run.params), ("tags", run.tags), ("metrics", run.metrics)):
        if values:
            table = Table("key", "value", title=title, title_justify="left")
            for k, v in sorted(values.items()):
                table.add_row(k, _fmt(v))
            console.print(table)
    if artifacts:
        table = Table("path", "size", "sha256", title="artifacts", title_justify="left")
        for a in artifacts:
            table.add_row(a.path, f"{a.size:,}", a.digest[:16])
        console.print(table)


@artifacts_app.command("list")
def list_artifacts(run_id: RunId, as_json: JsonFlag = False) -> None:
    """List the artifacts of a run."""
    client = _client()
    artifacts = client.list_artifacts(client.get_run(run_id).id)
    if as_json:
        _print_json([a.model_dump() for a in artifacts])
        return
    table = Table("path", "size", "sha256")
    for a in artifacts:
        table.add_row(a.path, f"{a.size:,}", a.digest)
    console.print(table)


@artifacts_app.command("upload")
def upload(
    run_id: RunId,
    path: Annotated[Path, typer.Argument(help="A file, or a directory to upload whole.")],
    name: Annotated[
        str | None, typer.Option(help="Artifact name (default: the file or directory name).")
    ] = None,
) -> None:
    """Upload a file or a directory as artifacts of a run."""
    client = _client()
    for a in client.log_artifact(client.get_run(run_id).id, path, name, progress=None):
        console.print(f"stored {a.path} ({a.size:,} bytes, sha256 {a.digest[:16]})")


@artifacts_app.command("download")
def download(
    run_id: RunId,
    name: Annotated[str, typer.Argument(help="Artifact name, or a directory of them.")],
    dest: Annotated[Path, typer.Argument(help="Folder to download into.")] = Path("."),
) -> None:
    """Download an artifact (or a directory of them) into DEST, verified."""
    client = _client()
    target = client.download_artifact(client.get_run(run_id).id, name, dest)
    console.print(f"downloaded to {target}")
