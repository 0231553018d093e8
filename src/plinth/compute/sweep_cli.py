"""``plinth sweep``: run a hyperparameter sweep as jobs, with a progress bar while it
runs and a table of its trials, the best highlighted, when it ends."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from plinth.console import JsonFlag, escape, key_values, print_json
from plinth.console import client as _client

if TYPE_CHECKING:
    from plinth.compute.sweep import SweepResult

console = Console()


class _OneCommand(TyperGroup):
    """A group that is one command taking a trailing ``-- argv``: everything after
    the options goes to the callback, none of it is read as a subcommand's name."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super(TyperGroup, self).parse_args(ctx, args)  # a plain command's parsing

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [p for p in super().collect_usage_pieces(ctx) if p != self.subcommand_metavar]
        return [*pieces, "-- COMMAND..."]


sweep_app = typer.Typer(cls=_OneCommand, rich_markup_mode=None)


@sweep_app.callback(
    invoke_without_command=True,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def sweep(
    ctx: typer.Context,
    project: Annotated[str, typer.Option("--project", "-p", help="The trials' project.")],
    space: Annotated[Path, typer.Option(help="The search space, YAML or JSON (see docs).")],
    trials: Annotated[int, typer.Option(min=1, help="Trials in all.")] = 20,
    parallel: Annotated[int, typer.Option(min=1, help="Trials running at once.")] = 1,
    metric: Annotated[str, typer.Option(help="The metric the trials log.")] = "loss",
    direction: Annotated[str, typer.Option(help="minimize or maximize.")] = "minimize",
    pruner: Annotated[str, typer.Option(help="median, asha or none.")] = "median",
    objective: Annotated[
        str, typer.Option(help="A trial's value: its last logged value, or its best.")
    ] = "last",
    seed: Annotated[int | None, typer.Option(help="Seed of the sampler.")] = None,
    name: Annotated[str | None, typer.Option(help="The sweep's name (tag plinth.sweep).")] = None,
    cpus: Annotated[float, typer.Option(help="CPUs per trial.")] = 1.0,
    gpus: Annotated[int, typer.Option(help="GPUs per trial.")] = 0,
    memory: Annotated[str | None, typer.Option(help="Memory per trial, e.g. 4Gi.")] = None,
    pool: Annotated[str | None, typer.Option(help="Pool (default: the default one).")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    timeout: Annotated[str | None, typer.Option(help="Per trial, e.g. 30m.")] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Directory snapshotted for the trials (default: .).")
    ] = None,
    no_workdir: Annotated[
        bool, typer.Option("--no-workdir", help="Run in an empty directory.")
    ] = False,
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V, repeatable.")] = None,
    secret: Annotated[
        list[str] | None, typer.Option("--secret", help="A project secret's name, repeatable.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Search hyperparameters, each trial a job: plinth sweep -p P --space space.yaml
    --trials 50 --parallel 4 -- python train.py  (a trial gets --name=value per param)"""
    from plinth.compute.sweep import run_sweep
    from plinth.errors import InvalidInput

    argv = list(ctx.args)
    if not argv:
        raise InvalidInput(
            "give the command after --: plinth sweep -p P --space s.yaml -- python x.py"
        )
    options: dict[str, Any] = {
        "cpus": cpus,
        "gpus": gpus,
        "memory": memory,
        "pool": pool,
        "priority": priority,
        "timeout": timeout,
        "workdir": None if no_workdir else (workdir or Path(".")),
        "env": key_values(env, "--env"),
        "secrets": secret or [],
    }
    with _client() as c, _Bar(trials, metric, quiet=as_json) as bar:
        try:
            result = run_sweep(
                c,
                project,
                argv,
                space,
                trials=trials,
                parallel=parallel,
                metric=metric,
                direction=direction,  # type: ignore[arg-type]  # checked by run_sweep
                pruner=pruner,  # type: ignore[arg-type]
                objective=objective,  # type: ignore[arg-type]
                seed=seed,
                name=name,
                on_change=bar.update,
                **options,
            )
        except KeyboardInterrupt:
            bar.stop()
            Console(stderr=True).print("sweep interrupted: its running trials were cancelled")
            raise typer.Exit(130) from None
    if as_json:
        print_json(result.model_dump())
    else:
        show(result)


class _Bar:
    """Rich's progress bar over the trials that have ended, with the best so far."""

    def __init__(self, trials: int, metric: str, *, quiet: bool) -> None:
        self.metric = metric
        self.progress = Progress(
            TextColumn("[bold]sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=quiet,
            transient=True,
        )
        self.task = self.progress.add_task("starting", total=trials)

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.progress.stop()

    def update(self, result: SweepResult) -> None:
        ended = len(result.trials) - result.count("running")
        best = result.best
        shown = "-" if best is None or best.value is None else f"{best.value:.6g}"
        text = f"running {result.count('running')}  best {self.metric} {shown}"
        self.progress.update(self.task, completed=ended, description=text)


def show(result: SweepResult) -> None:
    """The trials, best highlighted, and a line naming the best."""
    from plinth.compute.sweep_space import arg_text

    names = sorted({k for t in result.trials for k in t.params})
    table = Table("trial", "state", result.metric, *names, "run", title=f"sweep {result.name}")
    best = result.best.number if result.best else None
    for t in result.trials:
        value = "-" if t.value is None else f"{t.value:.6g}"
        cells = [escape(_text(t.params.get(n, "-"))) for n in names]
        style = "bold green" if t.number == best else None
        table.add_row(str(t.number), t.state, value, *cells, (t.run_id or "-")[:8], style=style)
    console.print(table)
    counts = ", ".join(f"{result.count(s)} {s}" for s in ("complete", "pruned", "failed"))
    console.print(f"{counts}  (sweep run {result.run_id or '-'})")
    if result.best is None:
        console.print("[yellow]no trial completed[/]")
        return
    params = " ".join(f"--{k}={arg_text(v)}" for k, v in result.best.params.items())
    console.print(
        f"[bold]best trial {result.best.number}[/]: {result.metric} = "
        f"{result.best.value:.6g}  {escape(params)}"
    )


def _text(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
