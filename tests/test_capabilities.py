"""The capability declarations: what the app, CLI and Client are built from."""

from __future__ import annotations

import collections
import inspect
from pathlib import Path

import typer.main

from plinth.api.context import all_routes
from plinth.capabilities import declared
from plinth.cli import app as cli_app
from plinth.client import Client
from plinth.core.capability import load
from plinth.server.app import create_app
from tests.conftest import make_settings


def _public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}


def test_no_two_capabilities_put_the_same_method_on_client() -> None:
    """Not even a private one: the mixed-in classes share one namespace, and a helper
    of one capability would silently replace another's."""
    owners: dict[str, list[str]] = collections.defaultdict(list)
    for capability in declared():
        for path in capability.calls:
            for name in vars(load(path)):
                if not name.startswith("__"):
                    owners[name].append(f"{capability.name}:{path}")
    clashes = {name: who for name, who in owners.items() if len(who) > 1}
    assert clashes == {}
    public = {name for name in owners if not name.startswith("_")}
    assert public <= _public_methods(Client)  # every call reached Client


def test_the_app_mounts_every_declared_router(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "home"))
    paths = {route.path for route in all_routes(app.routes)}
    for capability in declared():
        for router in capability.routers:
            assert {route.path for route in load(router).routes} <= paths, router


def test_the_cli_mounts_every_declared_command_group() -> None:
    group = typer.main.get_command(cli_app)
    for capability in declared():
        for name, _ in capability.commands:
            command = group
            for part in name.split():
                command = command.commands[part]  # type: ignore[attr-defined]


def test_every_service_is_built_with_the_platform(tmp_path: Path) -> None:
    services = create_app(make_settings(tmp_path / "home")).state.services
    for capability in declared():
        for path in capability.services:
            assert services.get(load(path)) is not None
