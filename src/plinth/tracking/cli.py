"""``plinth runs``, ``plinth projects`` and ``plinth artifacts``: call the client, render."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from plinth.console import JsonFlag, escape
from plinth.console import client as _client
from plinth.console import print_json as _print_json
from plinth.console import when as _when

if TYPE_CHECKING:
    from plinth.tracking import schemas as s

runs_app = typer.Typer(help="Search and inspect runs.", no_args_is_help=True)
projects_app = typer.Typer(help="List projects.", no_args_is_help=True)
artifacts_app = typer.Typer(help="List, upload and download run artifacts.", no_args_is_help=True)
console = Console()

RunId = Annotated[str, typer.Argument(help="Run id, or its first 8+ characters.")]


def _fmt(value: Any, digits: int = 6) -> str:
    """A param, tag or metric value as people read it: numbers short, strings bare,
    everything else as JSON (``true``, ``null``, ``{"a": 1}``), never Python's repr."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


_CELL = 24  # widest a param or metric column gets; longer values end in "…"


@dataclass(frozen=True)
class _Column:
    key: str
    is_metric: bool
    cells: list[str]

    @property
    def width(self) -> int:
        return min(_CELL, max(cell_len(v) for v in [self.key, *self.cells]))


def runs_table(
    runs: list[s.Run],
    title: str | None = None,
    highlight: str | None = None,
    compact: bool = False,
    width: int | None = None,
) -> Table:
    """A table of runs with the params and metrics they carry as columns.

    ``compact`` (for a list whose runs all finished) shortens ids to 8 characters (still
    accepted by ``runs show``) and drops the status column. Given a ``width``, the params
    and metrics that do not fit are left out and the caption names them: id, name and
    status are never squeezed out, and ``highlight`` is the first metric kept.
    """
    params = sorted({k for r in runs for k in r.params})
    metrics = sorted({k for r in runs for k in r.metrics if not k.startswith("system/")})
    columns = [_Column(k, False, [_cell(r.params, k) for r in runs]) for k in params]
    columns += [_Column(k, True, [_cell(r.metrics, k, 4) for r in runs]) for k in metrics]
    id_width = 8 if compact or (width is not None and width < 120) else 12
    name_width = min(_CELL, max([4, *(cell_len(r.name) for r in runs)]))
    fixed = [id_width, name_width, *([] if compact else [8])]
    shown = _fitting(columns, highlight, width, used=1 + sum(w + 3 for w in fixed))
    table = Table(title=title)
    table.add_column("run", style="cyan", no_wrap=True)
    table.add_column("name", no_wrap=True, max_width=_CELL, overflow="ellipsis")
    if not compact:
        table.add_column("status", no_wrap=True, min_width=8)
    for c in shown:
        style = "bold green" if c.key == highlight else "green" if c.is_metric else "magenta"
        table.add_column(
            escape(c.key),
            style=style,
            justify="right" if c.is_metric else "left",
            no_wrap=True,
            max_width=_CELL,
            overflow="ellipsis",
        )
    for i, r in enumerate(runs):
        status = [] if compact else [f"[{_STATUS[r.status]}]{r.status}[/]"]
        cells = [escape(c.cells[i]) for c in shown]
        table.add_row(r.id[:id_width], escape(r.name), *status, *cells)
    if hidden := [escape(c.key) for c in columns if c not in shown]:
        table.caption = f"not shown, for want of width: {', '.join(hidden)} (try --json)"
        table.caption_justify = "left"
    return table


def _cell(values: dict[str, Any], key: str, digits: int = 6) -> str:
    return _fmt(values[key], digits) if key in values else ""  # absent, unlike null


def _fitting(
    columns: list[_Column], highlight: str | None, width: int | None, used: int
) -> list[_Column]:
    """The columns that fit in ``width`` beside ``used``, in table order. Room goes to
    the highlighted metric first, then to metrics, then to params."""
    if width is None:
        return columns
    kept: list[_Column] = []
    for column in sorted(columns, key=lambda c: (c.key != highlight, not c.is_metric)):
        if column not in kept and used + column.width + 3 <= width:
            kept.append(column)
            used += column.width + 3
    return [c for c in columns if c in kept]


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
        table.add_row(escape(p.name), _when(p.created_at))
    console.print(table)


@runs_app.command("list")
def list_runs(
    project: Annotated[str, typer.Option("--project", "-p", help="Project name.")],
    filter: Annotated[
        str, typer.Option("--filter", "-f", help='e.g. "metrics.acc > 0.9 and params.lr = 0.1"')
    ] = "",
    order_by: Annotated[str, typer.Option("--order-by", "-o", help='e.g. "metrics.acc desc"')] = "",
    limit: Annotated[int, typer.Option(help="Most runs to show.")] = 50,
    deleted: Annotated[bool, typer.Option("--deleted", help="List deleted runs instead.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Search the runs of a project, filtered and ordered (deleted runs with --deleted)."""
    lifecycle = "deleted" if deleted else "active"
    page = _client().search_runs(
        project, filter=filter, order_by=order_by, limit=limit, lifecycle=lifecycle
    )
    if as_json:
        _print_json([r.model_dump() for r in page.runs])
        return
    console.print(runs_table(page.runs, title=f"runs of {project}", width=console.width))
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
    console.print(f"[bold]{escape(run.name)}[/]  [cyan]{run.id}[/]  project [bold]{run.project}[/]")
    console.print(
        f"status {run.status}, started {_when(run.start_time)}, ended {_when(run.end_time)}"
    )
    for title, values in (("params", run.params), ("tags", run.tags), ("metrics", run.metrics)):
        if values:
            table = Table("key", "value", title=title, title_justify="left")
            for k, v in sorted(values.items()):
                table.add_row(escape(k), escape(_fmt(v)))
            console.print(table)
    if artifacts:
        table = Table("path", "size", "sha256", title="artifacts", title_justify="left")
        for a in artifacts:
            table.add_row(escape(a.path), f"{a.size:,}", a.digest[:16])
        console.print(table)


@runs_app.command("delete")
def delete_run(run_id: RunId) -> None:
    """Delete a run: it is kept with all it logged, left out of searches and the
    project's pages, and comes back with `plinth runs restore`."""
    client = _client()
    run = client.delete_run(client.get_run(run_id).id)
    console.print(
        f"deleted run [cyan]{run.id}[/] ({escape(run.name)}); restore it with "
        f"[bold]plinth runs restore {run.id[:8]}[/]"
    )


@runs_app.command("restore")
def restore_run(run_id: RunId) -> None:
    """Bring a deleted run back."""
    client = _client()
    run = client.restore_run(client.get_run(run_id).id)
    console.print(f"restored run [cyan]{run.id}[/] ({escape(run.name)})")


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
        table.add_row(escape(a.path), f"{a.size:,}", a.digest)
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
        console.print(f"stored {escape(a.path)} ({a.size:,} bytes, sha256 {a.digest[:16]})")


@artifacts_app.command("download")
def download(
    run_id: RunId,
    name: Annotated[str, typer.Argument(help="Artifact name, or a directory of them.")],
    dest: Annotated[Path, typer.Argument(help="Folder to download into.")] = Path("."),
) -> None:
    """Download an artifact (or a directory of them) into DEST, verified."""
    client = _client()
    target = client.download_artifact(client.get_run(run_id).id, name, dest)
    console.print(f"downloaded to {escape(str(target))}")
