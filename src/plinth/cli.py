"""The ``plinth`` command: each capability's commands, mounted from the declarations,
and the few that belong to the platform itself (server, demo, version).

Start-up stays light: a command group's module is imported to mount it, but nothing
imports the web framework, the database or a capability's service until a command
needs one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from plinth.capabilities import declared
from plinth.core.capability import load
from plinth.errors import InvalidInput, PlinthError

if TYPE_CHECKING:
    from plinth.settings import Settings

app = typer.Typer(
    help="Plinth: track experiments, store artifacts and serve models, on a laptop or a cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _mount(root: typer.Typer) -> None:
    """Mount every capability's command groups: ``"runs"`` at the top, ``"projects
    members"`` inside the ``projects`` group (which must be declared before it)."""
    groups: dict[str, typer.Typer] = {}
    for capability in declared():
        for name, path in capability.commands:
            *parents, leaf = name.split()
            group = load(path)
            parent = groups[" ".join(parents)] if parents else root
            parent.add_typer(group, name=leaf)
            groups[name] = group


_mount(app)


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(help="Serve beyond loopback without authentication (trusted networks only)."),
    ] = False,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ADDR",
            help="A reverse proxy (address or network) whose X-Forwarded-For is believed; "
            "repeatable. By default nobody's is.",
        ),
    ] = None,
) -> None:
    """Serve the web UI and the REST API over this machine's Plinth home."""
    import uvicorn
    from sqlalchemy.engine import make_url

    from plinth.core.access import Authenticator
    from plinth.server.app import create_app

    settings = _with_proxies(trusted_proxy or [])
    host = host or settings.server.host
    port = port or settings.server.port
    app_ = create_app(settings)
    identity = app_.state.services.get(Authenticator)
    if not (_is_loopback(host) or allow_unauthenticated or identity.auth_enabled()):
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
    proxies = settings.server.trusted_proxies
    uvicorn.run(
        app_,
        host=host,
        port=port,
        log_level="warning",
        # uvicorn believes X-Forwarded-For from loopback unless told otherwise
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies,
    )


def _with_proxies(proxies: list[str]) -> Settings:
    """The settings, with ``--trusted-proxy`` addresses added to the configured ones."""
    from pydantic import ValidationError

    from plinth.settings import ServerSettings, Settings

    settings = Settings()
    if not proxies:
        return settings
    server = {
        **settings.server.model_dump(),
        "trusted_proxies": [*settings.server.trusted_proxies, *proxies],
    }
    try:
        return settings.model_copy(update={"server": ServerSettings.model_validate(server)})
    except ValidationError as exc:
        raise InvalidInput(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


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
