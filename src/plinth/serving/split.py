"""The versions one server holds and how its traffic goes among them.

A deployment's replica holds every version of its traffic split and its shadow, so a
canary or a shadow costs no network hop: ``Split.pick`` chooses the version that
answers a request, by weight, with a seeded random generator (reproducible in tests);
the shadow, if any, gets a copy of the request off the request path, and its answer
is recorded, never returned. ``configure`` changes weights and shadow between two
requests, without a restart: the control plane calls it through the replica's admin
endpoint (``admin_config``), guarded by a secret only the control plane knows.
"""

from __future__ import annotations

import bisect
import collections
import hmac
import itertools
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plinth.errors import InvalidInput, NotFound
from plinth.serving.model import ServedModel

SHADOW_KEPT = 1000  # the shadow's most recent answers a replica keeps


def choose(cumulative: Sequence[float], draw: float) -> int:
    """The index whose share of ``cumulative`` weights holds ``draw`` (0 <= draw < 1)."""
    return bisect.bisect_right(cumulative, draw * cumulative[-1])


@dataclass(frozen=True)
class ShadowAnswer:
    version: str
    ok: bool
    outputs: Any


class Split:
    """``models`` by version label; ``weights`` as ``[(version, weight)]``."""

    def __init__(
        self,
        models: dict[str, ServedModel],
        weights: list[tuple[str, int]],
        shadow: str | None = None,
        *,
        seed: int | None = None,
        generation: int = 0,
    ) -> None:
        self.models = dict(models)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # configure runs off the loop; pick on it
        self.shadow_answers: collections.deque[ShadowAnswer] = collections.deque(maxlen=SHADOW_KEPT)
        self.configure(weights, shadow, generation)

    @classmethod
    def single(cls, model: ServedModel) -> Split:
        return cls({model.version: model}, [(model.version, 100)])

    @property
    def name(self) -> str:
        return self.primary.name

    def configure(
        self, weights: list[tuple[str, int]], shadow: str | None, generation: int
    ) -> None:
        """Send traffic by ``weights`` from now on (and copies to ``shadow``)."""
        live = [(v, w) for v, w in weights if w > 0]
        if not live:
            raise InvalidInput("a split needs a version with a weight above 0")
        for version in [*(v for v, _ in live), *([shadow] if shadow else [])]:
            if version not in self.models:
                raise NotFound(f"this server holds no version {version!r}")
        cumulative = list(itertools.accumulate(float(w) for _, w in live))
        with self._lock:
            self._choices = [self.models[v] for v, _ in live]
            self._cumulative = cumulative
            self.weights = list(weights)
            self.primary = self.models[max(live, key=_weight)[0]]
            self.shadow = self.models[shadow] if shadow else None
            self.generation = generation

    def pick(self) -> ServedModel:
        """The version that answers the next request."""
        choices, cumulative = self._choices, self._cumulative  # one consistent pair
        if len(choices) == 1:
            return choices[0]
        return choices[choose(cumulative, self._rng.random())]

    def record_shadow(self, ok: bool, outputs: Any) -> None:
        if self.shadow is not None:
            self.shadow_answers.append(ShadowAnswer(self.shadow.version, ok, outputs))

    def describe(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "split": [{"version": v, "weight": w} for v, w in self.weights],
            "shadow": None if self.shadow is None else self.shadow.version,
            "versions": sorted(self.models),
            "shadow_answers": len(self.shadow_answers),
        }


def _weight(pair: tuple[str, int]) -> int:
    return pair[1]


def load_versions(
    name: str,
    versions: list[dict[str, Any]],
    known: dict[str, ServedModel],
    device: str | None = None,
) -> None:
    """Load the versions not yet in ``known`` (each ``{version, directory,
    allow_pickle}``) into it, on ``device`` where a flavor can choose; a replica is its
    own process, so a version an admin marked ``unsafe_pickle`` loads here, never in
    the Plinth server."""
    from plinth.serving.model import load

    for entry in versions:
        label = str(entry["version"])
        if label not in known and not entry.get("digest"):
            raise InvalidInput(f"version {label}: no digest to check its files against")
        if label not in known:
            known[label] = load(
                Path(entry["directory"]),
                name=name,
                version=label,
                allow_pickle=bool(entry.get("allow_pickle")),
                timeout=float(entry.get("load_timeout", 120.0)),
                digest=entry.get("digest"),
                device=device,
            )


def from_config(config: dict[str, Any], *, seed: int | None = None) -> Split:
    """The split a replica starts with, from the config file the control plane wrote."""
    models: dict[str, ServedModel] = {}
    load_versions(config["name"], config["versions"], models, config.get("device"))
    return Split(models, *_routing(config), seed=seed, generation=int(config["generation"]))


def apply_config(split: Split, config: dict[str, Any]) -> dict[str, Any]:
    """Load what is new, then switch weights and shadow at once (no request fails)."""
    models = dict(split.models)
    load_versions(split.name, config["versions"], models, config.get("device"))
    split.models = models
    split.configure(*_routing(config), generation=int(config["generation"]))
    return split.describe()


def _routing(config: dict[str, Any]) -> tuple[list[tuple[str, int]], str | None]:
    weights = [(str(e["version"]), int(e["weight"])) for e in config["split"]]
    shadow = config.get("shadow")
    return weights, None if shadow is None else str(shadow)


def authorized(secret: str | None, header: bytes | None) -> bool:
    """Whether an admin request carries the replica's secret (``Bearer SECRET``)."""
    if not secret or header is None:
        return False
    return hmac.compare_digest(header, f"Bearer {secret}".encode())
