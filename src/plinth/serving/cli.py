"""``plinth serve SOURCE``: serve one model version over HTTP until interrupted."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from plinth.errors import InvalidInput


class _Command(TyperGroup):
    """A group that is really one command: ``serve`` is mounted like any capability's
    command group (``Capability.commands``), but takes its options before or after its
    argument and shows no COMMAND in its usage."""

    allow_interspersed_args = True

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [p for p in super().collect_usage_pieces(ctx) if p != self.subcommand_metavar]


serve_app = typer.Typer(cls=_Command, rich_markup_mode=None)


@serve_app.callback(invoke_without_command=True)
def serve(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="A directory holding a saved model (MLmodel.json), or a registry URI: "
            "models:/PROJECT/NAME@ALIAS or models:/PROJECT/NAME/VERSION.",
            show_default=False,
        ),
    ],
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 9000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            metavar="HOST",
            help="A Host header to answer besides 127.0.0.1, localhost and ::1 (repeat "
            "it; *.example.com takes subdomains). With none, a server on a loopback "
            "address answers those three only (a web page whose name leads here cannot "
            "call the model), one on another address any.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port.")] = 1,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Most rows joined into one predict call.")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="Longest a batch waits to fill, under load only.")
    ] = 2.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Waiting requests beyond which new ones get 503.")
    ] = 256,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body.")] = 8 << 20,
    body_idle_seconds: Annotated[
        float, typer.Option(min=0.1, help="A body that stops arriving this long gets 408.")
    ] = 30.0,
    name: Annotated[
        str | None, typer.Option(help="Name to serve under (default: the model's).")
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option(
            help="Version label to answer with (default: the registry's version).", hidden=True
        ),
    ] = None,
    unsafe_pickle: Annotated[
        bool,
        typer.Option(
            "--unsafe-pickle",
            help="Load a local model that needs pickle (runs any code in its files).",
        ),
    ] = False,
    load_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds a model load may take.")
    ] = 120.0,
    device: Annotated[
        str,
        typer.Option(
            help="Where a PyTorch model runs: auto (CUDA when there is one), cpu, cuda or "
            "cuda:N; each micro-batch moves there in one copy. Other flavors ignore it."
        ),
    ] = "auto",
    record_dir: Annotated[
        Path | None,
        typer.Option(
            help="Record answered predictions (id, version, inputs, outputs, latency) "
            "as JSON lines in files under this directory.",
            show_default=False,
        ),
    ] = None,
    record_sample: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of answers recorded, 0.0 to 1.0 (default: all of them with "
            "--record-dir, none without).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve one model version: POST /v1/models/NAME:predict, the Open Inference
    Protocol v2 (/v2/models/NAME/infer), /healthz, /ready and /metrics."""
    import dataclasses
    import functools

    from plinth.serving.app import AppLimits
    from plinth.serving.batching import BatchLimits
    from plinth.serving.records import RecordSettings
    from plinth.serving.runner import WorkerSpec, bind, build_app
    from plinth.serving.runner import serve as run
    from plinth.serving.schemas import DEVICE
    from plinth.serving.source import resolve
    from plinth.settings import Settings

    if not re.fullmatch(DEVICE, device):
        raise InvalidInput(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    records = None
    if record_dir is not None:
        share = 1.0 if record_sample is None else record_sample
        records = RecordSettings(record_dir.resolve(), share)
    elif record_sample:
        raise InvalidInput("--record-sample needs --record-dir: where the records go")
    found = resolve(source, home=Settings().home, name=name, unsafe_pickle=unsafe_pickle)
    if model_version is not None:
        found = dataclasses.replace(found, version=model_version)
    batching = BatchLimits(max_batch_size, max_wait_ms, max_queue)
    hosts = _answered_hosts(host, allowed_host or [])
    limits = AppLimits(batching, max_body_bytes, body_idle_seconds, hosts)
    spec = WorkerSpec(
        found.directory,
        found.name,
        found.version,
        found.allow_pickle,
        load_timeout,
        limits,
        records,
        found.digest,
        device,
    )
    listener = bind(host, port)
    url = _url(host, listener.getsockname()[1])
    run(
        functools.partial(build_app, spec),
        listener,
        workers=workers,
        isolate=found.allow_pickle,  # a pickled model never loads in this process
        on_ready=functools.partial(_announce, url, spec),
    )


def _announce(url: str, spec: Any) -> None:
    from rich.console import Console

    from plinth.registry.flavors import read_meta
    from plinth.serving.protocol import example_instance

    body = json.dumps(example_instance(read_meta(spec.directory).signature))
    endpoint = f"{url}/v1/models/{spec.name}:predict"
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    console.print(f"Serving {spec.name} version {spec.version} at [bold]{url}[/]")
    console.print(
        f"  curl -s {shlex.quote(endpoint)} -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)}",
        markup=False,
    )


def _answered_hosts(host: str, named: list[str]) -> tuple[str, ...] | None:
    """The Host headers answered: loopback names (a web page's own name never is one)
    and ``named``; any at all on an address beyond loopback that names none."""
    import ipaddress

    from plinth.serving.app import LOOPBACK_HOSTS

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: whatever it resolves to, it is reached by that name
        loopback = False
    return (*LOOPBACK_HOSTS, host.lower(), *named) if loopback or named else None


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
