"""The ``plinth`` command: each capability's commands, mounted from the declarations,
and the few that belong to the platform itself (server, demo, version).

Start-up stays light: a command group's module is imported to mount it, but nothing
imports the web framework, the database or a capability's service until a command
needs one.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from plinth.capabilities import declared
from plinth.core.capability import load
from plinth.errors import InvalidInput, PlinthError

if TYPE_CHECKING:
    import socket

    from plinth.settings import Settings

app = typer.Typer(
    help="Plinth: track experiments, store artifacts and serve models, on a laptop or a cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Click's plain help, for every group: it rewraps docstrings to the terminal and
    # shows no `<bool>` after flags, as Rich's panels do; it also loads faster.
    rich_markup_mode=None,
)


def _mount(root: typer.Typer) -> None:
    """Mount every capability's command groups: ``"runs"`` at the top, ``"projects
    members"`` inside the ``projects`` group (which must be declared before it). A
    declared function (not a ``Typer``) is one command of that name."""
    groups: dict[str, typer.Typer] = {}
    for capability in declared():
        for name, path in capability.commands:
            *parents, leaf = name.split()
            found = load(path)
            parent = groups[" ".join(parents)] if parents else root
            if isinstance(found, typer.Typer):
                parent.add_typer(found, name=leaf)
                groups[name] = found
            else:
                parent.command(name=leaf)(found)


_mount(app)


def _print_version(wanted: bool) -> None:
    if wanted:
        from plinth import __version__

        typer.echo(f"plinth {__version__}")
        raise typer.Exit()


@app.callback()
def _options(  # the root's own options; the help above describes the command
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default 8765; 0 picks a free one).")
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Serve beyond loopback without authentication (trusted networks only).",
        ),
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
    """Serve the web UI and the REST API over the Plinth home."""
    from sqlalchemy.engine import make_url

    from plinth.core.access import Authenticator
    from plinth.server.app import create_app

    settings = _with_proxies(trusted_proxy or [])
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    _check_port(port)
    listener = _bind(host, port)
    # what jobs are told to reach: the address and port this server really has
    bound = settings.server.model_copy(update={"host": host, "port": listener.getsockname()[1]})
    settings = settings.model_copy(update={"server": bound})
    app_ = create_app(settings)
    identity = app_.state.services.get(Authenticator)
    if not (_is_loopback(host) or allow_unauthenticated or identity.auth_enabled()):
        listener.close()
        raise InvalidInput(
            f"refusing to serve on {host} without authentication: anyone who can reach it "
            "could read and change every run. Create the first admin with 'plinth admin "
            "init' (then every request needs a token), keep the default 127.0.0.1, or "
            "pass --allow-unauthenticated on a network you trust."
        )
    database = make_url(settings.resolved_database_url()).render_as_string(hide_password=True)
    url = settings.server.local_url()
    Console(stderr=True).print(
        f"Plinth serving {database} at [bold]{url}[/] (API docs at /api/v1/docs)", soft_wrap=True
    )
    proxies = settings.server.trusted_proxies
    # uvicorn believes X-Forwarded-For from loopback unless told otherwise
    _serve(app_, listener, proxy_headers=bool(proxies), forwarded_allow_ips=proxies)


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


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise InvalidInput(f"port {port} is out of range: use 1 to 65535 (or 0 for any free one)")


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, before anything says the server is up; a
    failure is one line that names the port."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise InvalidInput(f"cannot serve on host {host!r}: {exc.strerror}") from None
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts reuse the port
    try:
        listener.bind(address)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {port} is in use (on {host}): stop what holds it, or pass another --port"
            )
            raise InvalidInput(message) from None
        raise InvalidInput(f"cannot serve on {host} port {port}: {exc.strerror}") from None
    return listener


def _serve(app_: Any, listener: socket.socket, **options: Any) -> None:
    """Run uvicorn on the bound socket; every request leaves a line on stderr."""
    import logging

    import uvicorn

    from plinth.api.middleware import access_log as log

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    config = uvicorn.Config(
        app_,
        log_level="warning",
        access_log=False,
        # SIGTERM: requests in flight get this long; an upload trickling in then is cut
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        **options,
    )
    uvicorn.Server(config).run(sockets=[listener])


SHUTDOWN_GRACE_S = 20


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
    keep_serving: Annotated[
        bool,
        typer.Option(
            "--keep-serving/--stop-serving",
            help="Leave the deployment answering when the tour ends (stop it with "
            "'plinth deployments delete').",
        ),
    ] = True,
) -> None:
    """A guided tour: track a scikit-learn sweep, rank the runs, register the best
    model, deploy it with the runner-up as a canary and send it traffic."""
    from plinth.demo import run_demo

    run_demo(project, keep_serving=keep_serving)


@app.command()
def version() -> None:
    """Print Plinth's version (as --version does)."""
    _print_version(True)


def main() -> None:
    """Entry point: Plinth errors, and values an option's rules refuse before any
    request (``--cpus -1``), print as one line each, not a traceback."""
    try:
        app()
    except PlinthError as exc:
        _fail([exc.message], 1)
    except Exception as exc:
        pydantic_core = sys.modules.get("pydantic_core")  # loaded before any such check
        if pydantic_core is None or not isinstance(exc, pydantic_core.ValidationError):
            raise
        said = [".".join(map(str, e["loc"])) + f": {e['msg']}" for e in exc.errors()]
        _fail([line.removeprefix(": ") for line in said], 2)


def _fail(lines: list[str], code: int) -> None:
    console = Console(stderr=True, soft_wrap=True)
    for line in lines:
        console.print(f"[red]error:[/] {line}", highlight=False)
    raise SystemExit(code) from None
