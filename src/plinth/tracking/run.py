"""``start_run`` and the ``Run`` handle: logging that never makes training wait.

``run.log`` validates and appends to an in-memory buffer (a few microseconds). One
flusher thread, shared by every live run of the process, sends each run's buffer in
batches, each with an id, so a retried batch is applied once. The buffer is bounded:
when it is full, ``log`` waits for the flusher (back-pressure) rather than growing
without limit. Whatever is still buffered when the run ends travels with the request
that ends it; everything is also flushed on leaving the ``with`` block and at
interpreter exit.

A new run's create is held back too, checked here first so that bad input still fails
in ``start_run``: the flusher sends it with the run's first batch, within
``flush_interval_seconds`` of the start (its params and tags included, those logged
after the start too), or the end sends it with everything else, so a short run is one
request and one commit. Whatever needs the run on the server first sends it at once:
``flush()``, an artifact, a model, a dataset, a nested run, and any other request the
process makes (``client.get_run(run.id)`` inside the ``with`` block finds the run).

A batch holds at most ``flush_batch_points`` points, and never more than the server
accepts in one (``schemas.MAX_BATCH_POINTS``); one with more series than a batch may
hold is sent as several chunks, each with an id of its own and each applied once.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from plinth.client import HELD, default_client, encode_json
from plinth.errors import Conflict, InvalidInput, PlinthError, ServiceUnavailable
from plinth.tracking import schemas as s
from plinth.tracking.client import split_batch, to_series

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.registry.schemas import ModelVersion
    from plinth.settings import TrackingSettings

log = logging.getLogger(__name__)
_live_runs: set[Run] = set()  # strong: a run dropped without end() is still flushed


LINGER_S = 30.0  # the flusher keeps its tick this long after the last run ends
Point = tuple[str, float, int, float]  # key, value, step, timestamp
Batch = tuple[str, list[Point]]  # its id, its points


class _Flusher:
    """The one thread that sends every live run's batches and heartbeats, each when it
    is due. Its condition guards the state of every ``BatchLogger`` too.

    While runs live, and for ``LINGER_S`` after the last one ended, it looks every
    ``flush_interval_seconds`` on its own, so neither new points nor a new run need
    wake it: a sweep's thousands of short runs cost it no wake-up each (a wake is a
    thread switch, and on a small machine a wait for the GIL)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.loggers: list[BatchLogger] = []
        self.thread: threading.Thread | None = None
        self.wakes_at = math.inf  # when the thread, asleep, looks again
        self.tick = math.inf  # the last live run's flush interval
        self.idle_since = 0.0  # when the last run left

    def register(self, logger: BatchLogger) -> None:
        with self.cond:
            self.loggers.append(logger)
            if self.thread is None or not self.thread.is_alive():  # first run, or a fork
                self.thread = threading.Thread(target=self._loop, name="plinth-flush", daemon=True)
                self.thread.start()
            self.wake(logger.due_at(time.monotonic()))

    def unregister(self, logger: BatchLogger) -> None:
        with self.cond:
            if logger in self.loggers:
                self.loggers.remove(logger)
                self.idle_since = time.monotonic()

    def wake(self, due: float) -> None:
        """New work, due at ``due`` (called under the lock): wake the thread only if
        it would look later than that."""
        if due < self.wakes_at:
            self.cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self.cond:
                now = time.monotonic()
                due, soonest = None, math.inf
                for logger in self.loggers:
                    at = logger.due_at(now)
                    if at <= now and not logger.busy:
                        due = logger
                        break
                    soonest = min(soonest, at)
                if due is None:
                    if self.loggers:  # look again within a tick: new points wake nobody
                        self.tick = min(lg.settings.flush_interval_seconds for lg in self.loggers)
                    if self.loggers or now - self.idle_since < LINGER_S:  # nor a new run
                        soonest = min(soonest, now + self.tick)
                    self.wakes_at = soonest
                    self.cond.wait(None if soonest == math.inf else soonest - now)
                    self.wakes_at = math.inf
                    continue
                due.busy = True
                self.loggers.remove(due)  # to the back: one run's backlog starves no other
                self.loggers.append(due)
            try:
                due.send_due()
            finally:
                with self.cond:
                    due.busy = False
                    self.cond.notify_all()


_flusher = _Flusher()


class BatchLogger:
    """A run's buffer of points, sent by the flusher; see the module docstring.

    A batch keeps its id until the server acknowledges it: when the server cannot be
    reached (or answers 5xx) the same batch is sent again, with back-off, for as long
    as it takes, and is applied once. A batch the server refuses (4xx) is dropped and
    the error raised to the caller at its next ``log``, ``flush`` or ``end``.
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        settings: TrackingSettings,
        create: dict[str, Any] | None = None,
    ) -> None:
        self.client, self.run_id, self.settings = client, run_id, settings
        # the run's create, held back: ``client.create_run``'s arguments, until sent
        self.create = create
        self.born = time.monotonic()
        self.make_now = False  # a request of the client waits for the create
        self.buffer: list[Point] = []
        self.pending: Batch | None = None  # sent, not yet acknowledged
        self.cond = _flusher.cond
        self.closed = False
        self.busy = False  # the flusher is sending for it
        self.error: BaseException | None = None
        self.flush_now = False
        self.oldest = 0.0  # when the oldest buffered point came
        self.last_sent = time.monotonic()
        self.retry_at = 0.0
        self.delay = 0.0
        self.batch_points = min(settings.flush_batch_points, s.MAX_BATCH_POINTS)
        if create is not None:
            HELD[run_id] = self.made
        _flusher.register(self)

    def add(self, points: list[Point]) -> None:
        with self.cond:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise Conflict(
                    f"run {self.run_id} has ended; resume it with "
                    "plinth.start_run(run_id=...) or start a new run to log more"
                )
            while len(self.buffer) >= self.settings.queue_points:  # back-pressure
                self.flush_now = True
                self.cond.notify_all()
                self.cond.wait(0.5)
            if not self.buffer:
                self.oldest = time.monotonic()
                _flusher.wake(self.oldest + self.settings.flush_interval_seconds)
            self.buffer.extend(points)
            if len(self.buffer) >= self.batch_points:
                _flusher.wake(0.0)  # now

    def unsent(self) -> int:
        return len(self.buffer) + (len(self.pending[1]) if self.pending else 0)

    def due_at(self, now: float) -> float:
        """When the flusher should next send for this run (called under the lock)."""
        if self.closed or self.error is not None:
            return math.inf
        if self.pending is not None:
            at = self.retry_at
        elif self.buffer or self.create is not None:
            full = self.flush_now or self.make_now or len(self.buffer) >= self.batch_points
            since = self.born if self.create is not None else self.oldest
            at = now if full else since + self.settings.flush_interval_seconds
        else:
            at = self.last_sent + self.settings.heartbeat_seconds
        return max(at, self.retry_at)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the run and every point are stored; raise if one was refused or
        time ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            self.flush_now = True
            self.cond.notify_all()
            while (self.unsent() or self.create is not None) and self.error is None:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    what = f"{self.unsent()} points of run" if self.unsent() else "run"
                    raise ServiceUnavailable(
                        f"{what} {self.run_id} are not stored yet: the server has not answered"
                    )
                self.cond.wait(min(remaining, 1.0))
            self.flush_now = False
            if self.error is not None:
                raise self.error

    def made(self) -> None:
        """Before any other request of the process: have the held-back create sent now and
        wait for it, within the client's retry window (a refusal is raised at the run's
        next call, not to whoever asked). The flusher's own requests do not wait: it is
        the one that sends it."""
        if threading.current_thread() is _flusher.thread:
            return
        deadline = time.monotonic() + self.client.settings.client.retry_seconds
        with self.cond:
            self.make_now = True
            self.cond.notify_all()
            while self.create is not None and self.error is None and not self.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.cond.wait(min(remaining, 1.0))

    def hold(self, params: Mapping[str, Any], tags: Mapping[str, Any]) -> bool:
        """Add params and tags to the create while it is held back, checked as the server
        will check them; False once it is sent (or being sent)."""
        with self.cond:
            if self.error is not None:
                raise self.error
            if self.create is None or self.busy or self.closed:
                return False
            logged, new = self.create["params"], _as_sent(params)
            for key, value in new.items():
                if key in logged and _encoded(logged[key]) != _encoded(value):
                    raise Conflict(
                        f"params are immutable once logged; {key!r} is already "
                        f"{_encoded(logged[key])}"
                    )
            create = {**self.create, "params": logged | new}
            create["tags"] = create["tags"] | {k: str(v) for k, v in tags.items()}
            self.create = checked_create(create)
            return True

    def _unhold(self) -> None:
        """The create is sent, or given up on (called under the lock)."""
        HELD.pop(self.run_id, None)
        self.make_now = False
        self.cond.notify_all()

    def close(self, timeout: float | None = None) -> tuple[str, list[dict[str, Any]]] | None:
        """Stop: the flusher sends no more for this run. What is left is returned (an id
        and columnar series) for the request that ends the run to carry, or None. A
        backlog (a batch awaiting its retry, more than one batch) is flushed first, by
        the flusher, with its retries, within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.cond:
                while self.busy:
                    self.cond.wait(1.0)
                if self.error is not None or (
                    self.pending is None and len(self.buffer) <= self.batch_points
                ):
                    self.closed = True
                    _flusher.unregister(self)
                    self._unhold()  # a held create is the end's to send now
                    if self.error is not None:
                        raise self.error
                    rest, self.buffer = self.buffer, []
                    break
            try:
                self.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except BaseException:
                with self.cond:  # given up on: the flusher drops it too
                    self.closed = True
                    _flusher.unregister(self)
                    self._unhold()
                raise
        if not rest:
            return None
        batch_id, series = uuid.uuid4().hex, to_series(rest)
        if len(split_batch(series, {}, {})) == 1:
            return batch_id, series
        if self.create is not None:  # over a batch's series: the run first, then chunks
            self.client.create_run(**self.create)
            self.create = None
        self.client.send_batch(self.run_id, batch_id, series)
        return None

    def send_due(self) -> None:
        """Send what is due (a batch, or a heartbeat); called by the flusher only."""
        with self.cond:
            if self.pending is None and self.buffer:
                batch = self.buffer[: self.batch_points]
                del self.buffer[: len(batch)]
                self.pending = (uuid.uuid4().hex, batch)
                self.oldest = time.monotonic()
            pending, create = self.pending, self.create
        try:
            if create is not None:  # the first batch, if any, goes with it
                first = None if pending is None else (pending[0], to_series(pending[1]))
                self.client.create_run(**create, batch=first)
            elif pending is not None:
                self.client.send_batch(self.run_id, pending[0], to_series(pending[1]))
            else:
                self.client.heartbeat(self.run_id)
        except PlinthError as exc:
            if exc.status_code < 500:  # refused: sending it again cannot help
                self._fail(exc)
                return
            if self.delay == 0.0:
                log.warning(
                    "plinth: run %s: %s; %d points wait, will retry",
                    self.run_id,
                    exc.message,
                    self.unsent(),
                )
            self.delay = min(max(2 * self.delay, 0.5), 30.0)
            self.retry_at = time.monotonic() + self.delay
        except BaseException as exc:
            self._fail(exc)
        else:
            with self.cond:
                self.pending = None
                if create is not None:
                    self.create = None
                    self._unhold()
                self.last_sent = time.monotonic()
                self.delay = self.retry_at = 0.0
                if not self.buffer:
                    self.flush_now = False
                self.cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        log.error("plinth: could not log to run %s: %s", self.run_id, exc)
        with self.cond:
            self.error = exc
            self.pending = None
            self._unhold()  # nobody waits for a create that was refused


class Run:
    """A live run. Use as a context manager, or call ``end()``."""

    def __init__(
        self,
        client: Client,
        info: s.Run,
        steps: Mapping[str, int] | None = None,
        *,
        create: dict[str, Any] | None = None,
    ) -> None:
        """``create``: the run is not on the server yet; these are ``client.create_run``'s
        arguments, sent with its first batch or its end (see the module docstring)."""
        self.client = client
        self.info = info
        self.id = info.id
        # the next automatic step of each metric: after its latest, in a resumed run
        self._next_step = {key: step + 1 for key, step in (steps or {}).items()}
        self._known_keys: set[str] = set()
        self._ended = False
        self._logger = BatchLogger(client, info.id, client.settings.tracking, create)
        self._sampler: Any = None
        if client.settings.tracking.system_metrics_seconds > 0:
            from plinth.tracking.system_metrics import SystemSampler

            self._sampler = SystemSampler(self, client.settings.tracking.system_metrics_seconds)
        _live_runs.add(self)
        _watch_for_crashes()

    def __repr__(self) -> str:
        return f"<Run {self.id} project={self.info.project!r} name={self.info.name!r}>"

    def log(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        """Record metric values; returns at once. Without ``step``, each key counts
        its own steps: 0, 1, 2, … (an explicit step moves that key's count on)."""
        ts = time.time() if timestamp is None else timestamp
        known, next_step = self._known_keys, self._next_step
        points = []
        for key, value in metrics.items():  # the hot path: a few microseconds a call
            if key not in known:
                s.check_key(key)
                known.add(key)
            kind = value.__class__
            number = float(value) if kind is float or kind is int else _metric_value(key, value)
            at = next_step.get(key, 0) if step is None else step
            next_step[key] = at + 1
            points.append((key, number, at, ts))
        self._logger.add(points)

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        """``log({key: value}, step, timestamp)``, as MLflow spells it."""
        self.log({key: value}, step, timestamp)

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params now; a param already logged with another value is a Conflict."""
        if not self._logger.hold(params, {}):
            self.client.log_batch(self.id, params=dict(params))

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Record tags now (as text); a tag logged again takes the new value."""
        if not self._logger.hold({}, tags):
            self.client.log_batch(self.id, tags={k: str(v) for k, v in tags.items()})

    def log_artifact(
        self, local_path: str, name: str | None = None, *, progress: bool | None = None
    ) -> list[s.Artifact]:
        """Upload a file, or a directory under its own name (or ``name``)."""
        self._made()
        return self.client.log_artifact(self.id, local_path, name, progress=progress)

    def log_artifacts(
        self, local_dir: str, name: str | None = None, *, progress: bool | None = None
    ) -> list[s.Artifact]:
        """Upload the files a directory holds, under ``name/`` or at the top."""
        self._made()
        return self.client.log_artifacts(self.id, local_dir, name, progress=progress)

    def log_model(
        self, model: Any, name: str, *, input_example: Any = None, **options: Any
    ) -> ModelVersion:
        """Save the model in its flavor's safe format, log its files as artifacts of
        this run and register them as the next version of ``name`` (see
        ``Client.log_model``)."""
        self._made()
        version: ModelVersion = self.client.log_model(
            self.id, model, name, input_example=input_example, **options
        )
        return version

    def use_dataset(self, ref: str, *, project: str | None = None) -> Any:
        """Record that this run read a dataset version (``churn@3``; ``churn``: the
        newest), in this run's project unless ``project`` says another; returns it."""
        self._made()
        return self.client.use_dataset(ref, run_id=self.id, project=project or self.info.project)

    def flush(self) -> None:
        """Block until the run and every point logged so far are committed on the
        server."""
        self._logger.flush()

    def _made(self) -> None:
        """Have the run created on the server now if its create is still held back;
        raise its refusal."""
        if self._logger.create is not None:
            self._logger.flush()

    def end(self, status: str = "finished") -> None:
        """Send what is left and end the run, in one request when what is left fits."""
        if self._ended:
            return
        self._ended = True
        if self._sampler is not None:
            self._sampler.stop()
        _live_runs.discard(self)
        logger = self._logger
        try:
            last = logger.close(self.client.settings.tracking.flush_timeout_seconds)
        except BaseException:
            if logger.create is None:  # made: end it (else it never was, nor will be)
                self.info = self.client.end_run(self.id, status)
            raise
        if logger.create is not None:  # its whole life in one request
            create, logger.create = logger.create, None
            ended = {"status": status, "end_time": time.time()}
            try:
                self.info = self.client.create_run(**create, batch=last, **ended)
            except PlinthError as exc:
                if last is None or exc.status_code >= 500:
                    raise
                self.info = self.client.create_run(**create, **ended)  # the batch was refused
                raise
            return
        try:
            self.info = self.client.end_run(self.id, status, last_batch=last)
        except PlinthError as exc:
            if last is None or exc.status_code >= 500:
                raise
            self.info = self.client.end_run(self.id, status)  # the batch was refused: end
            raise

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end("finished")
            return
        try:
            self.end("killed" if issubclass(exc_type, KeyboardInterrupt) else "failed")
        except Exception as end_error:  # the user's exception matters more: let it through
            log.error("plinth: could not end run %s: %s", self.id, end_error)


def _metric_value(key: str, value: Any) -> float:
    if not isinstance(value, str | bytes):  # text that spells a number is still text
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise InvalidInput(f"metric {key!r} must be a number; got {type(value).__name__} {value!r:.80}")


def start_run(
    project: str | None = None,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    *,
    run_id: str | None = None,
    parent: Run | s.Run | str | None = None,
    client: Client | None = None,
) -> Run:
    """Create a run and return its live handle (use it in a ``with`` block).

    ``run_id`` continues that run instead, whatever state it ended in, as MLflow's
    ``start_run(run_id=...)`` does: it is running again, ``params`` and ``tags`` are
    added to it and automatic steps go on after each metric's latest step.
    ``parent`` (a ``Run``, its ``info`` or its id) nests the new run under another
    run of the same project; ``project`` then defaults to the parent's.
    Without ``run_id`` or ``parent``, the run named by ``PLINTH_RUN_ID`` (set in a
    Plinth job: the run linked to it) is continued when there is one.
    """
    if client is None:
        client = default_client()
    if run_id is None and parent is None:
        run_id = getattr(getattr(client, "settings", None), "run_id", None)
    if run_id is not None:
        return _resume(client, run_id, project, name, params, tags, parent)
    parent_info = _run_info(client, parent)
    project = project or (parent_info.project if parent_info else None)
    if not project:
        raise InvalidInput("start_run needs a project (or run_id= to resume a run)")
    run_id = uuid.uuid4().hex
    create = checked_create(
        {
            "id": run_id,
            "project": project,
            "name": name,
            "params": dict(params or {}),
            "tags": {k: str(v) for k, v in (tags or {}).items()},
            "parent_id": parent_info.id if parent_info else None,
            "start_time": time.time(),
        }
    )
    info = s.Run(
        id=run_id,
        project=project,
        name=name or s.default_run_name(run_id),
        status="running",
        start_time=create["start_time"],
        end_time=None,
        params=create["params"],
        tags=create["tags"],
        parent_id=create["parent_id"],
    )
    return Run(client, info, create=create)


def checked_create(create: dict[str, Any]) -> dict[str, Any]:
    """A create to hold back, as the server will read it (through JSON), refused here as
    the server would refuse it: bad input fails in ``start_run`` or ``log_params``, not
    at the run's end."""
    sent = _as_sent(create)
    try:
        s.RunCreate.model_validate(sent)
    except ValidationError as exc:
        from plinth.api.errors import describe

        raise InvalidInput(describe(exc.errors())) from None
    return sent


def _as_sent(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as the server gets them: numpy scalars plain, tuples lists."""
    sent: dict[str, Any] = json.loads(encode_json(dict(values)))
    return sent


def _encoded(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # as the server compares params


def _run_info(client: Client, run: Run | s.Run | str | None) -> s.Run | None:
    if run is None or isinstance(run, s.Run):
        return run
    if isinstance(run, Run):
        run._made()  # a nested run's create names it
        return run.info
    return client.get_run(run)


def _resume(
    client: Client,
    run_id: str,
    project: str | None,
    name: str | None,
    params: Mapping[str, Any] | None,
    tags: Mapping[str, str] | None,
    parent: Run | s.Run | str | None,
) -> Run:
    info = client.get_run(run_id)  # also takes a unique prefix of the id
    given = {"project": project, "name": name}
    for field, value in given.items():
        if value is not None and value != getattr(info, field):
            raise InvalidInput(
                f"run {info.id} has {field} {getattr(info, field)!r}, not {value!r}; "
                "a resumed run keeps its own"
            )
    parent_info = _run_info(client, parent)
    if parent_info is not None and parent_info.id != info.parent_id:
        raise InvalidInput(f"run {info.id} is not nested in {parent_info.id}; its parent stays")
    resumed = client.resume_run(info.id)
    if params or tags:
        client.log_batch(info.id, params=dict(params or {}), tags=dict(tags or {}))
    return Run(client, resumed, resumed.steps)


_crashed = False
_previous_hook: Any = None


def _excepthook(*args: Any) -> None:
    global _crashed
    _crashed = True
    _previous_hook(*args)


def _watch_for_crashes() -> None:
    """Learn whether the program dies of an exception, to end its runs as failed.
    Installed at the first run, not on import: ``import plinth`` changes nothing."""
    global _previous_hook
    if _previous_hook is None:
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook


@atexit.register
def _end_live_runs() -> None:
    """Flush and end runs the program left open: failed if it died of an exception."""
    for run in list(_live_runs):
        try:
            run.end("failed" if _crashed else "finished")
        except Exception as exc:
            log.error("plinth: could not end run %s at exit: %s", run.id, exc)
