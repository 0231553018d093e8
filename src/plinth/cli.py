"""The ``plinth`` command: mounts each capability's commands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from plinth.errors import PlinthError
from plinth.tracking.cli import artifacts_app, projects_app, runs_app

app = typer.Typer(
    help="Plinth: track experiments, store artifacts and serve models, on a laptop or a cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(projects_app, name="projects")
app.add_typer(runs_app, name="runs")
app.add_typer(artifacts_app, name="artifacts")


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
) -> None:
    """Serve the web UI and the REST API over this machine's Plinth home."""
    import uvicorn

    from plinth.server.app import create_app
    from plinth.settings import Settings

    settings = Settings()
    host = host or settings.server.host
    port = port or settings.server.port
    app_ = create_app(settings)
    Console(stderr=True).print(
        f"Plinth serving {settings.resolved_database_url()} at "
        f"[bold]http://{host}:{port}[/] (API docs at /api/v1/docs)"
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
def demo(
    project: Annotated[str, typer.Option(help="Project to track the sweep in.")] = "demo",
) -> None:
    """A guided tour: track a small sweep of scikit-learn models, then rank the runs."""
    from plinth.demo import run_demo

    run_demo(project)


@app.command()
def version() -> None:
    """Print Plinth's version."""
    from plinth import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point: Plinth errors print as one line, not a traceback."""
    try:
        app()
    except PlinthError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {exc.message}", highlight=False)
        raise SystemExit(1) from None
