"""How a capability plugs in: one declaration per capability package.

Each capability's ``__init__.py`` exports ``CAPABILITY``, naming its parts by import
path (``"module:attribute"``) so that reading the declaration imports nothing heavy:
``plinth --help`` does not load the web framework, nor ``import plinth`` the database.
``plinth.capabilities.CAPABILITIES`` lists the packages; the app, the CLI, the
``Client``, the migrations test and the UI navigation are built from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plinth.core.platform import Platform


def load(path: str) -> Any:
    """The object that ``"package.module:attribute"`` names."""
    module, _, attribute = path.partition(":")
    found: Any = importlib.import_module(module)
    for name in attribute.split(".") if attribute else ():
        found = getattr(found, name)
    return found


@dataclass(frozen=True)
class Periodic:
    """Background work the app runs while it lives, embedded or served: ``task`` is a
    service method (``"module:Service.method"``) called every ``every(settings)``
    seconds."""

    task: str
    every: Callable[[Any], float]


@dataclass(frozen=True)
class Capability:
    name: str
    services: tuple[str, ...] = ()  # classes built with the Platform (and the services before)
    routers: tuple[str, ...] = ()  # FastAPI routers
    commands: tuple[tuple[str, str], ...] = ()  # ("runs", app) or ("projects members", app)
    calls: tuple[str, ...] = ()  # classes whose methods join plinth.Client
    tables: tuple[str, ...] = ()  # modules declaring this capability's tables
    startup: tuple[str, ...] = ()  # service methods ("module:Service.method") run at start
    shutdown: tuple[str, ...] = ()  # service methods run when the app stops, in reverse
    periodic: tuple[Periodic, ...] = ()
    pages: tuple[tuple[str, str], ...] = ()  # (label, path) in the UI's navigation


def build_service(cls: type, platform: Platform, built: dict[type, Any]) -> Any:
    """A service instance: its constructor takes the platform, and, by annotated
    keyword, services built before it (``def __init__(self, platform, *, sessions:
    SessionService)``)."""
    import inspect

    params = list(inspect.signature(cls).parameters.values())[1:]
    hints = _hints(cls)
    kwargs = {}
    for param in params:
        wanted = hints.get(param.name)
        if wanted not in built:
            raise TypeError(f"{cls.__name__} needs {param.name}: no service of that type")
        kwargs[param.name] = built[wanted]
    return cls(platform, **kwargs)


def _hints(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(vars(cls)["__init__"]) if "__init__" in vars(cls) else {}
