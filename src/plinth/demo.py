"""``plinth demo``: the guided tour of what Plinth does, on the embedded default.

Today: track a sweep of scikit-learn models (metrics per epoch, the model as an
artifact), then rank the runs and show where to look.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from plinth.client import Client
from plinth.errors import require
from plinth.tracking.cli import runs_table
from plinth.tracking.run import start_run

EPOCHS = 30
SWEEP: dict[str, list[Any]] = {
    "alpha": [1e-4, 1e-3, 1e-2],
    "eta0": [0.01, 0.1],
    "penalty": ["l2", "elasticnet"],
}


def _data() -> tuple[Any, Any, Any, Any]:
    datasets = require("sklearn.datasets", "sklearn")
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = datasets.load_breast_cancer(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


def _train(run: Any, params: dict[str, Any], data: tuple[Any, ...], workdir: Path) -> None:
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import accuracy_score, log_loss

    x_train, x_val, y_train, y_val = data
    model = SGDClassifier(loss="log_loss", learning_rate="constant", random_state=0, **params)
    classes = np.unique(y_train)
    for epoch in range(EPOCHS):
        model.partial_fit(x_train, y_train, classes=classes)
        run.log(
            {
                "train_loss": log_loss(y_train, model.predict_proba(x_train)),
                "val_loss": log_loss(y_val, model.predict_proba(x_val)),
                "val_acc": accuracy_score(y_val, model.predict(x_val)),
            },
            step=epoch,
        )
    path = workdir / f"{run.id}.skops"
    sio.dump(model, path)
    run.log_artifact(str(path), "model.skops")


def run_demo(project: str = "demo", client: Client | None = None) -> None:
    console = Console()
    client = client or Client()
    where = (
        "server " + str(client.settings.url)
        if client.settings.url
        else f"embedded home {client.settings.home}"
    )
    console.rule("[bold]Plinth demo[/]")
    console.print(
        f"Tracking a sweep of SGD classifiers on the breast-cancer dataset "
        f"(scikit-learn) into project [bold]{project}[/], {where}.\n"
    )
    data = _data()
    grid = [dict(zip(SWEEP, values, strict=True)) for values in itertools.product(*SWEEP.values())]
    sweep = time.strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console) as bar:
        task = bar.add_task("training", total=len(grid))
        for number, params in enumerate(grid, 1):
            name = f"sgd-{number:02d}"
            with start_run(
                project, name=name, params=params, tags={"sweep": sweep}, client=client
            ) as run:
                _train(run, params, data, Path(tmp))
            bar.advance(task)
    elapsed = time.perf_counter() - started
    page = client.search_runs(
        project,
        filter=f"tags.sweep = '{sweep}' and status = 'finished'",
        order_by="metrics.val_acc desc, metrics.val_loss asc",
        limit=len(grid),
    )
    console.print(
        runs_table(
            page.runs,
            title=f"{len(grid)} runs in {elapsed:.1f}s, best first",
            highlight="val_acc",
            compact=True,
            width=console.width,  # what does not fit is named below the table, not squeezed
        )
    )
    best = page.runs[0]
    console.print(
        f"\nBest: [bold]{best.name}[/] (val_acc {best.metrics['val_acc']:.4f}), "
        f"run [cyan]{best.id}[/]\n"
    )
    plinth = _command()
    console.print("Look closer:")
    for command in (
        f"runs list --project {project} --filter \"tags.sweep = '{sweep}'\" "
        "--order-by 'metrics.val_acc desc'",
        f"runs show {best.id}",
        f"artifacts download {best.id} model.skops ./out",
        "server    # then open http://127.0.0.1:8765 in a browser",
    ):
        console.print(f"  {plinth} {command}", soft_wrap=True, highlight=False)


def _command() -> str:
    """``plinth`` if the shell finds it, else its path in this environment."""
    if shutil.which("plinth"):
        return "plinth"
    beside = Path(sys.executable).parent / "plinth"
    if not beside.exists():
        return "python -m plinth"
    relative = os.path.relpath(beside)
    return relative if not relative.startswith("..") else str(beside)
