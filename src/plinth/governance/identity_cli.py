"""``plinth admin``, ``plinth users`` and ``plinth tokens``."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from plinth.console import client as _client
from plinth.console import escape
from plinth.core.access import Role
from plinth.errors import InvalidInput

if TYPE_CHECKING:
    from plinth.governance import schemas as s

admin_app = typer.Typer(help="Set up a server's first admin.", no_args_is_help=True)
users_app = typer.Typer(help="Create users (platform admins only).", no_args_is_help=True)
tokens_app = typer.Typer(help="Create, list and revoke your API tokens.", no_args_is_help=True)
console = Console()


def _show_new_token(new: s.NewToken) -> None:
    console.print(f"token [bold]{new.info.id}[/] for {new.info.user} — shown once, keep it:")
    typer.echo(new.token)
    console.print("use it as PLINTH_TOKEN=… (SDK, CLI) or 'Authorization: Bearer …'", style="dim")


@admin_app.command("init")
def init(name: Annotated[str, typer.Option(help="The admin's user name.")] = "admin") -> None:
    """Create the first admin and print their token. It works on this machine's home
    (PLINTH_HOME, or PLINTH_DATABASE_URL), never over the network, so run it where the
    server's home is. From then on every request needs a token, on loopback too; there
    is no default credential."""
    from sqlalchemy.engine import make_url

    from plinth.governance.identity import init_admin
    from plinth.settings import Settings

    settings = Settings()
    created = init_admin(settings, name)
    home = make_url(settings.resolved_database_url()).render_as_string(hide_password=True)
    console.print(f"admin [bold]{created.user.name}[/] created in {home}", highlight=False)
    _show_new_token(created.token)


@users_app.command("create")
def create_user(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="Make a platform admin.")] = False,
) -> None:
    """Create a user and print their first token."""
    created = _client().create_user(name, is_admin=admin)
    console.print(f"user [bold]{created.user.name}[/] created")
    _show_new_token(created.token)


@users_app.command("password")
def set_password(name: str) -> None:
    """Set a user's password for the web UI: yours (asks for the current one first, once
    you have one), or anyone's as an admin. Every other session of that user ends."""
    client = _client()
    me = client.current_user()
    current = None
    if me.name == name and me.has_password:
        current = typer.prompt("Current password", hide_input=True)
    password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    client.set_password(name, password, current_password=current)
    console.print(f"password of {name} set; their other web sessions are logged out")


def _days(text: str | None) -> float | None:
    """``30d``, ``12h`` or a number of days."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([dh]?)", text.strip())
    if not match:
        raise InvalidInput(f"--expires takes e.g. 30d or 12h, not {text!r}")
    value = float(match.group(1))
    return value / 24 if match.group(2) == "h" else value


@tokens_app.command("create")
def create_token(
    name: Annotated[str, typer.Option(help="What the token is for.")] = "token",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d or 12h.")] = None,
    project: Annotated[str | None, typer.Option(help="Valid only in this project.")] = None,
    role: Annotated[Role | None, typer.Option(help="At most this role there.")] = None,
) -> None:
    """Create an API token for yourself (or for a job); it is printed once and stored
    only hashed. With --project and --role it works only there, with at most that role."""
    token = _client().create_token(
        name, expires_in_days=_days(expires), project=project, role=role.value if role else None
    )
    _show_new_token(token)


@tokens_app.command("list")
def list_tokens(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Your tokens (an admin sees everyone's); secrets are never shown again."""
    tokens = _client().list_tokens()
    if as_json:
        typer.echo(json.dumps([t.model_dump() for t in tokens], indent=2))
        return
    table = Table("id", "name", "user", "scope", "created", "expires", "state")
    for token in tokens:
        state = "[red]revoked[/]" if token.revoked_at else "[green]active[/]"
        table.add_row(
            token.id,
            escape(token.name),
            escape(token.user),
            escape(f"{token.project} ({token.role})") if token.project else "all",
            _when(token.created_at),
            _when(token.expires_at),
            state,
        )
    console.print(table)


@tokens_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="Its id, or a unique prefix (8+ characters).")],
) -> None:
    """Revoke a token at once."""
    token = _client().revoke_token(token_id)
    console.print(f"token {token.id} ({escape(token.name)}) revoked")


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"
