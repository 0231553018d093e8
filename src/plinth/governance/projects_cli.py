"""``plinth projects``: projects, their members and their secrets."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from plinth.console import JsonFlag
from plinth.console import client as _client
from plinth.core.access import Role
from plinth.governance.identity_cli import _when

projects_app = typer.Typer(help="Projects, their members and their secrets.", no_args_is_help=True)
console = Console()


@projects_app.command("list")
def list_projects(as_json: JsonFlag = False) -> None:
    """The projects you have a role in (a platform admin sees all)."""
    projects = _client().list_projects()
    if as_json:
        typer.echo(json.dumps([p.model_dump() for p in projects], indent=2))
        return
    table = Table("name", "created")
    for p in projects:
        table.add_row(p.name, _when(p.created_at))
    console.print(table)


@projects_app.command("create")
def create_project(name: str) -> None:
    """Create an empty project; you become its admin. (Starting a run in a project
    that does not exist creates it too.)"""
    project = _client().create_project(name)
    console.print(f"project [bold]{project.name}[/] created; you are its admin")


members_app = typer.Typer(help="Roles in a project: viewer, editor, admin.", no_args_is_help=True)


@members_app.command("list")
def list_members(
    project: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Who has which role in a project."""
    members = _client().list_members(project)
    if as_json:
        typer.echo(json.dumps([m.model_dump() for m in members], indent=2))
        return
    table = Table("user", "role")
    for member in members:
        table.add_row(member.user, member.role.value)
    console.print(table)


@members_app.command("add")
def add_member(
    project: str,
    user: str,
    role: Annotated[Role, typer.Option(help="viewer reads; editor writes; admin manages.")],
) -> None:
    """Give a user a role in a project (or change it); project admins only."""
    member = _client().add_member(project, user, role.value)
    console.print(f"{member.user} is now {member.role.value} of {project}")


@members_app.command("remove")
def remove_member(project: str, user: str) -> None:
    """Take a user's role in a project away."""
    _client().remove_member(project, user)
    console.print(f"{user} removed from {project}")


secrets_app = typer.Typer(
    help="Secrets for a project's jobs: set, list names, delete.", no_args_is_help=True
)


@secrets_app.command("set")
def set_secret(
    project: str,
    name: str,
    value: Annotated[
        str, typer.Option(prompt=True, hide_input=True, help="Asked for (hidden) when not given.")
    ],
) -> None:
    """Store a secret sealed under the project's key; it can never be read back."""
    _client().set_secret(project, name, value)
    console.print(f"secret {name} of {project} stored")


@secrets_app.command("list")
def list_secrets(project: str) -> None:
    """The names of a project's secrets (never their values)."""
    table = Table("name", "updated")
    for secret in _client().list_secrets(project):
        table.add_row(secret.name, _when(secret.updated_at))
    console.print(table)


@secrets_app.command("delete")
def delete_secret(project: str, name: str) -> None:
    """Delete a secret."""
    _client().delete_secret(project, name)
    console.print(f"secret {name} of {project} deleted")
