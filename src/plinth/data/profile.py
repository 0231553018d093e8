"""A tabular file's profile, in one streaming pass and bounded memory: per column its
count, nulls, min and max; for numbers mean, standard deviation, quantiles and a
histogram; for categories (strings, booleans, dictionaries) the most frequent values.
It is what the data looked like: the reference that drift is measured against.

Count, nulls, min, max, mean and deviation are exact (Chan's parallel update, batch by
batch). Quantiles and the histogram come from a uniform sample of ``SAMPLE`` rows
(bottom-k by random key, so the sample of a stream is as uniform as of a list); they
are exact for files of fewer rows. Top values are exact while a column has at most
``TRACKED`` distinct values, and approximate above (the rarest are dropped as the
stream goes on; ``distinct_over`` says so).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from plinth.data.schemas import MAX_PROFILED_COLUMNS as MAX_COLUMNS
from plinth.data.schemas import ColumnProfile, Histogram, Profile, TopValue

SAMPLE = 20_000
TRACKED = 10_000
TOP = 10
BINS = 20
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class Profiler:
    """A profile built batch by batch, for a reader that feeds others the same batches."""

    def __init__(self, schema: Any, seed: int = 0) -> None:
        self.schema = schema
        self.columns = [_tracker(field) for field in list(schema)[:MAX_COLUMNS]]
        self.rng = np.random.default_rng(seed)
        self.rows = 0

    def add(self, batch: Any) -> None:
        keys = self.rng.random(batch.num_rows)
        for i, tracker in enumerate(self.columns):
            tracker.add(batch.column(i), keys)
        self.rows += batch.num_rows

    def result(self) -> Profile:
        return Profile(
            rows=self.rows,
            sampled=min(self.rows, SAMPLE),
            columns=[t.result() for t in self.columns],
            columns_left_out=max(0, len(self.schema) - MAX_COLUMNS),
        )


def _tracker(field: Any) -> _Column:
    import pyarrow as pa

    t = field.type
    if pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return _Categorical(field)
    if pa.types.is_boolean(t):
        return _Categorical(field)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return _Numeric(field)
    if pa.types.is_temporal(t):
        return _Temporal(field)
    return _Column(field)


class _Column:
    kind = "other"

    def __init__(self, field: Any) -> None:
        self.name = field.name
        self.type = str(field.type)
        self.count = 0
        self.nulls = 0

    def add(self, column: Any, keys: Any) -> None:
        self.nulls += column.null_count
        self.count += len(column) - column.null_count

    def result(self) -> ColumnProfile:
        return ColumnProfile(
            name=self.name, type=self.type, kind=self.kind, count=self.count, nulls=self.nulls
        )


class _Numeric(_Column):
    kind = "numeric"

    def __init__(self, field: Any) -> None:
        super().__init__(field)
        self.min = np.inf
        self.max = -np.inf
        self.mean = 0.0
        self.m2 = 0.0
        self.keys = np.empty(0)
        self.values = np.empty(0)
        self._seen = 0  # finite values

    def add(self, column: Any, keys: Any) -> None:
        super().add(column, keys)
        import pyarrow.compute as pc

        valid = np.asarray(pc.is_valid(column)) if column.null_count else None
        # unsafe: an int64 past 2^53 or a wide decimal is a float near it, not an error
        cast = column.cast("float64", safe=False).fill_null(0.0)
        values = np.asarray(cast) if len(column) else np.empty(0)
        if valid is not None:
            values, keys = values[valid], keys[valid]
        finite = np.isfinite(values)
        if not finite.all():
            values, keys = values[finite], keys[finite]
        n = len(values)
        if n == 0:
            return
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        with np.errstate(over="ignore", invalid="ignore"):  # near ±1.7e308: left out after
            mean, m2 = float(values.mean()), float(((values - values.mean()) ** 2).sum())
        total = self._seen + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self._seen * n / total
        self._seen = total
        self.keys, self.values = _bottom(
            np.concatenate([self.keys, keys]), np.concatenate([self.values, values])
        )

    def result(self) -> ColumnProfile:
        out = super().result()
        if self._seen == 0:
            return out
        sample = np.sort(self.values)
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                counts, edges = np.histogram(sample, bins=BINS, range=(self.min, self.max))
            except ValueError:  # a span a double cannot cut in BINS (1e17 alone, ±1.7e308)
                counts, edges = np.array([len(sample)]), np.array([self.min, self.max])
            if not np.isfinite(edges).all():
                counts, edges = np.array([len(sample)]), np.array([self.min, self.max])
            quantiles = {f"p{round(q * 100)}": float(np.quantile(sample, q)) for q in QUANTILES}
        scale = self._seen / len(sample)
        return out.model_copy(
            update={  # what a double overflows on (values near ±1.7e308) is left out
                "min": self.min,
                "max": self.max,
                "mean": _finite(self.mean),
                "std": _finite(float(np.sqrt(self.m2 / self._seen))),
                "quantiles": quantiles if all(map(math.isfinite, quantiles.values())) else {},
                "histogram": Histogram(
                    edges=[float(e) for e in edges],
                    counts=[float(c * scale) for c in counts],
                ),
            }
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Temporal(_Column):
    kind = "temporal"

    def __init__(self, field: Any) -> None:
        super().__init__(field)
        self.lo: Any = None
        self.hi: Any = None

    def add(self, column: Any, keys: Any) -> None:
        super().add(column, keys)
        import pyarrow.compute as pc

        if len(column) == column.null_count:
            return
        found = pc.min_max(column)
        try:
            lo, hi = found["min"].as_py(), found["max"].as_py()
        except (OverflowError, ValueError):  # past what Python's datetime holds (year 9999)
            return
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)

    def result(self) -> ColumnProfile:
        out = super().result()
        if self.lo is None:
            return out
        return out.model_copy(update={"min": _text(self.lo), "max": _text(self.hi)})


class _Categorical(_Column):
    kind = "categorical"

    def __init__(self, field: Any) -> None:
        super().__init__(field)
        self.counts: dict[str, int] = {}
        self.over = False

    def add(self, column: Any, keys: Any) -> None:
        super().add(column, keys)
        import pyarrow.compute as pc

        if len(column) == column.null_count:
            return
        found = pc.value_counts(column.drop_null())
        for value, n in zip(
            found.field("values").to_pylist(), found.field("counts").to_pylist(), strict=True
        ):
            key = _text(value)
            self.counts[key] = self.counts.get(key, 0) + n
        if len(self.counts) > TRACKED:  # keep the most frequent half: bounded memory
            self.over = True
            kept = sorted(self.counts.items(), key=lambda kv: -kv[1])[: TRACKED // 2]
            self.counts = dict(kept)

    def result(self) -> ColumnProfile:
        out = super().result()
        top = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
        return out.model_copy(
            update={
                "distinct": None if self.over else len(self.counts),
                "distinct_over": TRACKED if self.over else None,
                "top": [TopValue(value=v, count=n) for v, n in top],
            }
        )


def _bottom(keys: Any, values: Any) -> tuple[Any, Any]:
    """The ``SAMPLE`` pairs with the smallest keys: a uniform sample of all seen."""
    if len(keys) <= SAMPLE:
        return keys, values
    kept = np.argpartition(keys, SAMPLE)[:SAMPLE]
    return keys[kept], values[kept]


def _text(value: Any) -> str:
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:200]
