"""Pipelines' SDK calls, reached as methods of ``plinth.Client``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from plinth.errors import InvalidInput
from plinth.pipelines import schemas as s

if TYPE_CHECKING:
    from plinth.client import Transport
    from plinth.compute.schemas import Snapshot
    from plinth.pipelines.dsl import Pipeline


def _base(project: str) -> str:
    return f"/api/v1/projects/{quote(project, safe='')}/pipelines"


def _run(project: str, run_id: str) -> str:
    return f"{_base(project)}/runs/{quote(run_id, safe='')}"


class PipelineCalls:
    _transport: Transport

    def trace_pipeline(
        self,
        pipeline: Pipeline | str,
        params: Mapping[str, Any] | None = None,
        *,
        workdir: str | os.PathLike[str] = ".",
    ) -> s.PipelineSpec:
        """The spec a run would start from: ``pipeline`` (a ``@plinth.pipeline``
        function, or ``"module:function"`` imported from ``workdir``) traced with
        ``params``, without running anything."""
        from plinth.pipelines.dsl import Pipeline, load_function

        found = load_function(pipeline, Path(workdir)) if isinstance(pipeline, str) else pipeline
        if not isinstance(found, Pipeline):
            raise InvalidInput(f"{pipeline!r} is not a @plinth.pipeline function")
        return found.trace(params, workdir=Path(workdir))

    def run_pipeline(
        self,
        project: str,
        pipeline: Pipeline | str,
        params: Mapping[str, Any] | None = None,
        *,
        no_cache: bool = False,
        workdir: str | os.PathLike[str] = ".",
        wait: bool = False,
        timeout: float | None = None,
    ) -> s.PipelineRun:
        """Start a run of ``pipeline`` in ``project``: it is traced here, ``workdir`` is
        snapshotted (as ``git add`` would see it) and the server runs each step as a
        compute job in that snapshot, reusing the outputs of steps whose code and inputs
        are unchanged unless ``no_cache``. With ``wait``, returns once the run ends."""
        from plinth.pipelines import dsl

        if dsl.IN_WORKER:
            raise InvalidInput(
                "run_pipeline was called while a step's module was imported: guard the "
                'call with `if __name__ == "__main__":`'
            )
        spec = self.trace_pipeline(pipeline, params, workdir=workdir)
        snapshot = self._snapshot(project, workdir)
        body = s.PipelineRunCreate(spec=spec, snapshot=snapshot, no_cache=no_cache)
        data = self._transport.request(
            "POST", f"{_base(project)}/runs", json=body.model_dump(mode="json")
        )
        run = s.PipelineRun(**data)
        return self.wait_pipeline_run(project, run.id, timeout=timeout) if wait else run

    def _snapshot(self, project: str, workdir: str | os.PathLike[str]) -> Snapshot:
        return self.upload_snapshot(project, workdir)  # type: ignore[attr-defined]

    def get_pipeline_run(self, project: str, run_id: str) -> s.PipelineRun:
        return s.PipelineRun(**self._transport.request("GET", _run(project, run_id)))

    def list_pipeline_runs(
        self,
        project: str,
        *,
        name: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> s.PipelineRunPage:
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("name", name), ("status", status), ("cursor", cursor)):
            if value is not None:
                params[key] = value
        data = self._transport.request("GET", f"{_base(project)}/runs", params=params)
        return s.PipelineRunPage(**data)

    def wait_pipeline_run(
        self, project: str, run_id: str, *, timeout: float | None = None
    ) -> s.PipelineRun:
        """The run once it has ended; with ``timeout``, TimeoutError if it has not."""
        from plinth.compute.client import wait_until

        return wait_until(
            lambda: self.get_pipeline_run(project, run_id),
            lambda run: run.ended,
            timeout,
            lambda run: f"pipeline run {run_id} is still running after {timeout} s",
        )

    def cancel_pipeline_run(self, project: str, run_id: str) -> s.PipelineRun:
        url = f"{_run(project, run_id)}/cancel"
        return s.PipelineRun(**self._transport.request("POST", url, retry=True))

    def resume_pipeline_run(self, project: str, run_id: str) -> s.PipelineRun:
        """Run a failed or cancelled run's unfinished steps again (same snapshot, same
        dataset versions); to pick up changed code, start a new run instead: the steps
        that did not change are taken from the cache."""
        url = f"{_run(project, run_id)}/resume"
        return s.PipelineRun(**self._transport.request("POST", url))

    def create_pipeline_trigger(
        self,
        project: str,
        name: str,
        pipeline: Pipeline | str,
        params: Mapping[str, Any] | None = None,
        *,
        cron: str | None = None,
        dataset: str | None = None,
        no_cache: bool = False,
        workdir: str | os.PathLike[str] = ".",
    ) -> s.Trigger:
        """Have the server start ``pipeline`` (traced and snapshotted now) on a cron
        schedule in UTC (``cron="0 3 * * *"``) or whenever ``dataset`` gets a new
        version (a step reading ``plinth.dataset(NAME)`` then reads that version)."""
        spec = self.trace_pipeline(pipeline, params, workdir=workdir)
        snapshot = self._snapshot(project, workdir)
        try:
            body = s.TriggerCreate(
                name=name,
                spec=spec,
                snapshot=snapshot,
                cron=cron,
                dataset=dataset,
                no_cache=no_cache,
            )
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        data = self._transport.request(
            "POST", f"{_base(project)}/triggers", json=body.model_dump(mode="json")
        )
        return s.Trigger(**data)

    def list_pipeline_triggers(self, project: str) -> list[s.Trigger]:
        data = self._transport.request("GET", f"{_base(project)}/triggers")
        return [s.Trigger(**t) for t in data]

    def delete_pipeline_trigger(self, project: str, name: str) -> s.Trigger:
        url = f"{_base(project)}/triggers/{quote(name, safe='')}"
        return s.Trigger(**self._transport.request("DELETE", url))
