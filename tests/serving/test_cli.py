"""``plinth serve`` mounts at the root from the capability's declaration, the way
``plinth.cli`` mounts every capability's commands, and takes its options on either
side of SOURCE."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from plinth.core.capability import load
from plinth.serving import CAPABILITY


def _root() -> typer.Typer:
    root = typer.Typer(rich_markup_mode=None)

    @root.command()
    def version() -> None:  # a second command, so that the root is a group as in plinth
        pass

    for name, path in CAPABILITY.commands:
        root.add_typer(load(path), name=name)
    return root


def test_serve_is_a_root_command_with_options_around_its_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("plinth.serving.source.resolve", lambda *a, **kw: seen.update(kw) or 1 / 0)
    runner = CliRunner()
    result = runner.invoke(_root(), ["serve", str(tmp_path), "--port", "0", "--name", "churn"])
    assert isinstance(result.exception, ZeroDivisionError)  # it got as far as resolving
    assert seen["name"] == "churn"
    result = runner.invoke(_root(), ["serve", "--help"])
    assert result.exit_code == 0
    usage = result.output.splitlines()[0]
    assert "serve [OPTIONS]" in usage and "SOURCE" in usage and "COMMAND" not in result.output
    assert "--max-batch-size" in result.output and "--workers" in result.output


def test_a_uri_refuses_the_local_pickle_flag(tmp_path: Path) -> None:
    from plinth.errors import InvalidInput
    from plinth.serving.source import resolve

    with pytest.raises(InvalidInput, match="unsafe_pickle"):
        resolve("models:/churn/churn@champion", home=tmp_path, unsafe_pickle=True)


def test_serve_applies_the_deployments_check_by_number_and_by_alias(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``plinth serve models:/…`` serves what a deployment would: never an archived
    version (named by number, or by an alias still pointing at it), nor a pickle no
    admin marked; refused before any file is fetched."""
    from plinth import Client
    from plinth.errors import Conflict
    from plinth.serving.source import resolve
    from tests.conftest import make_settings
    from tests.registry.files import model_files

    home = tmp_path / "home"
    settings = make_settings(home)
    for name in ("PLINTH_URL", "PLINTH_TOKEN", "PLINTH_DATABASE_URL", "PLINTH_ARTIFACTS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLINTH_HOME", str(home))  # what Client() in resolve reads
    monkeypatch.setenv("PLINTH_COMPUTE__HANDOFF", "false")
    with Client(settings=settings) as client:
        run = client.create_run("churn")
        client.log_artifacts(run.id, model_files(tmp_path / "m"), "m")
        client.register_model(run.id, "m", "churn")
        pickled = model_files(tmp_path / "p", b"p", flavor="python", unsafe_pickle=True)
        client.log_artifacts(run.id, pickled, "p")
        client.register_model(run.id, "p", "churn")
        client.set_model_alias("churn", "churn", "champion", 1)

    found = resolve("models:/churn/churn@champion", home=home)
    assert (found.name, found.version) == ("churn", "1")
    cache = home / "serving" / "models" / "by-digest"
    shutil.rmtree(cache)

    with Client(settings=settings) as client:
        client.archive_model_version("models:/churn/churn/1")
    with pytest.raises(Conflict, match="version 1 of 'churn' is archived") as by_alias:
        resolve("models:/churn/churn@champion", home=home)
    assert "models:/churn/churn@champion points to it" in by_alias.value.message
    with pytest.raises(Conflict, match="version 1 of 'churn' is archived"):
        resolve("models:/churn/churn/1", home=home)
    with pytest.raises(Conflict, match="unsafe_pickle"):
        resolve("models:/churn/churn/2", home=home)
    assert not cache.exists() or not any(cache.iterdir())  # nothing was fetched
