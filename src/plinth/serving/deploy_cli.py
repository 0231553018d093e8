"""``plinth deployments``: call the client, render with Rich."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from plinth.console import JsonFlag, escape, print_json
from plinth.console import client as _client

if TYPE_CHECKING:
    from plinth.serving import schemas as s

deployments_app = typer.Typer(
    help="Deployments: a model version served on supervised replicas behind one URL, "
    "with canary, shadow, promote, rollback and autoscaling.",
    no_args_is_help=True,
)
console = Console()
ProjectOpt = Annotated[
    str | None, typer.Option("--project", "-p", help="Project (default: the model URI's).")
]
Reason = Annotated[str, typer.Option(help="Why: kept in the deployment's history.")]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where a PyTorch model runs in each replica: auto (CUDA when there is one), "
        "cpu, cuda or cuda:N. Other flavors ignore it.",
    ),
]
RecordSample = Annotated[
    float | None,
    typer.Option(
        "--record-sample",
        min=0.0,
        max=1.0,
        help="Share of predictions recorded (0 to 1) under the home's serving/records/.",
    ),
]


def _project(project: str | None, uri: str | None = None) -> str:
    from plinth.errors import InvalidInput
    from plinth.registry.uri import parse

    if project is not None:
        return project
    if uri is not None:
        return parse(uri).project
    raise InvalidInput("pass --project")


def _show(d: s.Deployment, as_json: bool = False) -> None:
    if as_json:
        print_json(d.model_dump())
        return
    split = ", ".join(f"v{e.version} {e.weight}%" for e in d.split)
    shadow = f"v{d.shadow.version}" if d.shadow else "-"
    console.print(f"[bold]{escape(d.name)}[/] ({escape(d.model)}) at [bold]{d.url}[/]")
    console.print(f"  split: {split}   shadow: {shadow}")
    console.print(f"  replicas: {d.desired_replicas} (min {d.min_replicas}, max {d.max_replicas})")
    table = Table("replica", "pid", "state", "restarts")
    for r in d.replicas:
        table.add_row(str(r.replica), str(r.pid or "-"), r.state, str(r.restarts))
    console.print(table)


@deployments_app.command("create")
def create(
    name: str,
    model: Annotated[str, typer.Option("--model", help="models:/PROJECT/NAME@ALIAS or /VERSION")],
    replicas: Annotated[int, typer.Option(min=0)] = 1,
    project: ProjectOpt = None,
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
    min_replicas: Annotated[int | None, typer.Option("--min-replicas", min=0)] = None,
    max_replicas: Annotated[int | None, typer.Option("--max-replicas", min=1)] = None,
    record_sample: RecordSample = 0.0,
    device: DeviceOpt = "auto",
    reason: Reason = "",
    as_json: JsonFlag = False,
) -> None:
    """Serve a model version as NAME."""
    d = _client().create_deployment(
        _project(project, model),
        name,
        model,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        port=port,
        record_sample=record_sample or 0.0,
        device=device,
        reason=reason,
    )
    _show(d, as_json)


@deployments_app.command("update")
def update(
    name: str,
    project: ProjectOpt = None,
    canary: Annotated[str | None, typer.Option(help="A version to send --weight % to.")] = None,
    weight: Annotated[int | None, typer.Option(min=0, max=100)] = None,
    shadow: Annotated[str | None, typer.Option(help="A version that sees copies.")] = None,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="Remove the shadow.")] = False,
    min_replicas: Annotated[int | None, typer.Option("--min-replicas", min=0)] = None,
    max_replicas: Annotated[int | None, typer.Option("--max-replicas", min=1)] = None,
    record_sample: RecordSample = None,
    reason: Reason = "",
    as_json: JsonFlag = False,
) -> None:
    """Move traffic to a canary, add a shadow, change replica bounds or the share of
    predictions recorded."""
    changes: dict[str, Any] = {"reason": reason, "shadow_off": no_shadow}
    for key, value in [
        ("canary", canary),
        ("weight", weight),
        ("shadow", shadow),
        ("min_replicas", min_replicas),
        ("max_replicas", max_replicas),
        ("record_sample", record_sample),
    ]:
        if value is not None:
            changes[key] = value
    d = _client().update_deployment(_project(project, canary or shadow), name, **changes)
    _show(d, as_json)


@deployments_app.command("promote")
def promote(name: str, project: ProjectOpt = None, reason: Reason = "") -> None:
    """The canary takes all the traffic."""
    _show(_client().promote_deployment(_project(project), name, reason=reason))


@deployments_app.command("rollback")
def rollback(name: str, project: ProjectOpt = None, reason: Reason = "") -> None:
    """Back to the traffic split before the last change."""
    _show(_client().rollback_deployment(_project(project), name, reason=reason))


@deployments_app.command("scale")
def scale(
    name: str,
    replicas: Annotated[int, typer.Option(min=0)],
    project: ProjectOpt = None,
    reason: Reason = "",
) -> None:
    """Set the number of replicas (within the autoscaler's bounds)."""
    _show(_client().scale_deployment(_project(project), name, replicas, reason=reason))


@deployments_app.command("status")
def status(name: str, project: ProjectOpt = None, as_json: JsonFlag = False) -> None:
    """URL, traffic split, shadow and replicas (pid, state, restarts)."""
    _show(_client().get_deployment(_project(project), name), as_json)


@deployments_app.command("list")
def list_deployments(project: ProjectOpt = None, as_json: JsonFlag = False) -> None:
    """A project's deployments: model, URL, traffic split, replicas ready."""
    found = _client().list_deployments(_project(project))
    if as_json:
        print_json([d.model_dump() for d in found])
        return
    table = Table("name", "model", "url", "split", "replicas")
    for d in found:
        split = ", ".join(f"v{e.version} {e.weight}%" for e in d.split)
        ready = sum(r.state == "ready" for r in d.replicas)
        counts = f"{ready}/{d.desired_replicas}"
        table.add_row(escape(d.name), escape(d.model), d.url, split, counts)
    console.print(table)


@deployments_app.command("history")
def history(name: str, project: ProjectOpt = None, as_json: JsonFlag = False) -> None:
    """Every change of a deployment, newest first: what, who, when, why."""
    events = _client().deployment_history(_project(project), name)
    if as_json:
        print_json([e.model_dump() for e in events])
        return
    table = Table("when", "action", "actor", "reason")
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        table.add_row(when, e.action, escape(e.actor), escape(e.reason))
    console.print(table)


@deployments_app.command("records")
def records(
    name: str,
    project: ProjectOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 100,
    since: Annotated[
        str | None,
        typer.Option(help="Predictions made at or after: ISO 8601 (UTC if no offset) or epoch."),
    ] = None,
    version: Annotated[int | None, typer.Option(min=1, help="Only this version's.")] = None,
    shadow: Annotated[
        bool | None,
        typer.Option("--shadow/--no-shadow", help="Only the shadow's answers, or none of them."),
    ] = None,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="Oldest first (from --since, say).")
    ] = False,
    cursor: Annotated[str | None, typer.Option(help="Continue from a page's cursor.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Recorded predictions (--record-sample), newest first: id, version, status,
    latency, inputs and outputs."""
    page = _client().deployment_records(
        _project(project),
        name,
        limit=limit,
        since=since,
        version=version,
        shadow=shadow,
        order="asc" if oldest_first else "desc",
        cursor=cursor,
    )
    if as_json:
        print_json(page.model_dump(mode="json"))
        return
    table = Table(
        "recorded", "prediction", "version", "status", "ms", "shadow", "inputs", "outputs"
    )
    for r in page.records:
        when = "-"
        if r.recorded_at is not None:
            when = r.recorded_at.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        table.add_row(
            when,
            r.prediction_id,
            str(r.version),
            str(r.status or "-"),
            "-" if r.latency_ms is None else f"{r.latency_ms:.1f}",
            "yes" if r.shadow else "",
            escape(_brief(r.inputs, r.inputs_truncated)),
            escape(_brief(r.outputs, r.outputs_truncated)),
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


def _brief(value: Any, truncated: bool, width: int = 48) -> str:
    if truncated:
        return "(left out: too large)"
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


@deployments_app.command("delete")
def delete(name: str, project: ProjectOpt = None, reason: Reason = "") -> None:
    """Stop the replicas and remove the deployment (its history stays)."""
    _client().delete_deployment(_project(project), name, reason=reason)
    console.print(f"deleted {escape(name)}")
