"""Tracing a pipeline into its spec, and the code digest behind each step's cache key:
it changes with what a step runs from the working directory, and only with that."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
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


TREE = {
    "util_{k}.py": "def norm(x):\n    return x + 1\n",
    "helpers_{k}.py": (
        "from util_{k} import norm\n\n\ndef clean(xs):\n    return [norm(x) for x in xs]\n"
    ),
    "base_{k}.py": "class Base:\n    def run(self, x):\n        return x\n",
    "config.yaml": "lr: 0.1\n",
    "flow_{k}.py": """
import functools
import sys
from pathlib import Path

import plinth
import helpers_{k}
from base_{k} import Base

THRESHOLD = 5
STOP = {{"the", "a", "an", "of", "to", "in"}}


class Cfg:
    def __init__(self, lr):
        self.lr = lr


CFG = Cfg(lr=0.1)
CLEAN = functools.partial(helpers_{k}.clean)


def deco(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) * 10

    return wrapper


class Model(Base):
    pass


@plinth.step
def uses_helpers(xs):
    return helpers_{k}.clean(xs)


@plinth.step
def uses_default(x, t=THRESHOLD):
    return x > t


@plinth.step
def uses_base(x):
    return Model().run(x)


@plinth.step
@deco
def uses_deco(x):
    return x


@plinth.step
def uses_cfg(x):
    return x * CFG.lr


@plinth.step
def uses_partial(xs):
    return CLEAN(xs)


@plinth.step
def uses_stop(word):
    return word in STOP


@plinth.pipeline
def flow():
    uses_helpers([1])
    uses_default(1)
    uses_base(1)
    uses_deco(1)
    uses_cfg(1)
    uses_partial([1])
    uses_stop("a")


if __name__ == "__main__":
    from plinth.pipelines.dsl import code_digest

    print(code_digest(uses_stop.fn, Path(__file__).parent))
""",
}


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    k = uuid.uuid4().hex[:8]
    for name, text in TREE.items():
        (tmp_path / name.format(k=k)).write_text(text.format(k=k))
    yield tmp_path, k
    for name in TREE:
        sys.modules.pop(name.format(k=k).removesuffix(".py"), None)


def _tree_digests(root: Path, k: str) -> dict[str, str]:
    for name in TREE:  # each trace imports the tree afresh, as a new process would
        sys.modules.pop(name.format(k=k).removesuffix(".py"), None)
    return _digests(dsl.load_function(f"flow_{k}:flow", root).trace(workdir=root))


def test_the_code_digest_misses_no_code_a_step_reaches(tree: tuple[Path, str]) -> None:
    """Each edit changes the digest of the step that runs the edited code: through a
    helper's own imports, a default argument, a base class, a decorator's wrapper, an
    object made at import, a partial, or a file of the working directory."""
    root, k = tree
    edits = [
        (f"util_{k}.py", "x + 1", "x + 2", {"uses_helpers", "uses_partial"}),
        (f"flow_{k}.py", "THRESHOLD = 5", "THRESHOLD = 6", {"uses_default"}),
        (f"base_{k}.py", "return x", "return x * 2", {"uses_base"}),
        (f"flow_{k}.py", "* 10", "* 99", {"uses_deco"}),
        (f"flow_{k}.py", "Cfg(lr=0.1)", "Cfg(lr=0.2)", {"uses_cfg"}),
        ("config.yaml", "0.1", "0.2", set(TREE_STEPS)),
    ]
    before = _tree_digests(root, k)
    for file, old, new, changed in edits:
        path = root / file
        path.write_text(path.read_text().replace(old, new, 1))
        after = _tree_digests(root, k)
        moved = {step for step in after if after[step] != before[step]}
        assert changed <= moved, (file, old, new, moved)
        before = after


TREE_STEPS = (
    "uses_helpers",
    "uses_default",
    "uses_base",
    "uses_deco",
    "uses_cfg",
    "uses_partial",
    "uses_stop",
)


def test_the_code_digest_is_the_same_in_every_process(tree: tuple[Path, str]) -> None:
    """Whatever the hash seed (a set's order), and whether the file runs as __main__ or
    is imported by name, as the worker imports it."""
    import os
    import subprocess

    root, k = tree
    imported = _tree_digests(root, k)["uses_stop"]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, f"flow_{k}.py"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.strip() == imported
