"""Steps and pipelines in plain Python: ``@plinth.step``, ``@plinth.pipeline``,
``plinth.dataset``.

Calling a pipeline's function under ``trace`` does not run its steps: each call of a
step records the step and hands back a placeholder of its output, which passed to a
later step makes that step read it. What comes out is a ``PipelineSpec``: the steps in
the order they were called, each with its arguments (a plain JSON value, an earlier
step's output, or a dataset) and the digest of its code. Outside ``trace`` a step is
its function: calling it runs it, as a test would.

A step's **code digest** covers what it runs from the user's own files: the step
function's source, and through the global names it uses, the source of every function
and class of the working directory it reaches (transitively), every module of the
working directory it uses whole (``helpers.clean(...)``: the file), and the value of
plain constants (``THRESHOLD = 0.5``). Editing a helper the step calls changes its key;
editing another step, a comment elsewhere or the pipeline's wiring does not. Installed
libraries are not hashed: pin them.
"""

from __future__ import annotations

import contextlib
import contextvars
import dis
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

from plinth.errors import InvalidInput
from plinth.pipelines import schemas as s

F = TypeVar("F", bound=Callable[..., Any])
_TRACING: contextvars.ContextVar[_Builder | None] = contextvars.ContextVar(
    "plinth_pipeline_trace", default=None
)
PLAIN = (bool, int, float, str, bytes, type(None))
IN_WORKER = False  # set by the step worker: a module it imports must not start runs


class Dataset:
    """A dataset version a step reads: ``plinth.dataset("churn@3")``, or
    ``plinth.dataset("churn")`` for the newest when the run starts. The step gets the
    pulled version's directory as a ``pathlib.Path``."""

    def __init__(self, ref: str) -> None:
        from plinth.data.refs import parse_ref

        parse_ref(ref)  # a clear error now, not when the run starts
        self.ref = ref

    def __repr__(self) -> str:
        return f"plinth.dataset({self.ref!r})"


def dataset(ref: str) -> Dataset:
    return Dataset(ref)


class Output:
    """A step's output while a pipeline is traced: known only once the step has run,
    so it can only be passed to another step."""

    def __init__(self, step: str, index: int) -> None:
        self.step, self.index = step, index

    def __repr__(self) -> str:
        return f"<output {self.index} of step {self.step!r}>"

    def __bool__(self) -> bool:
        raise TypeError(
            f"{self!r} is known only when the step runs: a pipeline wires steps together, "
            "it cannot branch on their results (do that inside a step)"
        )

    def __iter__(self) -> Iterator[Any]:
        raise TypeError(
            f"{self!r} is one value: declare @plinth.step(outputs=N) to unpack N of them"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise TypeError(f"{self!r} has no attribute {name!r} yet: pass it to a step")


class Step:
    """A function marked as a step (``@plinth.step(cpus=2)``)."""

    def __init__(self, fn: Callable[..., Any], **resources: Any) -> None:
        if inspect.iscoroutinefunction(fn):
            raise InvalidInput(f"step {fn.__name__}: a step is a plain function, not async")
        for p in inspect.signature(fn).parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                raise InvalidInput(f"step {fn.__name__}: *{p.name} is not allowed; name them")
        self.fn = fn
        self.outputs = int(resources.pop("outputs", 1))
        self.resources = resources
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = _TRACING.get()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<plinth step {self.fn.__module__}.{self.fn.__qualname__}>"


class Pipeline:
    """A function marked as a pipeline (``@plinth.pipeline``): calls of steps inside it
    make its graph. Its arguments are the pipeline's parameters (``--param k=v``)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.name = fn.__name__
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<plinth pipeline {self.fn.__module__}.{self.fn.__qualname__}>"

    def trace(
        self, params: Mapping[str, Any] | None = None, *, workdir: str | Path = "."
    ) -> s.PipelineSpec:
        """The spec: the steps this function calls with ``params`` (strings from the
        command line are converted to the types of the function's defaults or
        annotations), each with its code digest taken against ``workdir``."""
        root = Path(workdir).resolve()
        values = _bind_params(self.fn, dict(params or {}))
        builder = _Builder(root)
        token = _TRACING.set(builder)
        try:
            self.fn(**values)
        finally:
            _TRACING.reset(token)
        if not builder.steps:
            raise InvalidInput(f"pipeline {self.name} calls no step")
        try:
            return s.PipelineSpec(
                name=self.name,
                function=function_ref(self.fn, root),
                params=_jsonable(values, "params"),
                steps=builder.steps,
            )
        except ValueError as exc:
            raise InvalidInput(f"pipeline {self.name}: {exc}") from None


@overload
def step(fn: F) -> F: ...
@overload
def step(
    *,
    cpus: float = 1.0,
    gpus: int = 0,
    memory: str | None = None,
    pool: str | None = None,
    retries: int = 0,
    timeout: str | None = None,
    outputs: int = 1,
) -> Callable[[F], F]: ...
def step(fn: Any = None, **resources: Any) -> Any:
    """Mark a function as a pipeline step: ``@plinth.step`` or ``@plinth.step(cpus=2,
    gpus=1, memory="8Gi", outputs=2)``. Its return value (or ``outputs`` of them, as a
    tuple) is stored as artifacts: JSON values, numpy arrays, pandas DataFrames, Arrow
    tables, bytes, files or folders (a ``pathlib.Path``), scikit-learn models (skops)."""
    allowed = {"cpus", "gpus", "memory", "pool", "retries", "timeout", "outputs"}
    unknown = set(resources) - allowed
    if unknown:
        raise TypeError(f"plinth.step got unknown options: {', '.join(sorted(unknown))}")
    if fn is None:
        return lambda f: Step(f, **resources)
    return Step(fn, **resources)


def pipeline(fn: F) -> F:
    """Mark a function as a pipeline: ``@plinth.pipeline``."""
    return Pipeline(fn)  # type: ignore[return-value]


class _Builder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.steps: list[s.StepSpec] = []
        self.names: set[str] = set()
        self.digests: dict[Callable[..., Any], str] = {}
        self.resources = resources_digest(root)

    def add(self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn = step.fn
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidInput(f"step {fn.__name__}: {exc}") from None
        inputs: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = inspect.signature(fn).parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                for key, item in value.items():
                    inputs[key] = _input(fn.__name__, key, item)
            else:
                inputs[name] = _input(fn.__name__, name, value)
        name = _unique(fn.__name__, self.names)
        if fn not in self.digests:
            self.digests[fn] = code_digest(fn, self.root, self.resources)
        try:
            spec = s.StepSpec(
                name=name,
                function=function_ref(fn, self.root),
                code_digest=self.digests[fn],
                inputs=inputs,
                outputs=step.outputs,
                **step.resources,
            )
        except ValueError as exc:
            raise InvalidInput(f"step {name}: {exc}") from None
        self.steps.append(spec)
        if step.outputs == 1:
            return Output(name, 0)
        return tuple(Output(name, i) for i in range(step.outputs))


def _input(step: str, arg: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Output):
        return {"kind": "output", "step": value.step, "index": value.index}
    if isinstance(value, Dataset):
        return {"kind": "dataset", "ref": value.ref}
    return {"kind": "value", "value": _jsonable(value, f"step {step} argument {arg}")}


def _jsonable(value: Any, what: str) -> Any:
    def refuse(found: Any) -> Any:
        if isinstance(found, Output | Dataset):
            raise InvalidInput(
                f"{what}: {found!r} inside a list or dict; pass it as an argument of its own"
            )
        raise InvalidInput(
            f"{what}: {type(found).__name__} is not plain JSON; a step's arguments are "
            "JSON values, other steps' outputs or plinth.dataset(...)"
        )

    try:
        return json.loads(json.dumps(value, allow_nan=False, default=refuse))
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}") from None


def _unique(name: str, names: set[str]) -> str:
    candidate, n = name, 1
    while candidate in names:
        n += 1
        candidate = f"{name}-{n}"
    names.add(candidate)
    return candidate


def _bind_params(fn: Callable[..., Any], params: dict[str, Any]) -> dict[str, Any]:
    signature = inspect.signature(fn)
    unknown = set(params) - set(signature.parameters)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        raise InvalidInput(
            f"pipeline {fn.__name__} has no parameter {', '.join(sorted(unknown))} "
            f"(it takes: {', '.join(signature.parameters) or 'none'})"
        )
    values: dict[str, Any] = {}
    for name, p in signature.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in params:
            values[name] = _convert(name, params[name], p)
        elif p.default is p.empty:
            raise InvalidInput(f"pipeline {fn.__name__} needs --param {name}=…")
        else:
            values[name] = p.default
    for name in unknown:
        values[name] = _convert(name, params[name], None)
    return values


def _convert(name: str, value: Any, p: inspect.Parameter | None) -> Any:
    """A parameter as the function expects it: text from the command line becomes an
    int, float or bool when its default or annotation says so, else JSON if it parses,
    else stays text."""
    if not isinstance(value, str):
        return value
    kind: Any = None
    if p is not None:
        kind = p.annotation if p.annotation is not p.empty else None
        if kind is None and p.default is not p.empty and p.default is not None:
            kind = type(p.default)
        if isinstance(kind, str):  # postponed annotations
            kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind)
    try:
        if kind is bool:
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        if kind in (int, float):
            return kind(value)
        if kind is str:
            return value
    except ValueError:
        raise InvalidInput(
            f"--param {name}={value}: expected {getattr(kind, '__name__', kind)}"
        ) from None
    try:
        return json.loads(value)
    except ValueError:
        return value


# where code is ---------------------------------------------------------------------------


def function_ref(fn: Callable[..., Any], root: Path) -> str:
    """``module:qualname`` that imports ``fn`` in the snapshot of ``root``."""
    qualname = fn.__qualname__
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise InvalidInput(
            f"{fn.__name__} is defined inside a function: steps and pipelines are "
            "module-level functions (the worker imports them)"
        )
    return f"{module_name(fn, root)}:{qualname}"


def module_name(fn: Callable[..., Any], root: Path) -> str:
    module = fn.__module__
    if module != "__main__":
        return module
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not file:
        raise InvalidInput(
            f"{fn.__name__} is defined in an interactive session: put it in a file of "
            "the working directory"
        )
    path = Path(file).resolve()
    try:
        relative = path.relative_to(root)
    except ValueError:
        raise InvalidInput(f"{path} is outside the working directory {root}") from None
    return ".".join(relative.with_suffix("").parts)


def load_function(ref: str, root: Path | None = None) -> Any:
    """The object ``module:qualname`` names, importing the module with ``root`` (or the
    current directory) first on the path."""
    module, _, qualname = ref.partition(":")
    if not module or not qualname:
        raise InvalidInput(f"{ref!r}: give MODULE:FUNCTION, such as pipeline:train")
    where = Path(root or ".").resolve()
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))
    importlib.invalidate_caches()
    try:
        found: Any = importlib.import_module(module)
        file = getattr(found, "__file__", None)
        if file and _under(Path(file), where) and _changed(found):
            # edited since it was imported: trace the edit (not bytecode cached from a
            # file of the same size written in the same second)
            Path(importlib.util.cache_from_source(file)).unlink(missing_ok=True)
            found = importlib.reload(found)
    except ModuleNotFoundError as exc:
        raise InvalidInput(f"cannot import {module!r}: {exc}") from None
    for part in qualname.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise InvalidInput(f"module {module!r} has no {qualname!r}") from None
    return found


def _changed(module: types.ModuleType) -> bool:
    """Whether a module's file differs from what was imported (as a notebook that edits
    its pipeline's file and runs it again would have it)."""
    file = Path(str(module.__file__))
    try:
        now = hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError:
        return False
    before = _IMPORTED.setdefault(module.__name__, now)
    _IMPORTED[module.__name__] = now
    return before != now


_IMPORTED: dict[str, str] = {}


def code_digest(fn: Callable[..., Any], root: Path, resources: str | None = None) -> str:
    """sha256 of what ``fn`` runs from the working directory ``root`` (see above), and
    of the working directory's other files (``resources``: ``resources_digest``)."""
    digest = hashlib.sha256()
    _Hasher(root, digest).function(fn)
    digest.update(f"resources\0{resources or resources_digest(root)}".encode())
    return digest.hexdigest()


def resources_digest(root: Path) -> str:
    """The digest of the files a snapshot of ``root`` would hold that are not Python
    (configuration, SQL, small data): a step may read any of them, so each counts for
    every step. Compiled caches and a worker's scratch folder are left out."""
    from plinth.compute.snapshot import collect
    from plinth.core.blobs import file_digest, manifest_digest

    files = []
    for f in collect(root, 1 << 62):
        parts = f.path.split("/")
        if f.path.endswith((".py", ".pyc")) or "__pycache__" in parts or parts[0] == SCRATCH:
            continue
        files.append((f.path, file_digest(f.source).digest, f.size))
    return manifest_digest(files)


SCRATCH = ".plinth-step"  # where a step's worker fetches inputs and writes outputs


class _Hasher:
    """Feeds what a function runs into a digest. Precise where it can be (a function's
    source, the functions, classes and constants it names, transitively), conservative
    where it cannot: a global it cannot read as code or plain data (an object, a
    partial of unknown make) adds the whole file of the module that holds it."""

    def __init__(self, root: Path, digest: Any) -> None:
        self.root, self.digest = root, digest
        self.seen: set[int] = set()

    def feed(self, label: str, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.digest.update(f"{label}\0{len(raw)}\0".encode())
        self.digest.update(raw)

    def local(self, obj: Any) -> bool:
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        file = getattr(module, "__file__", None)
        return bool(file) and _under(Path(str(file)), self.root)

    def once(self, obj: Any) -> bool:
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        return True

    def name(self, obj: Any) -> str:
        try:
            return f"{module_name(obj, self.root)}:{obj.__qualname__}"
        except InvalidInput:
            return f"{obj.__module__}:{obj.__qualname__}"

    def function(self, fn: Any) -> None:
        if not self.once(fn):
            return
        code = getattr(fn, "__code__", None)
        if code is None:  # a wrapper object (functools.cache): what it wraps
            inner = getattr(fn, "__wrapped__", None)
            if inner is not None:
                self.feed("wrapper", f"{type(fn).__module__}.{type(fn).__qualname__}")
                self.function(inner)
            return
        self.feed("function", self.name(fn))
        try:  # the code object's own lines: a decorator's wrapper, not what it wraps
            self.feed("source", _source(code))
        except (OSError, TypeError):
            self.feed("bytecode", _code_bytes(code))
        owner = fn.__globals__
        for default in (*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()):
            self.value("default", default, owner)
        for name in sorted(set(_names(code))):
            if name in owner:
                self.value(name, owner[name], owner)
        cells = dict(zip(code.co_freevars, fn.__closure__ or (), strict=False))
        for name, cell in sorted(cells.items()):
            try:
                self.value(name, cell.cell_contents, owner)
            except ValueError:  # an empty cell
                continue
        inner = getattr(fn, "__wrapped__", None)
        if inner is not None:
            self.function(inner)

    def module(self, module: types.ModuleType) -> None:
        """A module of the working directory: its file, and the working directory's
        modules, functions and classes it imports (``from util import norm``)."""
        file = getattr(module, "__file__", None)
        if not file or not _under(Path(file), self.root) or not self.once(module):
            return
        self.feed(f"module {module.__name__}", Path(file).read_bytes())
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType):
                self.module(value)
            elif (
                isinstance(value, types.FunctionType | type)
                and getattr(value, "__module__", None) != module.__name__
                and self.local(value)
            ):
                self.value("imported", value, vars(module))

    def value(self, name: str, value: Any, owner: dict[str, Any]) -> None:
        if isinstance(value, Step | Pipeline):
            value = value.fn
        if isinstance(value, types.ModuleType):
            self.module(value)
        elif isinstance(value, types.FunctionType) or hasattr(value, "__wrapped__"):
            if self.local(value) or self.local(getattr(value, "__wrapped__", None)):
                self.function(value)
        elif isinstance(value, type):
            if self.local(value) and self.once(value):
                with contextlib.suppress(OSError, TypeError):
                    self.feed(f"class {self.name(value)}", _source(value))
                for base in value.__bases__:
                    self.value("base", base, owner)
                for member in vars(value).values():
                    inner = getattr(member, "__func__", member)
                    if isinstance(inner, types.FunctionType):
                        self.function(inner)
        elif isinstance(value, functools.partial):
            self.value(f"{name}.func", value.func, owner)
            self.value(f"{name}.args", value.args, owner)
            self.value(f"{name}.keywords", value.keywords, owner)
        elif _plain(value):
            self.feed(f"constant {name}", _canonical(value))
        elif isinstance(value, list | tuple | set | frozenset | dict) and len(value) <= 1000:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:  # a table of functions, say
                self.value(f"{name}[{key!r}]", item, owner)
        elif _is_library(value):
            return  # a library's object (a logger, a compiled pattern): not your code
        else:  # an object of some make: whatever made it is in its module's file
            kind = type(value)
            if self.local(kind):
                self.value("type", kind, owner)
            holder = sys.modules.get(str(owner.get("__name__")))
            if holder is not None:
                self.module(holder)


def _is_library(value: Any) -> bool:
    module = sys.modules.get(type(value).__module__ or "")
    file = getattr(module, "__file__", None)
    return module is not None and (
        file is None or "site-packages" in Path(file).parts or _stdlib(file)
    )


def _stdlib(file: str) -> bool:
    import sysconfig

    return Path(file).resolve().is_relative_to(Path(sysconfig.get_paths()["stdlib"]).resolve())


def _plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, PLAIN):
        return True
    if depth > 3:
        return False
    if isinstance(value, tuple | list | frozenset | set):
        return len(value) <= 1000 and all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= 1000 and all(
            _plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items()
        )
    return False


def _canonical(value: Any) -> str:
    """Plain data as text that is the same in every process (a set's order is not)."""
    if isinstance(value, set | frozenset):
        return "{" + ",".join(sorted(_canonical(v) for v in value)) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_canonical(k)}:{_canonical(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        body = ",".join(_canonical(v) for v in value)
        return f"[{body}]" if isinstance(value, list) else f"({body})"
    return repr(value)


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return "site-packages" not in path.parts


def _names(code: types.CodeType) -> Iterator[str]:
    """The global and attribute names a code object (and those nested in it) uses."""
    yield from code.co_names
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(
            instruction.argval, str
        ):
            yield instruction.argval
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _source(obj: Any) -> str:
    """``inspect.getsource``, asked again when Python 3.11's parser trips over another
    thread's parse (``SystemError: AST constructor recursion depth mismatch``, CPython
    gh-106905: the depth counter is shared between threads)."""
    for _ in range(4):
        with contextlib.suppress(SystemError):
            return inspect.getsource(obj)
    return inspect.getsource(obj)


def _code_bytes(code: types.CodeType) -> bytes:
    parts = [code.co_code, repr(code.co_consts).encode(), repr(code.co_names).encode()]
    return b"\0".join(parts)
