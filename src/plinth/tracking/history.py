"""A metric's history as columns: its wire forms, its SDK shapes, and its thinning.

A history is three columns of one length, ordered by step, then timestamp: ``steps``
(64-bit integers), ``timestamps`` (seconds since the epoch) and ``values`` (64-bit
floats; NaN and ±infinity are values like any other). One object per point would cost
microseconds each to encode, send and parse; columns cost nanoseconds.

The route answers in one of two forms, chosen by the request's ``Accept`` header:

- ``application/json`` (the default, for curl): ``{"run_id", "key", "steps",
  "timestamps", "values"}``, three arrays; non-finite values are the strings
  ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, so any strict JSON parser reads it.
- ``application/vnd.plinth.metric-history`` (what the SDK asks for): a 16-byte header,
  the ASCII magic ``PLMH``, a version (uint32, 1) and the count ``n`` (uint64), then the
  ``n`` steps (int64), the ``n`` timestamps (float64) and the ``n`` values (float64, NaN
  and infinities as IEEE 754 has them), every number little-endian: ``16 + 24 n`` bytes.

``downsample`` thins a long history on the server for ``max_points``. numpy is imported
only where a history is computed on or shaped for numpy: ``import plinth`` stays fast,
and the SDK's default list needs only the standard library.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, SupportsIndex, overload

from plinth.errors import InvalidInput, PlinthError, Unprocessable, require

if TYPE_CHECKING:
    import numpy as np

MEDIA_TYPE = "application/vnd.plinth.metric-history"
MAX_POINTS = 100_000  # the largest max_points: far more than any chart draws
_MAGIC = b"PLMH"
_VERSION = 1
_HEADER = struct.Struct("<4sIQ")
FIELDS = [("step", "<i8"), ("timestamp", "<f8"), ("value", "<f8")]  # a numpy dtype
Shape = Literal["list", "numpy", "pandas"]
SHAPES: tuple[Shape, ...] = ("list", "numpy", "pandas")


@dataclass(frozen=True)
class Columns:
    """The three columns; numpy arrays on the server, ``array.array`` in the SDK."""

    steps: Any
    timestamps: Any
    values: Any

    def __len__(self) -> int:
        return len(self.steps)


# the SDK's shapes ---------------------------------------------------------------------


class HistoryPoint(NamedTuple):
    step: int
    timestamp: float
    value: float


class HistoryPoints(Sequence[HistoryPoint]):
    """``metric_history``'s default answer: a sequence of ``HistoryPoint(step,
    timestamp, value)``, made one at a time as they are read, over the columns it keeps
    as ``steps``, ``timestamps`` and ``values``. It equals a list of the same points."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns

    @property
    def steps(self) -> Sequence[int]:
        return self.columns.steps

    @property
    def timestamps(self) -> Sequence[float]:
        return self.columns.timestamps

    @property
    def values(self) -> Sequence[float]:
        return self.columns.values

    def __len__(self) -> int:
        return len(self.columns)

    @overload
    def __getitem__(self, index: SupportsIndex) -> HistoryPoint: ...
    @overload
    def __getitem__(self, index: slice) -> list[HistoryPoint]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> HistoryPoint | list[HistoryPoint]:
        c = self.columns
        if isinstance(index, slice):
            return list(map(HistoryPoint, c.steps[index], c.timestamps[index], c.values[index]))
        return HistoryPoint(c.steps[index], c.timestamps[index], c.values[index])

    def __iter__(self) -> Iterator[HistoryPoint]:
        c = self.columns
        return map(HistoryPoint, c.steps, c.timestamps, c.values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HistoryPoints | list | tuple):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(tuple(p)) for p in self[:3])
        more = ", …" if len(self) > 3 else ""
        return f"HistoryPoints({len(self)} points: [{shown}{more}])"


def shaped(columns: Columns, shape: str) -> Any:
    """The history as the SDK hands it over: ``HistoryPoints``, a numpy structured
    array with fields ``step``, ``timestamp`` and ``value``, or a pandas DataFrame
    with those columns."""
    if shape == "list":
        return HistoryPoints(columns)
    if shape == "numpy":
        return _structured(columns)
    pd = require("pandas", "pandas")
    return pd.DataFrame({name: _array(columns, name) for name, _ in FIELDS}, copy=True)


def check_shape(shape: str) -> None:
    if shape not in SHAPES:
        raise InvalidInput(f"as_ must be one of {', '.join(SHAPES)}; got {shape!r}")


def _array(columns: Columns, name: str) -> np.ndarray:
    import numpy as np

    column = getattr(columns, f"{name}s")
    dtype = np.int64 if name == "step" else np.float64
    if isinstance(column, array):  # as the SDK decoded it: no copy
        return np.frombuffer(column, dtype=dtype)
    return np.asarray(column, dtype=dtype)


def _structured(columns: Columns) -> np.ndarray:
    import numpy as np

    out = np.empty(len(columns), dtype=FIELDS)
    for name, _ in FIELDS:
        out[name] = _array(columns, name)
    return out


# wire forms ---------------------------------------------------------------------------


def wants_binary(accept: str) -> bool:
    """Whether an ``Accept`` header names the binary form and weighs it no less than
    JSON (``q=0`` refuses a form); JSON otherwise."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (item.strip() for item in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[media.lower()] = max(q, weights.get(media.lower(), 0.0))
    json = max(weights.get(m, 0.0) for m in ("application/json", "application/*", "*/*"))
    binary = weights.get(MEDIA_TYPE, 0.0)
    return binary > 0 and binary >= json


def to_binary(columns: Columns) -> bytes:
    import numpy as np

    n = len(columns)
    return b"".join(
        (
            _HEADER.pack(_MAGIC, _VERSION, n),
            np.ascontiguousarray(columns.steps, dtype="<i8").tobytes(),
            np.ascontiguousarray(columns.timestamps, dtype="<f8").tobytes(),
            np.ascontiguousarray(columns.values, dtype="<f8").tobytes(),
        )
    )


def from_binary(body: bytes) -> Columns:
    """Columns of ``array.array`` (no numpy needed); a malformed body is an error."""
    if len(body) < _HEADER.size:
        raise PlinthError(f"not a metric history: {len(body)} bytes")
    magic, version, n = _HEADER.unpack_from(body)
    if magic != _MAGIC or version != _VERSION or len(body) != _HEADER.size + 24 * n:
        raise PlinthError(
            f"not a version-{_VERSION} metric history ({len(body)} bytes, header {magic!r} "
            f"v{version} n={n})"
        )
    view = memoryview(body)
    columns = []
    for i, code in enumerate("qdd"):
        start = _HEADER.size + 8 * n * i
        column = array(code)
        column.frombytes(view[start : start + 8 * n])
        if sys.byteorder == "big":
            column.byteswap()
        columns.append(column)
    return Columns(*columns)


def to_json(run_id: str, key: str, columns: Columns) -> bytes:
    """The JSON form; non-finite values as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    from pydantic_core import to_json as dumps

    body = {
        "run_id": run_id,
        "key": key,
        "steps": columns.steps.tolist(),
        "timestamps": columns.timestamps.tolist(),
        "values": columns.values.tolist(),
    }
    return dumps(body, inf_nan_mode="strings")


# the server's side --------------------------------------------------------------------


def pack(kind: str, numbers: Iterable[Any]) -> bytes:
    """Numbers as a chunk column stores them: little-endian ``q`` (int64) or ``d``
    (float64) (``tables.metric_chunks``)."""
    packed = array(kind, numbers)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def from_chunks(chunks: Iterable[tuple[bytes, bytes, bytes]]) -> Columns:
    """Chunks ``(steps, timestamps, values)``, in the order they were written, as
    columns ordered by step, then timestamp (points logged alike keep their order)."""
    import numpy as np

    parts = list(chunks)
    steps = np.frombuffer(b"".join(p[0] for p in parts), dtype="<i8")
    stamps = np.frombuffer(b"".join(p[1] for p in parts), dtype="<f8")
    values = np.frombuffer(b"".join(p[2] for p in parts), dtype="<f8")
    # Batches mostly arrive in step order: sort only what is out of it.
    later = steps[1:] > steps[:-1]
    tied = steps[1:] == steps[:-1]
    if not np.all(later | (tied & (stamps[1:] >= stamps[:-1]))):
        order = np.lexsort((stamps, steps))  # stable: ties keep the order they came in
        steps, stamps, values = steps[order], stamps[order], values[order]
    return Columns(steps, stamps, values)


def check_max_points(max_points: int) -> None:
    if not 2 <= max_points <= MAX_POINTS:
        raise Unprocessable(f"max_points must be from 2 to {MAX_POINTS:,}; got {max_points}")


def downsample(columns: Columns, max_points: int) -> Columns:
    """At most ``max_points`` points that draw as the whole history does, plus its
    non-finite markers.

    Kept: the first and last points; then, with the points between them cut into
    ``(max_points - 2) // 3`` buckets of consecutive points, each bucket's lowest and
    highest finite value and its largest-triangle point (LTTB: the point making the
    largest triangle with the previous bucket's mean and the next bucket's mean); and the
    first and last point of every stretch of consecutive NaN, +inf or -inf values, so a
    chart shows where a metric diverged and for how long. So the answer has at most
    ``max_points`` points plus two per such stretch. A history of at most
    ``max_points`` points is returned whole.
    """
    import numpy as np

    check_max_points(max_points)
    n = len(columns)
    if n <= max_points:
        return columns
    values = np.asarray(columns.values, dtype=np.float64)
    keep = [np.array([0, n - 1]), _marker_points(values)]
    buckets = (max_points - 2) // 3
    if buckets:
        keep += _bucket_points(np.asarray(columns.steps, dtype=np.float64), values, buckets)
    index = np.unique(np.concatenate(keep))
    return Columns(
        np.asarray(columns.steps)[index],
        np.asarray(columns.timestamps)[index],
        values[index],
    )


def _marker_points(values: np.ndarray) -> np.ndarray:
    """The first and last index of each stretch of one kind of non-finite value."""
    import numpy as np

    kind = np.where(np.isnan(values), 1, np.where(np.isinf(values), np.sign(values) + 3, 0))
    edge = np.flatnonzero(np.diff(kind) != 0)  # a kind ends at edge, the next starts after
    ends = np.concatenate([edge, [len(values) - 1]])
    starts = np.concatenate([[0], edge + 1])
    marked = kind[starts] != 0
    return np.concatenate([starts[marked], ends[marked]])


def _bucket_points(x: np.ndarray, y: np.ndarray, buckets: int) -> list[np.ndarray]:
    """Each bucket's min, max and LTTB point among the points strictly inside."""
    import numpy as np

    inner = len(y) - 2
    size = math.ceil(inner / buckets)
    rows = math.ceil(inner / size)  # <= buckets; the last row may be partly padding
    pad = rows * size - inner

    def grid(a: np.ndarray, fill: Any) -> np.ndarray:
        return np.concatenate([a[1:-1], np.full(pad, fill, a.dtype)]).reshape(rows, size)

    finite = grid(np.isfinite(y), False)
    xs, ys = grid(x, 0.0), np.where(finite, grid(y, 0.0), 0.0)
    has = finite.any(axis=1)
    low = np.where(finite, ys, np.inf).argmin(axis=1)
    high = np.where(finite, ys, -np.inf).argmax(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        count = finite.sum(axis=1)
        mean_x = np.where(finite, xs, 0.0).sum(axis=1) / count
        mean_y = ys.sum(axis=1) / count
        ax = np.concatenate([[x[0]], mean_x[:-1]])[:, None]
        ay = np.concatenate([[y[0]], mean_y[:-1]])[:, None]
        cx = np.concatenate([mean_x[1:], [x[-1]]])[:, None]
        cy = np.concatenate([mean_y[1:], [y[-1]]])[:, None]
        area = np.abs((ax - cx) * (ys - ay) - (ax - xs) * (cy - ay))
    area = np.where(finite & np.isfinite(area), area, -1.0)
    best = area.argmax(axis=1)
    drawn = area[np.arange(rows), best] >= 0
    first = 1 + np.arange(rows) * size  # the index of each bucket's first point
    return [first[has] + low[has], first[has] + high[has], first[drawn] + best[drawn]]
