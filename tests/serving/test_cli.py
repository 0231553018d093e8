"""``plinth serve`` mounts at the root from the capability's declaration, the way
``plinth.cli`` mounts every capability's commands, and takes its options on either
side of SOURCE."""

from __future__ import annotations

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
