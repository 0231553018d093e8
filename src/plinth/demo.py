"""``plinth demo``: the guided tour of what Plinth does, on the embedded default.

Today: push the data as a dataset version (validated against its rules, profiled),
run a sweep of scikit-learn models as jobs on the local executor (each trial a job and
a tracked run that pulls that version and records that it read it: metrics per epoch,
the model saved in a safe format), rank the runs, register the best as a model version
with the ``champion`` alias, deploy it with the runner-up as a 10% canary, send it
traffic and count who answered, then show where to look.
"""

from __future__ import annotations

import contextlib
import itertools
import json
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
from plinth.errors import NotFound, ServiceUnavailable, require
from plinth.tracking.cli import runs_table
from plinth.tracking.run import start_run

EPOCHS = 30
SWEEP: dict[str, list[Any]] = {
    "alpha": [1e-4, 1e-3, 1e-2],
    "eta0": [0.01, 0.1],
    "penalty": ["l2", "elasticnet"],
}


MODEL = "breast-cancer"
DATASET = "breast-cancer"
TARGET = "target"
RULES: list[dict[str, Any]] = [
    {"check": "rows", "min": 100},
    {"check": "allowed", "column": TARGET, "values": [0, 1]},
    {"check": "nulls", "column": "mean radius", "max_fraction": 0.0},
    {"check": "range", "column": "mean radius", "min": 0},
]


def _write_data(folder: Path) -> Path:
    """The breast-cancer data (scikit-learn's copy), split, as two Parquet files."""
    datasets = require("sklearn.datasets", "sklearn")
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.model_selection import train_test_split

    found = datasets.load_breast_cancer()
    x_train, x_val, y_train, y_val = train_test_split(
        found.data, found.target, test_size=0.25, random_state=0, stratify=found.target
    )
    folder.mkdir(parents=True, exist_ok=True)
    for part, x, y in (("train", x_train, y_train), ("val", x_val, y_val)):
        columns = {str(n): x[:, i] for i, n in enumerate(found.feature_names)}
        pq.write_table(pa.table({**columns, TARGET: y}), folder / f"{part}.parquet")
    return folder


def _data(folder: Path) -> tuple[Any, Any, Any, Any]:
    """Features (scaled on the training part) and labels, read from the dataset."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.preprocessing import StandardScaler

    parts = []
    for part in ("train", "val"):
        table = pq.read_table(folder / f"{part}.parquet")
        features = [table.column(n).to_numpy() for n in table.column_names if n != TARGET]
        parts.append((np.column_stack(features), table.column(TARGET).to_numpy()))
    (x_train, y_train), (x_val, y_val) = parts
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


def _push_data(client: Client, project: str, tmp: Path) -> Any:
    """The data as the next version of the dataset (the same version when unchanged),
    checked against the demo's rules and profiled on the way."""
    from plinth.data.rules import load_rules

    try:
        current = client.dataset_rules(project, DATASET).rules
    except NotFound:
        current = None
    if current != load_rules(RULES).rules:
        client.set_dataset_rules(project, DATASET, RULES)
    return client.push_dataset(
        project, DATASET, _write_data(tmp / DATASET), message="the demo's data"
    )


def _train(run: Any, params: dict[str, Any], data: tuple[Any, ...], workdir: Path) -> None:
    import numpy as np
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import accuracy_score, log_loss

    from plinth.registry.flavors import save_model

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
    path = workdir / run.id
    save_model(model, path, input_example=x_val[:5])  # skops, and its MLmodel.json
    run.log_artifacts(str(path), "model")


def _run_trials(
    console: Console,
    client: Client,
    project: str,
    grid: list[dict[str, Any]],
    sweep: str,
    dataset: str,
) -> None:
    """One job per trial (``python -m plinth.demo PARAMS SWEEP DATASET``), as many at
    once as the machine has CPUs; each logs into its job's own run."""
    argv = [sys.executable, "-m", "plinth.demo"]
    with Progress(console=console) as bar:
        task = bar.add_task("training (jobs)", total=len(grid))
        pending = {
            client.submit_job(project, [*argv, json.dumps(params), sweep, dataset], cpus=1).id
            for params in grid
        }
        while pending:
            time.sleep(0.2)
            for job_id in sorted(pending):
                job = client.get_job(project, job_id)
                if not job.ended:
                    continue
                if job.status != "succeeded":
                    log = client.job_logs(project, job_id).text[-2000:]
                    raise ServiceUnavailable(
                        f"trial job {job_id} {job.status}: {job.reason}\n{log}"
                    )
                pending.discard(job_id)
                bar.advance(task)


def _trial(params_json: str, sweep: str, dataset: str) -> None:
    """One trial, inside its job: ``start_run()`` continues the job's own run, which
    pulls the dataset version and records that it read it."""
    params = json.loads(params_json)
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_run(params=params, tags={"sweep": sweep}) as run,
    ):
        run.client.pull_dataset(run.info.project, dataset, tmp)
        run.use_dataset(dataset)
        _train(run, params, _data(Path(tmp) / DATASET), Path(tmp))


def run_demo(
    project: str = "demo", client: Client | None = None, *, keep_serving: bool = True
) -> None:
    console = Console()
    client = client or Client()
    where = (
        "server " + str(client.settings.url)
        if client.settings.url
        else f"embedded home {client.settings.home}"
    )
    console.rule("[bold]Plinth demo[/]")
    grid = [dict(zip(SWEEP, values, strict=True)) for values in itertools.product(*SWEEP.values())]
    console.print(
        f"Running a sweep of {len(grid)} SGD classifiers on the breast-cancer dataset "
        f"(scikit-learn) as jobs on the local executor, tracked in project "
        f"[bold]{project}[/], {where}.\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        dataset = _push_data(client, project, Path(tmp))
        data = _data(Path(tmp) / DATASET)
    console.print(
        f"{'Pushed' if dataset.created else 'Unchanged:'} [bold]datasets:/{project}/"
        f"{dataset.ref}[/]: {dataset.files} Parquet files, {dataset.rows} rows, "
        f"{len(RULES)} validation rules passed, each column profiled\n"
    )
    sweep = time.strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    _run_trials(console, client, project, grid, sweep, dataset.ref)
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
    version = client.register_model(
        best.id, "model", MODEL, project=project, description=f"best of sweep {sweep}"
    )
    client.set_model_alias(
        project, MODEL, "champion", version.version, reason=f"best val_acc of sweep {sweep}"
    )
    console.print(
        f"Registered [bold]{version.uri}[/] (sha256:{version.digest[:12]}…) "
        f"as [bold]models:/{project}/{MODEL}@champion[/]\n"
    )
    deployment = _deploy_with_canary(console, client, project, page.runs[1], data)
    if not keep_serving:
        client.delete_deployment(project, deployment.name, reason="the demo is over")
    plinth = _command()
    url, name = deployment.url, deployment.name
    serving = [
        f"deployments status {name} --project {project}",
        f"deployments promote {name} --project {project}   # or rollback",
        f"deployments delete {name} --project {project}    # stop serving",
    ]
    if not keep_serving:  # stopped: serve the champion alone on a port of one's own
        url = "http://127.0.0.1:9000"
        serving = [f"serve models:/{project}/{MODEL}@champion --port 9000"]
    console.print("Look closer:")
    for command in (
        f"jobs list --project {project}",
        f"runs list --project {project} --filter \"tags.sweep = '{sweep}'\" "
        "--order-by 'metrics.val_acc desc'",
        f"runs show {best.id}",
        f"models versions {MODEL} --project {project}",
        f"models card {MODEL} champion --project {project}",
        f"datasets profile {dataset.ref} --project {project}",
        f"lineage {version.uri}",
        *serving,
        "server    # then open http://127.0.0.1:8765 in a browser",
    ):
        console.print(f"  {plinth} {command}", soft_wrap=True, highlight=False)
    row = ", ".join(f"{v:.3f}" for v in data[1][0])
    console.print(
        f"  curl -s {url}/v1/models/{MODEL}:predict "
        f"-H 'Content-Type: application/json' -d '{{\"instances\": [[{row}]]}}'",
        soft_wrap=True,
        highlight=False,
    )


def _deploy_with_canary(
    console: Console, client: Client, project: str, runner_up: Any, data: tuple[Any, ...]
) -> Any:
    """Deploy the champion, send 10% of traffic to the runner-up as a canary, send
    every validation row as its own request, and count who answered."""
    import collections
    import statistics

    challenger = client.register_model(runner_up.id, "model", MODEL, project=project)
    service = f"{MODEL}-svc"
    with contextlib.suppress(NotFound):  # the demo run before this one
        client.delete_deployment(project, service, reason="demo run again")
    with console.status("starting the deployment's replica …"):
        started = time.perf_counter()
        client.create_deployment(project, service, f"models:/{project}/{MODEL}@champion")
        deployment = client.update_deployment(
            project, service, canary=challenger.uri, weight=10, reason="try the runner-up"
        )
        deployment = _wait_ready(client, project, service)
        ready_in = time.perf_counter() - started
    _, x_val, _, y_val = data
    answered_by: collections.Counter[str] = collections.Counter()
    latencies, right = [], 0
    for _ in range(2):
        for row, label in zip(x_val.tolist(), y_val.tolist(), strict=True):
            begun = time.perf_counter()
            answer, version = _predict(deployment.port, {"instances": [row]})
            latencies.append((time.perf_counter() - begun) * 1e3)
            answered_by[version] += 1
            right += answer["predictions"][0] == label
    split = ", ".join(f"{v}: {n}" for v, n in sorted(answered_by.items()))
    console.print(
        f"Deployed [bold]{service}[/] at {deployment.url} (ready in {ready_in:.1f}s), "
        f"90% champion, 10% canary {challenger.uri}.\n{len(latencies)} requests answered "
        f"({split}), accuracy {right / len(latencies):.4f}, median latency "
        f"{statistics.median(latencies):.2f} ms\n"
    )
    return deployment


def _wait_ready(client: Client, project: str, name: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        deployment = client.get_deployment(project, name)
        if deployment.replicas and all(r.state == "ready" for r in deployment.replicas):
            return deployment
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"deployment {name} not ready in {timeout:.0f}s")
        time.sleep(0.2)


def _predict(port: int, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The answer, and the version that gave it."""
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            f"/v1/models/{MODEL}:predict",
            json.dumps(body),
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise ServiceUnavailable(f"the deployment answered {response.status}: {answer}")
        return answer, response.getheader("X-Plinth-Model-Version") or "?"
    finally:
        conn.close()


def _command() -> str:
    """``plinth`` if the shell finds it, else its path in this environment."""
    if shutil.which("plinth"):
        return "plinth"
    beside = Path(sys.executable).parent / "plinth"
    if not beside.exists():
        return "python -m plinth"
    relative = os.path.relpath(beside)
    return relative if not relative.startswith("..") else str(beside)


if __name__ == "__main__":  # a trial job: python -m plinth.demo PARAMS SWEEP DATASET
    _trial(*sys.argv[1:4])
