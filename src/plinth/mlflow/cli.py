"""``plinth import mlflow``: call the importer with a progress bar, print its report."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from plinth.console import client as _client
from plinth.console import escape

import_app = typer.Typer(help="Bring history in from other tools.", no_args_is_help=True)
console = Console()


@import_app.command("mlflow")
def import_mlflow(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="MLflow's tracking database (sqlite:///mlflow.db, postgresql://user@host/db) "
            "or a running MLflow server (http://host:5000).",
        ),
    ],
    artifacts: Annotated[
        Path | None,
        typer.Option(
            help="MLflow's artifact folder (./mlruns, or the --artifacts-destination of an "
            "`mlflow server`); runs whose artifact_uri is a local folder need none.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_TRACKING_TOKEN",
            help="A bearer token for an MLflow server that asks for one.",
            show_default=False,
        ),
    ] = None,
    report_file: Annotated[
        Path | None, typer.Option("--report", help="Also write the report here, as JSON.")
    ] = None,
) -> None:
    """Import an MLflow store: experiments (as projects), runs with their ids, full
    metric history, params, tags and artifacts, logged models, and registered model
    versions with their aliases. Safe to run again: what was imported is left as it
    is, and an interrupted import completes."""
    from plinth.mlflow.importer import Importer, SqlStore, Store
    from plinth.mlflow.rest_store import RestStore

    if artifacts is not None and not artifacts.is_dir():
        raise typer.BadParameter(f"no such folder: {artifacts}", param_hint="--artifacts")
    web = source.startswith(("http://", "https://"))
    store: Store = RestStore(source, token) if web else SqlStore(source)
    try:
        with _client() as client:
            importer = Importer(client, store, artifacts)
            planned = importer.plan()
            total = sum(len(runs) for _, runs in planned)
            columns = (
                TextColumn("importing runs"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task("runs", total=total)
                importer.on_run = lambda run: progress.advance(task)
                report = importer.run(planned)
    finally:
        store.close()
    table = Table(title="Imported from MLflow", show_header=False)
    for label, value in (
        ("experiments", report.experiments),
        ("runs imported", report.runs),
        ("runs already here", report.already),
        ("metric points", report.points),
        ("params", report.params),
        ("tags", report.tags),
        ("artifacts", f"{report.artifacts} ({report.artifact_bytes:,} bytes)"),
        ("logged models", report.models),
        ("model versions", f"{report.versions} (+{report.versions_already} already here)"),
        ("aliases", report.aliases),
    ):
        table.add_row(label, str(value))
    console.print(table)
    renamed = {k: v for k, v in report.projects.items() if k != v}
    for name, project in renamed.items():
        console.print(f"experiment [cyan]{escape(name)}[/] is project [cyan]{escape(project)}[/]")
    for where, number in report.renumbered.items():
        console.print(f"model version [cyan]{escape(where)}[/] is version {number} in Plinth")
    for what, why in report.skipped:
        console.print(f"[yellow]skipped[/] {escape(what)}: {escape(why)}")
    if report_file is not None:
        report_file.write_text(json.dumps(asdict(report), indent=2))
