"""MLflow's REST endpoints (``/api/2.0/mlflow/…``) under ``/mlflow``: thin, as every
route here; errors answer in MLflow's shape (``api/errors.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.core.access import Permission
from plinth.mlflow import schemas as m
from plinth.mlflow.service import MlflowService

PREFIX = "/mlflow/api/2.0/mlflow"
router = APIRouter(prefix=PREFIX, tags=["mlflow"])
Read = Annotated[Caller[MlflowService], caller(MlflowService, Permission.PROJECT_READ)]
Write = Annotated[Caller[MlflowService], caller(MlflowService, Permission.PROJECT_WRITE)]
Answer = dict[str, Any]
IdQuery = Annotated[str, Query(min_length=1, max_length=64)]


@router.post("/experiments/create")
async def create_experiment(req: m.CreateExperiment, c: Write) -> Answer:
    return await c(c.service.create_experiment, req)


@router.get("/experiments/get")
async def get_experiment(experiment_id: IdQuery, c: Read) -> Answer:
    return await c(c.service.get_experiment, experiment_id)


@router.get("/experiments/get-by-name")
async def get_experiment_by_name(
    experiment_name: Annotated[str, Query(min_length=1, max_length=500)], c: Read
) -> Answer:
    return await c(c.service.get_experiment_by_name, experiment_name)


@router.post("/experiments/search")
async def search_experiments(req: m.SearchExperiments, c: Read) -> Answer:
    return await c(c.service.search_experiments, req)


@router.post("/runs/create")
async def create_run(req: m.CreateRun, c: Write) -> Answer:
    return await c(c.service.create_run, req)


@router.get("/runs/get")
async def get_run(
    c: Read, run_id: IdQuery | None = None, run_uuid: IdQuery | None = None
) -> Answer:
    return await c(c.service.get_run, run_id, run_uuid)


@router.post("/runs/update")
async def update_run(req: m.UpdateRun, c: Write) -> Answer:
    return await c(c.service.update_run, req)


@router.post("/runs/log-metric")
async def log_metric(req: m.LogMetric, c: Write) -> Answer:
    return await c(c.service.log_metric, req)


@router.post("/runs/log-parameter")
async def log_param(req: m.LogParam, c: Write) -> Answer:
    return await c(c.service.log_param, req)


@router.post("/runs/set-tag")
async def set_tag(req: m.SetTag, c: Write) -> Answer:
    return await c(c.service.set_tag, req)


@router.post("/runs/log-batch")
async def log_batch(req: m.LogBatch, c: Write) -> Answer:
    return await c(c.service.log_batch, req)


@router.post("/runs/search")
async def search_runs(req: m.SearchRuns, c: Read) -> Answer:
    return await c(c.service.search_runs, req)


@router.get("/metrics/get-history")
async def metric_history(
    c: Read,
    metric_key: Annotated[str, Query(min_length=1, max_length=250)],
    run_id: IdQuery | None = None,
    run_uuid: IdQuery | None = None,
    page_token: Annotated[str | None, Query(max_length=100)] = None,
    max_results: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> Answer:
    return await c(c.service.metric_history, run_id, run_uuid, metric_key, page_token, max_results)
