"""``plinth models``: call the client, render with Rich."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from plinth.console import JsonFlag, escape, for_terminal
from plinth.console import client as _client
from plinth.console import print_json as _print_json
from plinth.console import when as _when

if TYPE_CHECKING:
    from plinth.registry import schemas as s

models_app = typer.Typer(
    help="Registered models: versions, aliases, cards. A version is NAME and VERSION with "
    "--project, or a URI: models:/PROJECT/NAME/VERSION or models:/PROJECT/NAME@ALIAS.",
    no_args_is_help=True,
)
console = Console()

ProjectOpt = Annotated[str | None, typer.Option("--project", "-p", help="Project name.")]
Model = Annotated[str, typer.Argument(help="Model name, or a models:/ URI.")]
VersionArg = Annotated[str | None, typer.Argument(help="Version number or alias (not with a URI).")]


def _named(model: str, version: str | None, project: str | None) -> tuple[str, str | None, Any]:
    """(uri_or_project, name, version) as the client takes them."""
    from plinth.errors import InvalidInput

    if model.startswith("models:/"):
        if version is not None or project is not None:
            raise InvalidInput("a models:/ URI names the project and version itself")
        return model, None, None
    if project is None:
        raise InvalidInput(f"which project is {model!r} in? pass --project, or use a models:/ URI")
    if version is None:
        raise InvalidInput(f"which version of {model!r}? give a number or an alias")
    return project, model, version


def _need_project(project: str | None) -> str:
    from plinth.errors import InvalidInput

    if project is None:
        raise InvalidInput("pass --project")
    return project


@models_app.command("list")
def list_models(project: ProjectOpt = None, as_json: JsonFlag = False) -> None:
    """List a project's models with their latest version and aliases."""
    models = _client().list_models(_need_project(project))
    if as_json:
        _print_json([m.model_dump() for m in models])
        return
    table = Table("name", "versions", "latest", "aliases", "updated", title=f"models of {project}")
    for m in models:
        aliases = ", ".join(f"{a}→{v}" for a, v in m.aliases.items()) or "-"
        latest = str(m.latest_version or "-")
        table.add_row(escape(m.name), str(m.versions), latest, escape(aliases), _when(m.updated_at))
    console.print(table)


@models_app.command("show")
def show(
    model: Model,
    version: VersionArg = None,
    project: ProjectOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a model (its aliases, its latest version), or one version of it."""
    client = _client()
    if not model.startswith("models:/") and version is None:
        found = client.get_model(_need_project(project), model)
        if as_json:
            _print_json(found.model_dump())
            return
        console.print(f"[bold]{escape(found.name)}[/] in project [bold]{escape(found.project)}[/]")
        console.print(f"versions: {found.versions}, latest: {found.latest_version or '-'}")
        for alias, number in found.aliases.items():
            console.print(f"  @{escape(alias)} → version {number}")
        return
    shown = client.get_model_version(*_named(model, version, project))
    if as_json:
        _print_json(shown.model_dump())
        return
    _print_version(shown)


def _print_version(v: s.ModelVersion) -> None:
    console.print(f"[bold]{escape(v.name)}[/] version [bold]{v.version}[/]  [cyan]{v.uri}[/]")
    rows = [
        ("status", v.status),
        ("flavor", v.flavor),
        ("digest", f"sha256:{v.digest}"),
        ("run", v.run_id or "-"),
        ("registered", f"{_when(v.created_at)} by {v.created_by}"),
        ("aliases", ", ".join(v.aliases) or "-"),
        (
            "needs pickle",
            ("yes, marked unsafe_pickle" if v.unsafe_pickle else "yes, not servable")
            if v.needs_pickle
            else "no",
        ),
    ]
    for key, value in rows:
        console.print(f"  {key:13} {escape(str(value))}")
    for key, value in sorted(v.tags.items()):
        console.print(f"  tag {escape(key)} = {escape(value)}")


@models_app.command("versions")
def versions(model: Model, project: ProjectOpt = None, as_json: JsonFlag = False) -> None:
    """List a model's versions, oldest first."""
    found = _client().list_model_versions(_need_project(project), model)
    if as_json:
        _print_json([v.model_dump() for v in found])
        return
    table = Table("version", "status", "flavor", "aliases", "run", "registered", title=model)
    for v in found:
        aliases = ", ".join(v.aliases) or "-"
        table.add_row(
            str(v.version),
            v.status,
            v.flavor,
            escape(aliases),
            v.run_id or "-",
            _when(v.created_at),
        )
    console.print(table)


@models_app.command("alias")
def alias(
    model: Model,
    name: Annotated[str, typer.Argument(help="The alias: champion, challenger, any name.")],
    version: Annotated[
        int | None, typer.Argument(help="Point it here; omit to show history.")
    ] = None,
    project: ProjectOpt = None,
    reason: Annotated[str, typer.Option(help="Why, kept in the alias's history.")] = "",
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Move an alias to a version (or remove it); without a version, show its history."""
    client, where = _client(), _need_project(project)
    if delete or version is not None:
        event = (
            client.delete_model_alias(where, model, name, reason=reason)
            if delete
            else client.set_model_alias(where, model, name, version or 0, reason=reason)
        )
        if as_json:
            _print_json(event.model_dump())
            return
        was = f"from version {event.previous} " if event.previous else ""
        now = f"to version {event.version}" if event.version else "removed"
        console.print(f"@{escape(name)} of {escape(model)}: {was}{now}")
        return
    history = client.model_alias_history(where, model, name)
    if as_json:
        _print_json([e.model_dump() for e in history])
        return
    table = Table("when", "change", "by", "reason", title=f"{model}@{name}")
    for e in history:
        change = f"{e.previous or '-'} → {e.version or 'removed'}"
        table.add_row(_when(e.at), change, escape(e.actor), escape(e.reason))
    console.print(table)


@models_app.command("card")
def card(
    model: Model,
    version: VersionArg = None,
    project: ProjectOpt = None,
    html: Annotated[bool, typer.Option("--html", help="HTML instead of Markdown.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write it here.")] = None,
) -> None:
    """Print (or write) a version's model card."""
    text = _client().model_card(
        *_named(model, version, project), format="html" if html else "markdown"
    )
    if output is not None:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {escape(str(output))}")
    else:
        typer.echo(for_terminal(text))


@models_app.command("archive")
def archive(
    model: Model,
    version: VersionArg = None,
    project: ProjectOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Archive a version: kept, readable, takes no alias."""
    found = _client().archive_model_version(*_named(model, version, project))
    if as_json:
        _print_json(found.model_dump())
        return
    console.print(f"archived {escape(found.uri)}")
