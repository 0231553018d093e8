"""Model cards: what a version is and where it came from, generated from the registry
and the run that made it (lineage, params, metrics, signature, flavor, digest, alias
history), plus the fields people write (intended use, limitations…), as Markdown or
HTML. Every value from users is escaped in HTML and fenced in Markdown tables."""

from __future__ import annotations

import datetime
import functools
from typing import Any, Literal

import jinja2

from plinth.core.access import Principal
from plinth.core.platform import Platform
from plinth.errors import PlinthError
from plinth.registry import schemas as s
from plinth.registry.aliases import AliasService
from plinth.registry.service import RegistryService
from plinth.tracking.service import TrackingService

CardFormat = Literal["markdown", "html"]

_FIELDS = (
    ("Intended use", "intended_use"),
    ("Limitations", "limitations"),
    ("Ethical considerations", "ethical_considerations"),
    ("Training data", "training_data"),
)


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(value: Any) -> str:
    """A value inside a Markdown table cell: one line, pipes escaped."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text.replace("|", "\\|")


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("plinth.registry", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["when"] = _when
    env.filters["cell"] = _cell if not autoescape else (lambda v: v)
    return env


@functools.cache
def _template(fmt: CardFormat) -> jinja2.Template:
    """Compiled on first use: building the app (every CLI command does) skips it."""
    if fmt == "html":
        return _environment(True).get_template("card.html.j2")
    return _environment(False).get_template("card.md.j2")


def render(
    version: s.ModelVersion,
    run: Any,
    history: list[s.AliasEvent],
    fmt: CardFormat,
    run_error: str = "",
) -> str:
    fields = [(title, getattr(version.card, key)) for title, key in _FIELDS]
    return _template(fmt).render(
        v=version, run=run, history=history, fields=fields, run_error=run_error
    )


class ModelCardService:
    def __init__(
        self,
        platform: Platform,
        *,
        registry: RegistryService,
        aliases: AliasService,
        runs: TrackingService,
    ) -> None:
        self.registry, self.aliases, self.runs = registry, aliases, runs

    def model_card(
        self, project: str, name: str, version: int, fmt: CardFormat, *, principal: Principal
    ) -> str:
        found = self.registry.get_version(project, name, version, principal=principal)
        run, run_error = None, ""
        if found.run_id:
            try:
                run = self.runs.get_run(found.run_id, principal=principal)
            except PlinthError as exc:
                run_error = exc.message
        history = [
            e
            for e in self.aliases.alias_history(project, name, principal=principal)
            if version in (e.version, e.previous)
        ]
        return render(found, run, history, fmt, run_error)
