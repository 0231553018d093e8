"""Sweeps: hyperparameter search where every trial is a Plinth job and a tracked run.

The driver runs where the sweep was started (``plinth sweep`` or ``run_sweep``), not on
the server: it asks Optuna (TPE) for params, submits a job per trial with the params
appended to its command (``sweep_space.trial_argv``), keeps ``parallel`` trials going,
and polls the metric each running trial logs (its run's history by step) to report
it to Optuna's pruner. A trial the pruner stops is cancelled (SIGTERM, then SIGKILL)
and recorded as pruned; its slot frees once its job has ended, so no more than
``parallel`` jobs ever run at once.

A trial's value is its metric's **last** logged value (at the highest step) when
``objective="last"`` (the default: what the model ends up as), or the best of its
history by ``direction`` when ``objective="best"`` (as with early stopping on the best
checkpoint). A trial whose job fails, or that logged no finite value, is failed.

The working directory (``workdir``) is snapshotted once, when the sweep starts: every
trial runs the same files, however they change meanwhile, and they are sent once.

Each trial's run is tagged ``plinth.sweep`` (the sweep's name) and ``plinth.trial``
(its number) and carries its params, so ``plinth runs list --filter`` finds it; one
more run, named after the sweep and tagged ``plinth.sweep.summary``, records the
sweep's settings, space and best trial. An interrupt (Ctrl-C) or an error cancels the trials
still running before it propagates.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from plinth.compute.sweep_space import Space, load_space, optuna, trial_argv
from plinth.errors import InvalidInput, PlinthError

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.compute import schemas as cs
    from plinth.tracking.run import Run

Direction = Literal["minimize", "maximize"]
Pruner = Literal["median", "asha", "none"]
Objective = Literal["last", "best"]
TrialState = Literal["running", "complete", "pruned", "failed"]
SWEEP_TAG, TRIAL_TAG, SUMMARY_TAG = "plinth.sweep", "plinth.trial", "plinth.sweep.summary"
MAX_TRIALS = 10_000


class SweepTrial(BaseModel):
    number: int
    params: dict[str, Any]
    state: TrialState = "running"
    value: float | None = None
    step: int | None = Field(None, description="the latest step reported to the pruner")
    job_id: str
    run_id: str | None
    reason: str | None = None


class SweepResult(BaseModel):
    name: str
    project: str
    metric: str
    direction: Direction
    trials: list[SweepTrial]
    best: SweepTrial | None = Field(None, description="the completed trial of best value")
    run_id: str | None = Field(None, description="the run that records the sweep")

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)


class _Live:
    """A trial the driver still watches: its Optuna handle, job and what was reported."""

    def __init__(self, trial: Any, record: SweepTrial) -> None:
        self.trial, self.record = trial, record
        self.stopping = False  # pruned, cancelled: waiting for its job to end


class Sweep:
    """One sweep's state; ``run_sweep`` builds it and calls ``run``."""

    def __init__(
        self,
        client: Client,
        project: str,
        argv: Sequence[str],
        space: Space,
        *,
        trials: int,
        parallel: int,
        metric: str,
        direction: Direction,
        pruner: Pruner,
        objective: Objective,
        seed: int | None,
        name: str,
        poll: float,
        enqueue: Sequence[Mapping[str, Any]],
        submit: Mapping[str, Any],
        on_change: Callable[[SweepResult], None] | None,
    ) -> None:
        self.client, self.project, self.argv, self.space = client, project, list(argv), space
        self.trials, self.parallel, self.poll = trials, parallel, poll
        self.metric, self.direction, self.objective = metric, direction, objective
        self.submit, self.on_change = dict(submit), on_change
        self.result = SweepResult(
            name=name, project=project, metric=metric, direction=direction, trials=[]
        )
        self.settings = {"pruner": pruner, "seed": seed}
        self.study = _study(direction, pruner, seed, trials)
        for params in enqueue:
            self.study.enqueue_trial(dict(params))
        self.distributions = space.distributions()
        self.live: list[_Live] = []
        self.run: Run | None = None

    def execute(self) -> SweepResult:
        workdir = self.submit.pop("workdir", None)
        if workdir is not None:  # once: every trial runs the same files, sent once
            self.submit["snapshot"] = self.client.upload_snapshot(self.project, workdir)
        self.run = self._start_summary()
        try:
            while self._step():
                time.sleep(self.poll)
        except BaseException:
            self._cancel_all()
            self._end_summary("killed")
            raise
        self._end_summary("finished")
        return self.result

    def _step(self) -> bool:
        """Start trials up to ``parallel``, look at each live one; False when done."""
        while len(self.live) < self.parallel and len(self.result.trials) < self.trials:
            self._start_trial()
            self._changed()
        for live in list(self.live):
            self._watch(live)
        return bool(self.live) or len(self.result.trials) < self.trials

    def _start_trial(self) -> None:
        trial = self.study.ask(self.distributions)
        params = dict(trial.params)
        argv = trial_argv(self.argv, self.space, params)
        try:
            job = self.client.submit_job(self.project, argv, **self.submit)
        except BaseException:
            self.study.tell(trial, state=optuna().trial.TrialState.FAIL)
            raise
        record = SweepTrial(number=trial.number, params=params, job_id=job.id, run_id=job.run_id)
        self.result.trials.append(record)
        self.live.append(_Live(trial, record))  # from here an error cancels its job
        if job.run_id:
            tags = {SWEEP_TAG: self.result.name, TRIAL_TAG: str(trial.number)}
            self.client.log_batch(job.run_id, params=params, tags=tags)

    def _watch(self, live: _Live) -> None:
        job = self.client.get_job(self.project, live.record.job_id)
        if live.stopping:
            if job.ended:
                self.live.remove(live)
            return
        if job.ended:
            self._finish(live, job)
            self.live.remove(live)
            self._changed()
        elif job.status == "running" and self._prune(live):
            self.client.cancel_job(self.project, job.id)
            live.stopping = True
            self._changed()

    def _report(self, live: _Live) -> list[tuple[int, float]]:
        """Report to Optuna the steps logged since the last look; all the points."""
        points = self._history(live.record)
        for step, value in points:
            if live.record.step is None or step > live.record.step:
                live.trial.report(value, step)
                live.record.step = step
        return points

    def _prune(self, live: _Live) -> bool:
        """Whether the pruner stops the trial now; if so it is told so.

        Asked at every look, not only when new steps came: a trial that logged a bad
        value and went quiet is judged again as other trials complete."""
        points = self._report(live)
        if not points or not live.trial.should_prune():
            return False
        record = live.record
        record.state, record.value = "pruned", points[-1][1]
        record.reason = f"pruned at step {points[-1][0]}"
        self.study.tell(live.trial, state=optuna().trial.TrialState.PRUNED)
        return True

    def _history(self, record: SweepTrial) -> list[tuple[int, float]]:
        """The metric by step (the latest value of a step logged twice), finite only."""
        if not record.run_id:
            return []
        by_step: dict[int, float] = {}
        for point in self.client.metric_history(record.run_id, self.metric):
            by_step[point.step] = point.value
        return sorted((k, v) for k, v in by_step.items() if math.isfinite(v))

    def _finish(self, live: _Live, job: cs.Job) -> None:
        record, states = live.record, optuna().trial.TrialState
        points = self._report(live)  # a quick trial logged steps no look saw
        if points:
            # the pruner records what it judges by (ASHA's rungs) as it is asked;
            # its answer does not matter for a trial that has ended
            live.trial.should_prune()
        value = self._value(points) if job.status == "succeeded" else None
        if value is None:
            record.state = "failed"
            record.reason = (
                f"logged no finite {self.metric}"
                if job.status == "succeeded"
                else f"job {job.status}" + (f": {job.reason}" if job.reason else "")
            )
            self.study.tell(live.trial, state=states.FAIL)
            return
        record.state, record.value = "complete", value
        self.study.tell(live.trial, value)
        self._update_best(record)

    def _value(self, points: list[tuple[int, float]]) -> float | None:
        if not points:
            return None
        values = [v for _, v in points]
        if self.objective == "last":
            return values[-1]
        return min(values) if self.direction == "minimize" else max(values)

    def _update_best(self, record: SweepTrial) -> None:
        best = self.result.best
        assert record.value is not None
        if best is None or best.value is None or _better(record.value, best.value, self.direction):
            self.result.best = record

    def _cancel_all(self) -> None:
        """Stop every trial still running (an interrupt, an error): none is left behind."""
        for live in self.live:
            if live.stopping:
                continue
            # it may have ended meanwhile, or the server be gone: its lease then ends it
            with contextlib.suppress(PlinthError):
                self.client.cancel_job(self.project, live.record.job_id)
            live.record.state, live.record.reason = "failed", "sweep interrupted"
            self.study.tell(live.trial, state=optuna().trial.TrialState.FAIL)
        self.live.clear()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.result)

    def _start_summary(self) -> Run:
        from plinth.tracking.run import Run

        params = {
            "metric": self.metric,
            "direction": self.direction,
            "objective": self.objective,
            "trials": self.trials,
            "parallel": self.parallel,
            "pruner": self.settings["pruner"],
            "seed": "none" if self.settings["seed"] is None else self.settings["seed"],
            "argv": json.dumps(self.argv),
            "space": json.dumps(self.space.as_dict()),
        }
        name = self.result.name
        info = self.client.create_run(self.project, name, params, {SUMMARY_TAG: name})
        self.result.run_id = info.id
        return Run(self.client, info)

    def _end_summary(self, status: str) -> None:
        if self.run is None:
            return
        run, result = self.run, self.result
        try:
            counts = {f"trials_{s}": float(result.count(s)) for s in ("complete", "pruned")}
            counts["trials_failed"] = float(result.count("failed"))
            best = result.best
            if best is not None and best.value is not None:
                counts[f"best_{self.metric}"] = best.value
                run.set_tags({"plinth.sweep.best_trial": best.number})
                run.set_tags({"plinth.sweep.best_params": json.dumps(best.params)})
                if best.run_id:
                    run.set_tags({"plinth.sweep.best_run": best.run_id})
            run.log(counts, step=0)
        finally:
            run.end(status)


def run_sweep(
    client: Client,
    project: str,
    argv: Sequence[str],
    space: Space | Mapping[str, Any] | str | Path,
    *,
    trials: int,
    parallel: int = 1,
    metric: str = "loss",
    direction: Direction = "minimize",
    pruner: Pruner = "median",
    objective: Objective = "last",
    seed: int | None = None,
    name: str | None = None,
    poll: float = 0.5,
    enqueue: Sequence[Mapping[str, Any]] = (),
    on_change: Callable[[SweepResult], None] | None = None,
    **submit: Any,
) -> SweepResult:
    """Search ``space`` for the params that optimize ``metric`` over ``trials`` jobs of
    ``argv``, ``parallel`` at a time; see the module docstring for how.

    ``submit`` goes to every trial's ``client.submit_job`` (cpus, gpus, memory, pool,
    priority, retries, timeout, workdir, env, secrets). ``enqueue``: params to try
    first (known good settings), before the sampler's own. ``on_change`` is called with
    the result so far whenever a trial starts or ends (the CLI's progress bar).
    """
    _check(argv, trials, parallel, metric, direction, pruner, objective, poll)
    sweep = Sweep(
        client,
        project,
        argv,
        load_space(space),
        trials=trials,
        parallel=parallel,
        metric=metric,
        direction=direction,
        pruner=pruner,
        objective=objective,
        seed=seed,
        name=name or f"sweep-{uuid.uuid4().hex[:8]}",
        poll=poll,
        enqueue=enqueue,
        submit=submit,
        on_change=on_change,
    )
    return sweep.execute()


def _check(
    argv: Sequence[str],
    trials: int,
    parallel: int,
    metric: str,
    direction: str,
    pruner: str,
    objective: str,
    poll: float,
) -> None:
    from plinth.tracking.schemas import check_key

    if isinstance(argv, str) or not argv:
        raise InvalidInput("argv is a non-empty list of arguments, not a shell line")
    if not 1 <= trials <= MAX_TRIALS:
        raise InvalidInput(f"trials: 1 to {MAX_TRIALS}")
    if not 1 <= parallel <= trials:
        raise InvalidInput("parallel: at least 1, and at most the number of trials")
    check_key(metric)
    choices = {"direction": (direction, Direction), "pruner": (pruner, Pruner)}
    choices["objective"] = (objective, Objective)
    for what, (value, kind) in choices.items():
        allowed = kind.__args__  # type: ignore[attr-defined]
        if value not in allowed:
            raise InvalidInput(f"{what}: one of {', '.join(allowed)}; got {value!r}")
    if poll <= 0:
        raise InvalidInput("poll: seconds above 0")


def _study(direction: Direction, pruner: Pruner, seed: int | None, trials: int) -> Any:
    """TPE, with a random start of a fifth of the trials (2 to 10), and the pruner.

    ``constant_liar`` keeps parallel trials apart: TPE counts the running ones as
    bad, so it does not ask for the same region ``parallel`` times. The median
    pruner judges from the first step once one trial has completed, so a sweep of a
    few trials prunes too (Optuna's default waits for 5). ASHA's rungs are at steps
    1, 4, 16, 64 …: at each, a trial goes on only if it is in the top quarter of the
    trials that reached that rung before it (so the first to reach a rung goes on).
    Its rungs start at step 1 rather than Optuna's "auto", which guesses them from
    the first completed trial: a driver that sees a quick trial only once it has
    ended could not record that trial's rungs."""
    o = optuna()
    startup = max(2, min(10, trials // 5))
    sampler = o.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    chosen: Any
    if pruner == "median":
        chosen = o.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    elif pruner == "asha":
        chosen = o.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4)
    else:
        chosen = o.pruners.NopPruner()
    return o.create_study(direction=direction, sampler=sampler, pruner=chosen)


def _better(value: float, than: float, direction: Direction) -> bool:
    return value < than if direction == "minimize" else value > than
