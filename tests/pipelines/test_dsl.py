"""Tracing a pipeline into its spec, and the code digest behind each step's cache key:
it changes with what a step runs from the working directory, and only with that."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from plinth.errors import InvalidInput
from plinth.pipelines import dsl
from plinth.pipelines import schemas as s

FLOW = """
import plinth
import {helpers}

SCALE = 2
UNUSED = 1


def helper(x):
    return x * SCALE


@plinth.step
def load(n: int):
    return list(range(n))


@plinth.step(cpus=2, memory="1Gi")
def double(xs, factor=1):
    return [helper(x) * factor for x in xs]


@plinth.step
def clean(xs):
    return {helpers}.clean(xs)


@plinth.step(outputs=2)
def split(xs):
    return xs[:1], xs[1:]


@plinth.step
def total(a, b, c):
    return sum(a) + sum(b) + sum(c)


@plinth.pipeline
def flow(n: int = 3, factor: float = 1.0, data: str = "churn"):
    xs = load(n)
    ys = double(xs, factor=factor)
    head, tail = split(clean(ys))
    return total(head, tail, plinth.dataset(data))
"""


@pytest.fixture
def flow_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write the flow module (and its helpers module) under unique names; returns the
    folder. Call again with replacements to edit a file."""
    suffix = uuid.uuid4().hex[:8]
    names = {"flow": f"flow_{suffix}", "helpers": f"helpers_{suffix}"}
    (tmp_path / f"{names['helpers']}.py").write_text("def clean(xs):\n    return xs\n")
    (tmp_path / f"{names['flow']}.py").write_text(FLOW.format(helpers=names["helpers"]))

    def edit(file: str = "flow", old: str = "", new: str = "") -> Path:
        path = tmp_path / f"{names[file]}.py"
        if old:
            assert old in path.read_text()
            path.write_text(path.read_text().replace(old, new))
        return tmp_path

    edit.names = names  # type: ignore[attr-defined]
    yield edit
    for name in names.values():
        sys.modules.pop(name, None)


def _trace(flow_dir: Callable[..., Path], **params: object) -> s.PipelineSpec:
    root = flow_dir()
    ref = f"{flow_dir.names['flow']}:flow"  # type: ignore[attr-defined]
    found = dsl.load_function(ref, root)
    return found.trace(params, workdir=root)  # type: ignore[no-any-return]


def _digests(spec: s.PipelineSpec) -> dict[str, str]:
    return {step.name: step.code_digest for step in spec.steps}


def test_tracing_records_steps_in_order_with_their_arguments(
    flow_dir: Callable[..., Path],
) -> None:
    spec = _trace(flow_dir, n="5", factor="0.5")
    assert [step.name for step in spec.steps] == ["load", "double", "clean", "split", "total"]
    assert spec.params == {"n": 5, "factor": 0.5, "data": "churn"}  # converted by default
    load, double, _clean, split, total = spec.steps
    assert load.inputs["n"] == s.ValueInput(value=5)
    assert double.inputs["xs"] == s.OutputInput(step="load")
    assert double.inputs["factor"] == s.ValueInput(value=0.5)
    assert (double.cpus, double.memory) == (2, "1Gi")
    assert split.outputs == 2
    assert total.inputs["a"] == s.OutputInput(step="split", index=0)
    assert total.inputs["b"] == s.OutputInput(step="split", index=1)
    assert total.inputs["c"] == s.DatasetInput(ref="churn")
    assert spec.upstream(total) == ["split"]
    assert double.function.endswith(":double")


def test_a_step_outside_a_trace_is_its_function(flow_dir: Callable[..., Path]) -> None:
    root = flow_dir()
    module = dsl.load_function(f"{flow_dir.names['flow']}:double", root)  # type: ignore[attr-defined]
    assert module([1, 2], factor=3) == [6, 12]


def test_the_code_digest_follows_what_the_step_runs(flow_dir: Callable[..., Path]) -> None:
    before = _digests(_trace(flow_dir))

    flow_dir("flow", "SCALE = 2", "SCALE = 5")  # a constant double's helper reads
    after = _digests(_trace(flow_dir))
    assert after["double"] != before["double"]
    assert {k: v for k, v in after.items() if k != "double"} == {
        k: v for k, v in before.items() if k != "double"
    }

    flow_dir("helpers", "return xs", "return list(xs)")  # a module clean uses
    again = _digests(_trace(flow_dir))
    assert again["clean"] != after["clean"]
    assert again["load"] == after["load"] and again["total"] == after["total"]

    flow_dir("flow", "UNUSED = 1", "UNUSED = 2")  # nothing reads it
    flow_dir("flow", "    return total(", "    # the wiring's comment\n    return total(")
    assert _digests(_trace(flow_dir)) == again


def test_bad_pipelines_are_clear_errors(flow_dir: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="has no parameter nope"):
        _trace(flow_dir, nope=1)
    with pytest.raises(InvalidInput, match="expected int"):
        _trace(flow_dir, n="many")

    name = f"bad_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import plinth

            @plinth.step
            def one():
                return 1

            @plinth.step
            def two(x):
                return x

            @plinth.pipeline
            def branches():
                if one():
                    two(1)

            @plinth.pipeline
            def unpacks():
                a, b = one()

            @plinth.pipeline
            def nests():
                two({"x": one()})

            @plinth.pipeline
            def objects():
                two(object())

            @plinth.pipeline
            def nothing():
                return 1
            """
        )
    )
    try:
        cases = {
            "branches": "known only when the step runs",
            "unpacks": "outputs=N",
            "nests": "inside a list or dict",
            "objects": "not plain JSON",
            "nothing": "calls no step",
        }
        for fn, message in cases.items():
            found = dsl.load_function(f"{name}:{fn}", tmp_path)
            with pytest.raises((InvalidInput, TypeError), match=message):
                found.trace(workdir=tmp_path)
    finally:
        sys.modules.pop(name, None)


def test_specs_that_are_not_a_dag_are_refused() -> None:
    step = {"function": "m:f", "code_digest": "0" * 64}
    with pytest.raises(ValueError, match="not a step before it"):
        s.PipelineSpec(
            name="p",
            function="m:p",
            steps=[{**step, "name": "a", "inputs": {"x": {"kind": "output", "step": "b"}}}],
        )
    with pytest.raises(ValueError, match="returns 1"):
        s.PipelineSpec(
            name="p",
            function="m:p",
            steps=[
                {**step, "name": "a"},
                {**step, "name": "b", "inputs": {"x": {"kind": "output", "step": "a", "index": 1}}},
            ],
        )
    with pytest.raises(ValueError, match="two steps are named"):
        s.PipelineSpec(name="p", function="m:p", steps=[{**step, "name": "a"}] * 2)
    with pytest.raises(ValueError, match="KiB as JSON"):
        s.ValueInput(value="x" * (s.MAX_VALUE_BYTES + 1))
