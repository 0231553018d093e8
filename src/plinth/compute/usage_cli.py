"""``plinth usage``: resource-hours and cost by project, user, pool or job; calls the
client, renders with Rich."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from plinth.compute.cli import _Command
from plinth.console import JsonFlag, escape, print_json, when
from plinth.console import client as _client

if TYPE_CHECKING:
    from plinth.compute import schemas as s

usage_app = typer.Typer(cls=_Command, rich_markup_mode=None)
console = Console()
GROUPINGS = ("project", "user", "pool", "job")


@usage_app.callback(invoke_without_command=True)
def usage(
    by: Annotated[str, typer.Option(help="project, user, pool or job.")] = "project",
    since: Annotated[
        str | None, typer.Option(help="From: 7d, 12h (back from now) or an ISO date.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="To (default: now), as --since.")] = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Rows at most.")] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Resource-hours (CPU, GPU, GiB of memory granted) and cost, largest first:
    plinth usage --by user --since 7d"""
    from plinth.errors import InvalidInput

    if by not in GROUPINGS:
        raise InvalidInput(f"--by {by!r}: choose one of {', '.join(GROUPINGS)}")
    with _client() as c:
        found = c.usage(by=by, since=since, until=until, project=project, limit=limit)
    if as_json:
        print_json(found.model_dump())
        return
    _render(found)


def _render(found: s.Usage) -> None:
    prices = found.prices
    console.print(
        f"Usage by {found.by} from {when(found.since) if found.since else 'the start'} "
        f"to {when(found.until)}; prices per hour: CPU {prices.cpu_hour:g}, "
        f"GPU {prices.gpu_hour:g}, GiB {prices.gib_hour:g}"
    )
    with_project = found.by == "job"
    columns = [found.by, *(["project"] if with_project else []), "jobs", "attempts"]
    table = Table(*columns, "hours", "cpu-hours", "gpu-hours", "GiB-hours", "cost")
    for column in table.columns[len(columns) - 2 :]:
        column.justify = "right"
    for i, row in enumerate([*found.rows, found.total]):
        table.add_row(
            escape(row.key),
            *([escape(row.project or "")] if with_project else []),
            str(row.jobs),
            str(row.attempts),
            f"{row.hours:,.3f}",
            f"{row.cpu_hours:,.3f}",
            f"{row.gpu_hours:,.3f}",
            f"{row.gib_hours:,.3f}",
            f"{row.cost:,.2f}",
            end_section=i == len(found.rows) - 1,
        )
    console.print(table)
