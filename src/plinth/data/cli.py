"""``plinth datasets``: call the client, render with Rich."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from plinth.console import JsonFlag, escape, print_json, size, when
from plinth.console import client as _client

if TYPE_CHECKING:
    from plinth.data import schemas as s

datasets_app = typer.Typer(
    help="Versioned datasets: push files (local or s3://, gs://, az://) as a version, pull "
    "one back, list, compare. A version is NAME@VERSION (churn@3); NAME alone is the newest.",
    no_args_is_help=True,
)
console = Console()

ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name.")]
Ref = Annotated[str, typer.Argument(help="A version: NAME@VERSION, or NAME for the newest.")]


@datasets_app.command("push")
def push(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    paths: Annotated[
        list[str],
        typer.Argument(help="Files or folders, local or fsspec URLs; each keeps its own name."),
    ],
    project: ProjectOpt,
    message: Annotated[str, typer.Option("--message", "-m", help="What changed.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Push files as the next version of a dataset. Only content the project does not
    hold is uploaded; unchanged data makes no new version."""
    found = _client().push_dataset(project, name, paths, message=message)
    if as_json:
        print_json(found.model_dump())
        return
    if found.created:
        console.print(f"pushed [bold]{escape(found.ref)}[/]: {_summary(found)}")
    else:
        console.print(f"unchanged: the newest version is [bold]{escape(found.ref)}[/]")
    _print_warnings(found)


def _print_warnings(version: s.DatasetVersion) -> None:
    from plinth.data.rules import describe

    report = version.validation
    for result in report.warnings if report is not None else []:
        console.print(f"[yellow]warning[/] {escape(describe(result))}")


rules_app = typer.Typer(
    help="A dataset's validation rules (YAML), checked on every push where the data is read.",
    no_args_is_help=True,
)


@rules_app.command("set")
def rules_set(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    rules_file: Annotated[Path, typer.Argument(help="A YAML file: rules: [{check: range, …}].")],
    project: ProjectOpt,
    as_json: JsonFlag = False,
) -> None:
    """Replace a dataset's rules with those in a YAML file (an empty list removes them)."""
    from plinth.errors import InvalidInput

    if not rules_file.is_file():
        raise InvalidInput(f"no such file: {rules_file}")
    found = _client().set_dataset_rules(project, name, rules_file)
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    console.print(f"{len(found.rules)} rules set on [bold]{escape(name)}[/]")


@rules_app.command("show")
def rules_show(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    project: ProjectOpt,
    as_json: JsonFlag = False,
) -> None:
    """Show a dataset's rules."""
    from plinth.data.schemas import rule_name

    found = _client().dataset_rules(project, name)
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    table = Table("rule", "check", "column", "severity", "files", "settings", title=name)
    for rule in found.rules:
        settings = rule.model_dump(
            exclude={"name", "check", "column", "severity", "files"}, exclude_none=True
        )
        table.add_row(
            escape(rule_name(rule)),
            rule.check,
            escape(str(getattr(rule, "column", "-"))),
            rule.severity,
            escape(rule.files),
            escape(", ".join(f"{k}={v}" for k, v in settings.items())),
        )
    console.print(table)


@datasets_app.command("pull")
def pull(
    ref: Ref,
    dest: Annotated[Path, typer.Argument(help="Folder to write the files into.")],
    project: ProjectOpt,
    as_json: JsonFlag = False,
) -> None:
    """Download a version into a folder: verified, and only the files missing there."""
    found = _client().pull_dataset(project, ref, dest)
    if as_json:
        print_json(found.model_dump())
        return
    console.print(f"pulled [bold]{escape(found.ref)}[/] into {escape(str(dest))}")


@datasets_app.command("list")
def list_datasets(project: ProjectOpt, as_json: JsonFlag = False) -> None:
    """List a project's datasets with their newest version."""
    found = _client().list_datasets(project)
    if as_json:
        print_json([d.model_dump() for d in found])
        return
    table = Table("name", "versions", "latest", "updated", title=f"datasets of {project}")
    for d in found:
        table.add_row(
            escape(d.name), str(d.versions), str(d.latest_version or "-"), when(d.updated_at)
        )
    console.print(table)


@datasets_app.command("versions")
def versions(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    project: ProjectOpt,
    as_json: JsonFlag = False,
) -> None:
    """List a dataset's versions, oldest first."""
    found = _client().list_dataset_versions(project, name)
    if as_json:
        print_json([v.model_dump() for v in found])
        return
    table = Table("version", "files", "size", "rows", "pushed", "by", "message", title=name)
    for v in found:
        table.add_row(
            str(v.version),
            str(v.files),
            size(v.size),
            _rows(v.rows),
            when(v.created_at),
            escape(v.created_by),
            escape(v.message),
        )
    console.print(table)


@datasets_app.command("show")
def show(ref: Ref, project: ProjectOpt, as_json: JsonFlag = False) -> None:
    """Show a version: its files, and each table's schema and row count."""
    client = _client()
    version = client.get_dataset_version(project, ref)
    files = client.dataset_files(project, version.ref)
    if as_json:
        print_json({**version.model_dump(), "files": [f.model_dump() for f in files]})
        return
    console.print(f"[bold]{escape(version.ref)}[/] in project [bold]{escape(project)}[/]")
    for key, value in (
        ("digest", f"sha256:{version.digest}"),
        ("pushed", f"{when(version.created_at)} by {version.created_by}"),
        ("contents", _summary(version)),
        ("message", version.message or "-"),
    ):
        console.print(f"  {key:9} {escape(value)}")
    table = Table("path", "size", "rows", "columns")
    for f in files:
        columns = (
            ", ".join(f"{c.name}: {c.type}" for c in f.table.columns[:8])
            + (f", … ({len(f.table.columns)} in all)" if len(f.table.columns) > 8 else "")
            if f.table
            else "-"
        )
        table.add_row(
            escape(f.path), size(f.size), _rows(f.table.rows if f.table else None), escape(columns)
        )
    console.print(table)


@datasets_app.command("profile")
def profile(
    ref: Ref,
    project: ProjectOpt,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Only this file of the version.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show each tabular file's profile: nulls, ranges, mean and deviation, median,
    and each column's distribution (a histogram, or its most frequent values)."""
    from plinth.errors import NotFound

    found = _client().dataset_profiles(project, ref)
    if file is not None:
        if file not in found:
            raise NotFound(f"{ref} has no profile of {file!r}")
        found = {file: found[file]}
    if as_json:
        print_json({path: p.model_dump(exclude_none=True) for path, p in found.items()})
        return
    if not found:
        console.print(f"{escape(ref)} has no profiled tabular files")
    for path, p in found.items():
        sampled = "" if p.sampled == p.rows else f" (distributions from {p.sampled:,} sampled)"
        console.print(f"[bold]{escape(path)}[/]: {p.rows:,} rows{sampled}")
        table = Table(
            "column", "type", "nulls", "min", "max", "mean", "std", "median", "distribution"
        )
        for c in p.columns:
            total = c.count + c.nulls
            table.add_row(
                escape(c.name),
                escape(c.type),
                f"{c.nulls / total:.1%}" if total else "-",
                _short(c.min),
                _short(c.max),
                _short(c.mean),
                _short(c.std),
                _short(c.quantiles.get("p50")),
                escape(_distribution(c)),
            )
        console.print(table)
        if p.columns_left_out:
            console.print(f"  ({p.columns_left_out} more columns were not profiled)")


def _distribution(c: s.ColumnProfile) -> str:
    """A histogram as a sparkline; categories as their most frequent values."""
    if c.histogram is not None and c.histogram.counts:
        peak = max(c.histogram.counts) or 1
        return "".join(_BARS[round(n / peak * (len(_BARS) - 1))] for n in c.histogram.counts)
    if c.top and c.count:
        shown = ", ".join(f"{t.value} {t.count / c.count:.0%}" for t in c.top[:3])
        more = c.distinct_over or c.distinct
        return shown + (f" (of {more:,}{'+' if c.distinct_over else ''})" if more else "")
    return ""


_BARS = " ▁▂▃▄▅▆▇█"


def _short(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value[:24]
    return f"{value:.4g}"


@datasets_app.command("diff")
def diff(
    old: Annotated[str, typer.Argument(help="The older version, NAME@VERSION.")],
    new: Annotated[str, typer.Argument(help="The newer version, NAME@VERSION or NAME.")],
    project: ProjectOpt,
    as_json: JsonFlag = False,
) -> None:
    """What changed between two versions: files added, removed and changed, their
    columns, and row counts."""
    d = _client().diff_datasets(project, old, new)
    if as_json:
        print_json(d.model_dump())
        return
    console.print(
        f"[bold]{escape(d.name)}@{d.old}[/] → [bold]{escape(d.name)}@{d.new}[/]: "
        f"{d.added} added, {d.removed} removed, {d.changed} changed, {d.unchanged} unchanged; "
        f"rows {_rows(d.rows[0])} → {_rows(d.rows[1])}"
    )
    marks = {"added": "[green]+[/]", "removed": "[red]-[/]", "changed": "[yellow]~[/]"}
    for c in d.changes:
        rows = _row_change(c)
        console.print(f"  {marks[c.change]} {escape(c.path)}{rows}")
        for col in c.columns:
            was = f"{col.old} → {col.new}" if col.change == "changed" else (col.new or col.old)
            console.print(
                f"      {marks[col.change]} column {escape(col.name)}: {escape(was or '')}"
            )


def _row_change(c: s.FileChange) -> str:
    old = c.old.table.rows if c.old and c.old.table else None
    new = c.new.table.rows if c.new and c.new.table else None
    if c.change == "changed" and (old is not None or new is not None):
        return f"  (rows {_rows(old)} → {_rows(new)})"
    return ""


def _summary(v: s.DatasetVersion) -> str:
    rows = f", {_rows(v.rows)} rows" if v.rows is not None else ""
    return f"{v.files} files, {size(v.size)}{rows}"


def _rows(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"
