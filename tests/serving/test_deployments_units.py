"""The pure parts of deployments: the traffic split's draws (seeded) and the
autoscaler's decisions."""

from __future__ import annotations

import collections

import pytest

from plinth.serving.autoscaler import decide, in_flight
from plinth.serving.model import ServedModel
from plinth.serving.split import Split
from plinth.serving.supervisor import backoff


def _model(version: str) -> ServedModel:
    return ServedModel("churn", version, "sklearn", predictor=None)  # type: ignore[arg-type]


def test_canary_weights_hold_over_10000_draws() -> None:
    split = Split({v: _model(v) for v in "123"}, [("1", 90), ("2", 10)], "3", seed=7)
    counts = collections.Counter(split.pick().version for _ in range(10_000))
    assert set(counts) == {"1", "2"}  # the shadow never answers
    # binomial(10000, 0.1): sd 30, so 4 sd either side
    assert 880 <= counts["2"] <= 1120
    split.configure([("1", 100), ("2", 0)], None, generation=2)
    assert {split.pick().version for _ in range(1000)} == {"1"}
    assert split.primary.version == "1" and split.shadow is None


def test_a_split_refuses_a_version_it_does_not_hold() -> None:
    split = Split.single(_model("1"))
    with pytest.raises(Exception, match="holds no version"):
        split.configure([("2", 100)], None, generation=1)


@pytest.mark.parametrize(
    ("current", "loads", "low", "high", "wanted"),
    [
        (1, [], 1, 4, 1),  # nothing observed: stay
        (1, [12.0], 1, 4, 3),  # up at once to what the load needs
        (1, [40.0], 1, 4, 4),  # never past max
        (3, [0.0, 0.0, 0.0], 1, 4, 2),  # down one at a time
        (2, [0.0, 0.0], 2, 4, 2),  # never below min
        (2, [4.0, 4.0], 1, 4, 2),  # at the target: stay
        (0, [], 1, 3, 1),  # bounds hold even without observations
    ],
)
def test_autoscaler_decisions(
    current: int, loads: list[float], low: int, high: int, wanted: int
) -> None:
    assert decide(current, loads, low, high) == wanted


def test_in_flight_is_read_from_metrics_and_backoff_grows() -> None:
    text = "# HELP x\nplinth_serving_in_flight 3.0\nplinth_serving_queue_depth 1.0\n"
    assert in_flight(text) == 3.0 and in_flight("") is None
    assert [backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0] and backoff(99) == 60.0
