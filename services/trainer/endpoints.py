"""The trainer's routes: parse, call the service, map errors to HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel

from services.trainer.schedules import (
    RetrainScheduler,
    Schedule,
    ScheduleNotFound,
    ScheduleRequest,
    UnknownModel,
)
from services.trainer.schemas import Dataset, Job, JobPage, JobRequest, RetrainRequest
from services.trainer.service import (
    CannotRetrain,
    DatasetNotFound,
    InvalidDataset,
    JobNotFound,
    TrainerService,
)
from shared.auth import Permission, Principal, require
from shared.pagination import InvalidPageToken
from shared.service import InvalidInput, answer_errors


class Problem(BaseModel):
    detail: str


async def trainer(request: Request) -> TrainerService:
    service: TrainerService = request.app.state.trainer
    return service


Trainer = Annotated[TrainerService, Depends(trainer)]
ERRORS: dict[int | str, dict[str, Any]] = {
    **{status: {"model": Problem} for status in (400, 404, 409, 413)},
    422: {"model": InvalidInput},
}

router = APIRouter(tags=["training"], responses=ERRORS)
# Every route needs READ or TRAIN (the app guards the router); retraining needs RETRAIN as well. Jobs
# belong to a workspace: a caller sees only its own, and its jobs' runs and models are made there.
RETRAINING = [Depends(require(Permission.RETRAIN))]
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Submitter = Annotated[Principal, Depends(require(Permission.TRAIN))]


@router.post("/jobs", status_code=201)
async def submit_job(body: JobRequest, service: Trainer, principal: Submitter) -> Job:
    """Queue a training job; follow it with GET /jobs/{id}. Every job becomes a run in the registry."""
    return await service.submit_job(body, workspace=principal.home_workspace, caller_scope=principal.scope)


@router.get("/jobs")
async def list_jobs(
    service: Trainer,
    principal: Reader,
    model: str | None = None,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: str | None = None,
) -> JobPage:
    """Jobs, newest first, optionally for one model."""
    return await service.list_jobs(model, page_size, page_token, principal.scope)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, service: Trainer, principal: Reader) -> Job:
    """A job's status, stage, progress, run, and its result or the reasons it failed."""
    return await service.get_job(job_id, principal.scope)


@router.post("/retrain", status_code=202, dependencies=RETRAINING)
async def retrain(body: RetrainRequest, service: Trainer, principal: Submitter) -> Job:
    """Retrain a model with the configuration behind its production version; joins a job already queued
    or running for that model."""
    return await service.request_retrain(body, principal.scope)


@router.post(
    "/datasets",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_dataset(
    request: Request, service: Trainer, principal: Submitter, filename: Annotated[str, Query(min_length=1)]
) -> Dataset:
    """Store a CSV or Parquet file (the request body, streamed) for training, under the caller's
    workspace's prefix (`workspaces/<workspace>/datasets/`); returns its URI and sha256."""
    limit: int = request.app.state.max_dataset_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise DatasetTooLarge(f"the dataset is {declared} bytes; the limit is {limit}")
    return await service.upload_dataset(filename, _limited(request.stream(), limit), principal.home_workspace)


class DatasetTooLarge(ValueError):
    pass


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Pass the stream through, failing as soon as it passes `limit` bytes (nothing is stored then)."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise DatasetTooLarge(f"the dataset is larger than the limit of {limit} bytes")
        yield chunk


async def scheduler(request: Request) -> RetrainScheduler:
    schedules: RetrainScheduler = request.app.state.schedules
    return schedules


Scheduler = Annotated[RetrainScheduler, Depends(scheduler)]


@router.put("/schedules/{model}", dependencies=RETRAINING)
async def set_schedule(
    model: str, body: ScheduleRequest, schedules: Scheduler, principal: Submitter
) -> Schedule:
    """Retrain `model`, a model of the caller's workspace, on a cron schedule (UTC), e.g. '0 3 1 */3 *' for
    quarterly; replaces an earlier one."""
    return await schedules.set(model, body, principal.scope)


@router.get("/schedules")
async def list_schedules(schedules: Scheduler, principal: Reader) -> list[Schedule]:
    """The retraining schedules of the caller's workspace's models, with their next and last run."""
    return await schedules.all(principal.scope)


@router.delete("/schedules/{model}", status_code=204, dependencies=RETRAINING)
async def delete_schedule(model: str, schedules: Scheduler, principal: Submitter) -> None:
    """Stop retraining `model` on a schedule."""
    await schedules.delete(model, principal.scope)


def add_error_handlers(app: FastAPI) -> None:
    answer_errors(
        app,
        {
            JobNotFound: 404,
            CannotRetrain: 409,
            InvalidDataset: 400,
            InvalidPageToken: 400,
            DatasetTooLarge: 413,
            ScheduleNotFound: 404,
            UnknownModel: 404,
            DatasetNotFound: 404,
        },
    )
