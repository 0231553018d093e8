"""Validation rules, checked where the data is read: in the same pass as the schema and
the profile, batch by batch. A dataset's rules live on the server (``RuleSet``, set with
``set_dataset_rules`` or ``plinth datasets rules set``, from YAML or Python); custom
checks are Python functions the pusher passes (``Check``): the server never runs code.

A push checks every rule on every tabular file its ``files`` glob names (with the
default ``*``, the files that have the rule's column) and sends the report with the
version. A failing ``block`` rule stops the push before anything is uploaded; a failing
``warn`` rule is recorded with the version. The server refuses a version whose report
was made against other rules than the dataset's current ones.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plinth.data.schemas import (
    SAMPLE_ROWS,
    TYPE_FAMILIES,
    RuleResult,
    RuleSet,
    Severity,
    ValidationReport,
    rule_name,
    value_kind,
)
from plinth.errors import InvalidInput

SAMPLE_COLUMNS = 10  # columns of an offending row shown in a report


class ValidationFailed(InvalidInput):
    """A blocking rule failed: nothing was pushed. ``report`` says which, and where."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        failing = report.blocking
        lines = [f"{len(failing)} blocking rule(s) failed; nothing was pushed:"]
        lines += [f"  {describe(r)}" for r in failing[:20]]
        if len(failing) > 20:
            lines.append(f"  … and {len(failing) - 20} more")
        super().__init__("\n".join(lines))


def describe(result: RuleResult) -> str:
    where = f"{result.rule} on {result.file}: {result.message}"
    if result.samples:
        row = result.samples[0]
        shown = ", ".join(f"{k}={v!r}" for k, v in row.items() if k != "_row")
        where += f" (row {row.get('_row')}: {shown})"
    return where


@dataclass(frozen=True)
class Check:
    """A custom rule in Python: ``test(batch)`` gets a ``pyarrow.RecordBatch`` and
    returns, per row, True where the row breaks the rule (a boolean array or list)."""

    name: str
    test: Callable[[Any], Any]
    severity: Severity = "block"
    files: str = "*"


def rules_digest(rules: RuleSet) -> str:
    if not rules.rules:
        return ""
    canonical = json.dumps(rules.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_rules(source: str | os.PathLike[str] | list[Any] | dict[str, Any] | RuleSet) -> RuleSet:
    """Rules from a YAML file, YAML text, or Python (a list of rule dicts, or
    ``{"rules": [...]}``), checked."""
    import yaml
    from pydantic import ValidationError

    if isinstance(source, RuleSet):
        return source
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        is_file = "\n" not in text and Path(text).is_file()
        try:
            source = yaml.safe_load(Path(text).read_text() if is_file else text)
        except yaml.YAMLError as exc:
            raise InvalidInput(f"the rules are not YAML: {exc}") from None
    if isinstance(source, list):
        source = {"rules": source}
    try:
        return RuleSet.model_validate(source)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"]) or "the rules"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"not a rule set: {at}: {message}") from None


class Validator:
    """Rules and checks for one push: a ``FileChecker`` per tabular file."""

    def __init__(self, rules: RuleSet, checks: Iterable[Check] = ()) -> None:
        self.rules = rules
        self.checks = list(checks)

    def for_file(self, path: str, schema: Any) -> FileChecker:
        return FileChecker(path, schema, self.rules, self.checks)

    def unreadable(self, path: str, why: str) -> list[RuleResult]:
        """A tabular file that could not be read breaks the rules that would read it."""
        if not any(_applies(r.files, path) for r in [*self.rules.rules, *self.checks]):
            return []
        return [
            RuleResult(
                rule="readable",
                file=path,
                severity="block",
                passed=False,
                failing=1,
                message=why[:2000],
            )
        ]


class FileChecker:
    def __init__(self, path: str, schema: Any, rules: RuleSet, checks: list[Check]) -> None:
        self.path = path
        self.names = list(schema.names)
        self.schema = schema
        self.rows = 0
        self.states: list[_State] = []
        for rule in rules.rules:
            column = getattr(rule, "column", None)
            if not _applies(rule.files, path):
                continue
            if column is not None and column not in self.names:
                if rule.files != "*":  # named the file: the column must be there
                    self.states.append(_Missing(rule, path))
                continue
            if column is not None and self.names.count(column) > 1:
                self.states.append(_Ambiguous(rule, path, self.names.count(column)))
                continue
            self.states.append(_STATES[rule.check](rule, path, schema))
        self.states += [_Custom(c, path) for c in checks if _applies(c.files, path)]

    def add(self, batch: Any) -> None:
        for state in self.states:
            state.add(batch, self.rows)
        self.rows += batch.num_rows

    def results(self) -> list[RuleResult]:
        return [state.result(self.rows) for state in self.states]


def _applies(files: str, path: str) -> bool:
    return fnmatch.fnmatchcase(path, files)


class _State:
    def __init__(self, rule: Any, path: str, schema: Any = None) -> None:
        self.rule = rule
        self.name = rule_name(rule) if not isinstance(rule, Check) else rule.name
        self.path = path
        self.failing = 0
        self.samples: list[dict[str, Any]] = []
        self.message = ""

    def add(self, batch: Any, offset: int) -> None:
        pass

    def offending(self, batch: Any, mask: Any, offset: int) -> None:
        """Count the rows ``mask`` marks, and keep the first few as samples."""
        import numpy as np
        import pyarrow as pa

        bad = np.asarray(pa.array(mask, pa.bool_()).fill_null(False), dtype=bool)
        if len(bad) != batch.num_rows:
            raise InvalidInput(
                f"{self.name}: the check gave {len(bad)} answers for {batch.num_rows} rows"
            )
        indices = np.flatnonzero(bad)
        self.failing += len(indices)
        for i in indices[: SAMPLE_ROWS - len(self.samples)]:
            row = batch.slice(int(i), 1).to_pylist()[0]
            shown = {k: _plain(v) for k, v in list(row.items())[:SAMPLE_COLUMNS]}
            self.samples.append({"_row": offset + int(i), **shown})

    def result(self, rows: int) -> RuleResult:
        return RuleResult(
            rule=self.name,
            file=self.path,
            severity=self.rule.severity,
            passed=self.failing == 0,
            failing=self.failing,
            message=self.message or (f"{self.failing:,} rows break it" if self.failing else ""),
            samples=self.samples,
        )


class _Missing(_State):
    def result(self, rows: int) -> RuleResult:
        self.failing, self.message = 1, f"no column {self.rule.column!r}"
        return super().result(rows)


class _Ambiguous(_State):
    """A repeated header: which of the columns the rule means cannot be told."""

    def __init__(self, rule: Any, path: str, times: int) -> None:
        super().__init__(rule, path)
        self.failing = 1
        self.message = f"{times} columns are named {rule.column!r}; name them apart"


class _Type(_State):
    def __init__(self, rule: Any, path: str, schema: Any) -> None:
        super().__init__(rule, path, schema)
        actual = schema.field(rule.column).type
        if not _type_matches(actual, rule.type):
            self.failing, self.message = 1, f"{rule.column} is {actual}, not {rule.type}"


class _Range(_State):
    def add(self, batch: Any, offset: int) -> None:
        import pyarrow.compute as pc

        column = batch.column(self.rule.column)
        try:
            values = column.cast("float64")
        except Exception:  # pyarrow's many cast errors
            self.message = f"{self.rule.column} ({column.type}) is not numeric"
            return
        bad = None
        if self.rule.min is not None:
            bad = pc.less(values, self.rule.min)
        if self.rule.max is not None:
            high = pc.greater(values, self.rule.max)
            bad = high if bad is None else pc.or_(bad, high)
        if bad is not None:
            self.offending(batch, bad, offset)

    def result(self, rows: int) -> RuleResult:
        if self.message:  # not numeric
            self.failing = 1
        elif self.failing:
            self.message = f"{self.failing:,} rows outside [{self.rule.min}, {self.rule.max}]"
        return super().result(rows)


class _Allowed(_State):
    """Values compared in the column's own kind: numbers with a numeric column (as
    float64 for floating and decimal ones), true/false with a boolean one, text with
    any other (cast to string). Values of another kind are a failure of the rule."""

    def __init__(self, rule: Any, path: str, schema: Any) -> None:
        super().__init__(rule, path, schema)
        why, self.allowed = _allowed_set(rule, schema.field(rule.column).type)
        self.message = why  # set when the values cannot be compared with the column's

    def add(self, batch: Any, offset: int) -> None:
        import pyarrow.compute as pc

        if self.allowed is None:
            return
        column = batch.column(self.rule.column)
        if column.type != self.allowed.type:
            column = column.cast(self.allowed.type)
        inside = pc.is_in(column, value_set=self.allowed)
        self.offending(batch, pc.and_(pc.invert(inside), pc.is_valid(column)), offset)

    def result(self, rows: int) -> RuleResult:
        if self.allowed is None:
            self.failing = 1
        elif self.failing:
            self.message = f"{self.failing:,} rows hold values not allowed"
        return super().result(rows)


def _allowed_set(rule: Any, column_type: Any) -> tuple[str, Any]:
    """The rule's values as an Arrow array of the type they are compared in; or why
    they cannot be compared with this column, and None."""
    import pyarrow as pa

    t = column_type.value_type if pa.types.is_dictionary(column_type) else column_type
    values = list(rule.values)
    if pa.types.is_integer(t):
        want, kind = "a number", "numeric"
        # a number no value of the column can equal (1.5, 2^70) is left out, not an error
        whole = [int(v) for v in values if not isinstance(v, bool | str) and float(v).is_integer()]
        typed = pa.array([v for v in whole if _fits(v, t)], t)
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        want, kind, t = "a number", "numeric", pa.float64()
        typed = pa.array([float(v) for v in values if not isinstance(v, bool | str)], t)
    elif pa.types.is_boolean(t):
        want, kind = "true/false", "boolean"
        typed = pa.array([v for v in values if isinstance(v, bool)], t)
    elif pa.types.is_null(t):  # no value in the file: nothing to compare
        return "", pa.array([], pa.null())
    else:
        want, kind, t = "text", "text", pa.string()
        typed = pa.array([v for v in values if isinstance(v, str)], t)
        try:
            pa.array([], column_type).cast(t)
        except (pa.ArrowException, TypeError):
            return f"{rule.column} ({column_type}) cannot be compared with allowed values", None
    wrong = [v for v in values if value_kind(v) != want]
    if wrong:
        return (
            f"{rule.column} is {kind} ({column_type}): the allowed value {wrong[0]!r} "
            f"is {value_kind(wrong[0])}, not {want}"
        ), None
    return "", typed


def _fits(value: int, integer_type: Any) -> bool:
    import pyarrow as pa

    try:
        pa.scalar(value, integer_type)
    except (pa.ArrowException, OverflowError):
        return False
    return True


class _Unique(_State):
    """Every value seen is kept (memory grows with the distinct values)."""

    def __init__(self, rule: Any, path: str, schema: Any) -> None:
        super().__init__(rule, path, schema)
        self.seen: set[Any] = set()

    def add(self, batch: Any, offset: int) -> None:
        values = batch.column(self.rule.column).to_pylist()
        bad = []
        for v in values:
            bad.append(v is not None and v in self.seen)
            self.seen.add(v)
        self.offending(batch, bad, offset)

    def result(self, rows: int) -> RuleResult:
        if self.failing:
            self.message = f"{self.failing:,} rows repeat an earlier value"
        return super().result(rows)


class _Nulls(_State):
    def __init__(self, rule: Any, path: str, schema: Any) -> None:
        super().__init__(rule, path, schema)
        self.nulls = 0

    def add(self, batch: Any, offset: int) -> None:
        self.nulls += batch.column(self.rule.column).null_count

    def result(self, rows: int) -> RuleResult:
        fraction = self.nulls / rows if rows else 0.0
        if fraction > self.rule.max_fraction:
            self.failing = 1
            self.message = (
                f"{fraction:.2%} of {self.rule.column} is null "
                f"(at most {self.rule.max_fraction:.2%} allowed)"
            )
        return super().result(rows)


class _Rows(_State):
    def result(self, rows: int) -> RuleResult:
        low, high = self.rule.min, self.rule.max
        if (low is not None and rows < low) or (high is not None and rows > high):
            self.failing = 1
            self.message = f"{rows:,} rows, outside [{low}, {high}]"
        return super().result(rows)


class _Custom(_State):
    def add(self, batch: Any, offset: int) -> None:
        try:
            mask = self.rule.test(batch)
        except Exception as exc:
            self.failing = max(self.failing, 1)
            self.message = f"the check raised {type(exc).__name__}: {exc}"[:2000]
            return
        self.offending(batch, mask, offset)


_STATES: dict[str, type[_State]] = {
    "type": _Type,
    "range": _Range,
    "allowed": _Allowed,
    "unique": _Unique,
    "nulls": _Nulls,
    "rows": _Rows,
}


def _type_matches(actual: Any, wanted: str) -> bool:
    import pyarrow as pa

    families = {
        "integer": pa.types.is_integer,
        "floating": pa.types.is_floating,
        "numeric": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t),
        "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
        "boolean": pa.types.is_boolean,
        "temporal": pa.types.is_temporal,
    }
    if wanted in TYPE_FAMILIES:
        return bool(families[wanted](actual))
    return str(actual) == wanted


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:200]
