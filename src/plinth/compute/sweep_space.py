"""A sweep's search space: the params a trial takes, read from a YAML or JSON file,
checked before any job is submitted, and how a trial receives them (argv).

    params:
      lr:        {type: float, low: 0.0001, high: 0.1, log: true}
      layers:    {type: int, low: 1, high: 8}          # step: 2 also allowed
      dropout:   {type: float, low: 0.0, high: 0.5, step: 0.1}
      optimizer: {type: categorical, choices: [sgd, adam]}

A trial receives its params as ``--name=value`` arguments appended to the command, in
the order the file declares them (``=`` so that a negative number is never read as an
option). Jobs may not set ``PLINTH_*`` variables, so argv is the one channel; the params
are also logged on the trial's run.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plinth.errors import InvalidInput, MissingDependency

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}\Z")
KINDS = ("float", "int", "categorical")
MAX_PARAMS = 100
MAX_CHOICES = 1000
EXAMPLE = "params: {lr: {type: float, low: 0.0001, high: 0.1, log: true}}"
Choice = str | int | float | bool


def optuna() -> Any:
    """Optuna, the ``sweeps`` extra, imported only when a sweep runs."""
    try:
        import optuna as module
    except ImportError as exc:
        raise MissingDependency("optuna", "sweeps") from exc
    module.logging.set_verbosity(module.logging.WARNING)  # our table says it better
    return module


@dataclass(frozen=True)
class Param:
    """One declared param: a range (float, int) or a list of choices."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Choice, ...] = ()

    def distribution(self) -> Any:
        d = optuna().distributions
        if self.kind == "float":
            return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            step = 1 if self.step is None else int(self.step)
            return d.IntDistribution(
                int(self.low or 0), int(self.high or 0), log=self.log, step=step
            )
        return d.CategoricalDistribution(self.choices)


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]

    def distributions(self) -> dict[str, Any]:
        return {p.name: p.distribution() for p in self.params}

    def as_dict(self) -> dict[str, Any]:
        """The space as the file would declare it (recorded on the sweep's run)."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "categorical":
                out[p.name] = {"type": p.kind, "choices": list(p.choices)}
            else:
                spec: dict[str, Any] = {"type": p.kind, "low": p.low, "high": p.high}
                spec.update({"log": True} if p.log else {})
                spec.update({} if p.step is None else {"step": p.step})
                out[p.name] = spec
        return {"params": out}


def trial_argv(argv: list[str], space: Space, params: Mapping[str, Any]) -> list[str]:
    """The command a trial runs: ``argv`` then ``--name=value`` for each param."""
    return [*argv, *(f"--{p.name}={arg_text(params[p.name])}" for p in space.params)]


def arg_text(value: Any) -> str:
    """A param as a trial receives it: a float in full (repr), others as text."""
    return repr(value) if isinstance(value, float) else str(value)


def load_space(source: Space | Mapping[str, Any] | str | Path) -> Space:
    """A Space from a file (``.yaml``/``.yml`` or ``.json``), a mapping shaped like
    the file, or a Space; InvalidInput naming what is wrong otherwise."""
    if isinstance(source, Space):
        return source
    if isinstance(source, Mapping):
        return parse_space(source)
    return parse_space(_read(Path(source)))


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"space file {path}: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"space file {path}: not valid JSON: {exc}") from exc
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"space file {path}: not valid YAML: {exc}") from exc


def parse_space(data: Any) -> Space:
    if not isinstance(data, Mapping) or not isinstance(data.get("params"), Mapping):
        raise InvalidInput(f"a space declares its params under 'params:', e.g. {EXAMPLE}")
    extra = set(data) - {"params"}
    if extra:
        raise InvalidInput(f"space: unknown top-level keys {sorted(extra)}; only 'params'")
    declared = data["params"]
    if not declared:
        raise InvalidInput(f"space: declare at least one param, e.g. {EXAMPLE}")
    if len(declared) > MAX_PARAMS:
        raise InvalidInput(f"space: at most {MAX_PARAMS} params")
    return Space(tuple(_param(name, spec) for name, spec in declared.items()))


def _param(name: Any, spec: Any) -> Param:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(
            f"param {name!r}: a name is letters, digits, '_', '.', '-', starting with a letter"
        )
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"param {name}: give a mapping such as {{type: float, low: 0, high: 1}}")
    kind = spec.get("type")
    if kind not in KINDS:
        raise InvalidInput(f"param {name}: type must be one of {', '.join(KINDS)}; got {kind!r}")
    if kind == "categorical":
        return _categorical(name, spec)
    return _ranged(name, kind, spec)


def _categorical(name: str, spec: Mapping[str, Any]) -> Param:
    _only(name, spec, {"type", "choices"})
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise InvalidInput(f"param {name}: categorical needs a non-empty list of choices")
    if len(choices) > MAX_CHOICES:
        raise InvalidInput(f"param {name}: at most {MAX_CHOICES} choices")
    for choice in choices:
        if not isinstance(choice, str | int | float | bool):
            raise InvalidInput(f"param {name}: a choice is text, a number or a boolean")
    if len(set(map(repr, choices))) != len(choices):
        raise InvalidInput(f"param {name}: choices repeat")
    return Param(name, "categorical", choices=tuple(choices))


def _ranged(name: str, kind: str, spec: Mapping[str, Any]) -> Param:
    _only(name, spec, {"type", "low", "high", "log", "step"})
    low, high = _number(name, spec, "low", kind), _number(name, spec, "high", kind)
    step = None if spec.get("step") is None else _number(name, spec, "step", kind)
    log = spec.get("log", False)
    if low is None or high is None:
        raise InvalidInput(f"param {name}: {kind} needs low and high")
    if not isinstance(log, bool):
        raise InvalidInput(f"param {name}: log is true or false")
    if low > high:
        raise InvalidInput(f"param {name}: low {low:g} is above high {high:g}")
    if log and low <= 0:
        raise InvalidInput(f"param {name}: a log range needs low above 0")
    if step is not None and (step <= 0 or (log and (kind == "float" or step != 1))):
        raise InvalidInput(f"param {name}: step must be above 0, and not given with log")
    return Param(name, kind, low, high, log, step)


def _number(name: str, spec: Mapping[str, Any], key: str, kind: str) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"param {name}: {key} must be a number; got {value!r}")
    if kind == "int" and value != int(value):
        raise InvalidInput(f"param {name}: int's {key} must be a whole number; got {value!r}")
    return float(value)


def _only(name: str, spec: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(spec) - allowed
    if extra:
        raise InvalidInput(f"param {name}: unknown keys {sorted(extra)}; allowed {sorted(allowed)}")
