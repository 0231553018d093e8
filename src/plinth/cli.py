"""The ``plinth`` command: mounts each capability's commands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from plinth.errors import InvalidInput, PlinthError
from plinth.governance.cli import audit_app
from plinth.governance.identity_cli import (
    admin_app,
    members_app,
    secrets_app,
    tokens_app,
    users_app,
)
from plinth.governance.keys_cli import keys_app
from plinth.tracking.cli import artifacts_app, projects_app, runs_app

app = typer.Typer(
    help="Plinth: track experiments, store artifacts and serve models, on a laptop or a cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(projects_app, name="projects")
app.add_typer(runs_app, name="runs")
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(audit_app, name="audit")
app.add_typer(admin_app, name="admin")
app.add_typer(keys_app, name="keys")
app.add_typer(secrets_app, name="secrets")
projects_app.add_typer(members_app, name="members")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(help="Serve beyond loopback without authentication (trusted networks only)."),
    ] = False,
) -> None:
    """Serve the web UI and the REST API over this machine's Plinth home."""
    import uvicorn
    from sqlalchemy.engine import make_url

    from plinth.server.app import create_app
    from plinth.settings import Settings

    settings = Settings()
    host = host or settings.server.host
    port = port or settings.server.port
    app_ = create_app(settings)
    if not (_is_loopback(host) or allow_unauthenticated or app_.state.identity.auth_enabled()):
        raise InvalidInput(
            f"refusing to serve on {host} without authentication: anyone who can reach it "
            "could read and change every run. Create the first admin with 'plinth admin "
            "init' (then every request needs a token), keep the default 127.0.0.1, or "
            "pass --allow-unauthenticated on a network you trust."
        )
    database = make_url(settings.resolved_database_url()).render_as_string(hide_password=True)
    Console(stderr=True).print(
        f"Plinth serving {database} at [bold]http://{host}:{port}[/] (API docs at /api/v1/docs)"
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
