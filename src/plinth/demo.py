"""``plinth demo``: the guided tour of what Plinth does, on the embedded default.

Today: track a sweep of scikit-learn models (metrics per epoch, each model saved in a
safe format), rank the runs, register the best as a model version with the
``champion`` alias, serve it and send it traffic, then show where to look.
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


MODEL = "breast-cancer"


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
    _serve_and_call(console, client, version, data)
    plinth = _command()
    console.print("Look closer:")
    for command in (
        f"runs list --project {project} --filter \"tags.sweep = '{sweep}'\" "
        "--order-by 'metrics.val_acc desc'",
        f"runs show {best.id}",
        f"models versions {MODEL} --project {project}",
        f"models card {MODEL} champion --project {project}",
        f"serve models:/{project}/{MODEL}@champion --port 9000",
        "server    # then open http://127.0.0.1:8765 in a browser",
    ):
        console.print(f"  {plinth} {command}", soft_wrap=True, highlight=False)
    row = ", ".join(f"{v:.3f}" for v in data[1][0])
    console.print(
        f"  curl -s http://127.0.0.1:9000/v1/models/{MODEL}:predict "
        f"-H 'Content-Type: application/json' -d '{{\"instances\": [[{row}]]}}'",
        soft_wrap=True,
        highlight=False,
    )


def _serve_and_call(console: Console, client: Client, version: Any, data: tuple[Any, ...]) -> None:
    """Serve the version (its files fetched and checked against its digest) on a free
    port, send it every validation row as its own request, and stop it."""
    import statistics

    _, x_val, _, y_val = data
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "model"
        client.download_model(version.uri, directory, progress=False)
        with console.status(f"starting plinth serve {version.uri} …"):
            server = _Served.start(directory, MODEL, str(version.version))
        try:
            latencies, right = [], 0
            for row, label in zip(x_val.tolist(), y_val.tolist(), strict=True):
                started = time.perf_counter()
                answer, served_by = server.predict({"instances": [row]})
                latencies.append((time.perf_counter() - started) * 1e3)
                right += answer["predictions"][0] == label
        finally:
            server.stop()
    console.print(
        f"Served it at {server.url}: {len(latencies)} requests answered by {served_by}, "
        f"accuracy {right / len(latencies):.4f}, median latency "
        f"{statistics.median(latencies):.2f} ms (started in {server.started_in:.1f}s)\n"
    )


class _Served:
    """``python -m plinth.serving`` on a free loopback port, called over one
    kept-alive connection."""

    def __init__(self, proc: Any, port: int, started_in: float) -> None:
        import http.client

        self.proc, self.port, self.started_in = proc, port, started_in
        self.url = f"http://127.0.0.1:{port}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    @classmethod
    def start(cls, directory: Path, name: str, version: str, timeout: float = 120) -> _Served:
        import socket
        import subprocess

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "plinth.serving", str(directory), "--name", name]
        command += ["--model-version", version, "--port", str(port)]
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        served = cls(proc, port, 0.0)
        while served._status("/ready") != 200:
            if proc.poll() is not None or time.perf_counter() - started > timeout:
                served.stop()
                why = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"plinth serve did not start: {why.strip()}")
            time.sleep(0.1)
        served.started_in = time.perf_counter() - started
        return served

    def _status(self, path: str) -> int | None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    def predict(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The answer, and the version that gave it."""
        import json

        path = f"/v1/models/{MODEL}:predict"
        headers = {"Content-Type": "application/json"}
        self.conn.request("POST", path, body=json.dumps(body), headers=headers)
        response = self.conn.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"plinth serve answered {response.status}: {answer}")
        return answer, response.getheader("X-Plinth-Model-Version") or "?"

    def stop(self) -> None:
        import subprocess

        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _command() -> str:
    """``plinth`` if the shell finds it, else its path in this environment."""
    if shutil.which("plinth"):
        return "plinth"
    beside = Path(sys.executable).parent / "plinth"
    if not beside.exists():
        return "python -m plinth"
    relative = os.path.relpath(beside)
    return relative if not relative.startswith("..") else str(beside)
