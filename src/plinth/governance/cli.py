"""``plinth audit``: list, export and verify the audit trail."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from plinth.console import client as _client
from plinth.console import escape
from plinth.errors import InvalidInput

audit_app = typer.Typer(
    help="Read and verify the tamper-evident audit trail.", no_args_is_help=True
)
console = Console()


def _time(value: str | None) -> float | None:
    """ISO 8601 (``2026-11-28``, ``2026-11-28T17:00``) or seconds since the epoch."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"not a time: {value!r}; use ISO 8601 or epoch seconds") from None
    return when.timestamp()


Project = Annotated[str | None, typer.Option(help="Only this project.")]
Actor = Annotated[str | None, typer.Option(help="Only this user or token owner.")]
Action = Annotated[str | None, typer.Option(help="Only this action, e.g. runs.create.")]
Since = Annotated[str | None, typer.Option(help="From this time (ISO 8601 or epoch).")]
Until = Annotated[str | None, typer.Option(help="Before this time (ISO 8601 or epoch).")]


@audit_app.command("list")
def list_events(
    project: Project = None,
    actor: Actor = None,
    action: Action = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(help="Most events to show.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show audit events, oldest first."""
    events = list(
        _client().audit_events(
            project=project,
            actor=actor,
            action=action,
            since=_time(since),
            until=_time(until),
            limit=limit,
        )
    )
    if as_json:
        typer.echo(json.dumps([e.model_dump() for e in events], indent=2))
        return
    table = Table("id", "time", "actor", "source", "project", "action", "object", "outcome")
    for e in events:
        when = dt.datetime.fromtimestamp(e.at).strftime("%m-%d %H:%M:%S")
        outcome = "[green]ok[/]" if e.outcome == "ok" else f"[red]{e.outcome}[/]"
        shown = [escape(text or "") for text in (e.actor, e.source, e.project, e.action, e.object)]
        table.add_row(str(e.id), when, *shown, outcome)
    console.print(table)


@audit_app.command("export")
def export(
    project: Project = None,
    actor: Actor = None,
    action: Action = None,
    since: Since = None,
    until: Until = None,
) -> None:
    """Write every matching event to stdout as JSON lines (for a SIEM or an archive)."""
    for event in _client().audit_events(
        project=project, actor=actor, action=action, since=_time(since), until=_time(until)
    ):
        sys.stdout.write(event.model_dump_json() + "\n")


@audit_app.command("verify")
def verify() -> None:
    """Check the whole hash chain; exit 1 and name the first bad event if it is broken."""
    verdict = _client().verify_audit()
    if verdict.ok:
        console.print(
            f"[green]audit trail intact[/]: {verdict.checked} events, head {verdict.head}",
            soft_wrap=True,
        )
        return
    Console(stderr=True).print(
        f"[red]audit trail broken[/] at event {verdict.broken_at}: {verdict.reason} "
        f"({verdict.checked} events verified before it)",
        soft_wrap=True,
    )
    raise typer.Exit(1)


def lineage(
    uri: Annotated[
        str,
        typer.Argument(
            help="datasets:/PROJECT/NAME@VERSION, runs:/RUN_ID, models:/PROJECT/NAME/VERSION "
            "or deployments:/PROJECT/NAME."
        ),
    ],
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Its project (read from the URI).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Lineage: what a dataset version, run or model version came from (upstream) and
    what came of it (downstream), as two trees."""
    from rich.tree import Tree

    graph = _client().lineage(uri, project=project)
    if as_json:
        typer.echo(json.dumps(graph.model_dump(), indent=2))
        return
    ups: dict[str, list[tuple[str, str]]] = {}
    downs: dict[str, list[tuple[str, str]]] = {}
    for e in graph.edges:
        ups.setdefault(e.dst, []).append((e.src, e.relation))
        downs.setdefault(e.src, []).append((e.dst, e.relation))

    def grow(
        tree: Tree, node: str, links: dict[str, list[tuple[str, str]]], seen: set[str]
    ) -> None:
        for other, relation in sorted(links.get(node, [])):
            branch = tree.add(f"[dim]{relation}[/] {escape(other)}")
            if other not in seen:
                grow(branch, other, links, seen | {other})

    for title, links in (("upstream", ups), ("downstream", downs)):
        tree = Tree(f"[bold]{escape(graph.root)}[/] [dim]{title}[/]")
        grow(tree, graph.root, links, {graph.root})
        if not tree.children:
            tree.add("[dim](nothing recorded)[/]")
        console.print(tree)
