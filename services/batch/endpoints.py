"""The batch service's routes for file jobs: parse, call the service, map errors to HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, Field

from services.batch.job_schemas import FileJob, FileJobPage, FileJobRequest, JobStatus, ModelChoice
from services.batch.job_service import (
    FileJobService,
    InputNotFound,
    InvalidJob,
    JobNotFound,
    OutputInUse,
    OutputNotFound,
    UnsupportedFormat,
)
from shared.auth import Permission, Principal, require
from shared.model_versions import ModelNotFound, RegistryUnavailable
from shared.pagination import InvalidPageToken
from shared.service import InvalidInput, answer_errors


class Problem(BaseModel):
    detail: str


class UploadRequest(ModelChoice):
    filename: str = Field(min_length=1, description="the file's name; its suffix says the format")


class UploadTooLarge(ValueError):
    pass


async def file_jobs(request: Request) -> FileJobService:
    service: FileJobService = request.app.state.file_jobs
    return service


FileJobs = Annotated[FileJobService, Depends(file_jobs)]
ERRORS: dict[int | str, dict[str, Any]] = {
    **{status: {"model": Problem} for status in (400, 404, 409, 413, 415, 503)},
    422: {"model": InvalidInput},
}

router = APIRouter(tags=["file jobs"], responses=ERRORS)
# The app guards the router (READ, BATCH); a job belongs to its model's workspace, seen only from there.
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Scorer = Annotated[Principal, Depends(require(Permission.BATCH))]


@router.post("/jobs", status_code=201)
async def submit_job(body: FileJobRequest, service: FileJobs, principal: Scorer) -> FileJob:
    """Queue a job scoring a CSV or Parquet object in the store; follow it with GET /jobs/{id}. The
    model, the input and the output are checked first: 404 for an unknown model or object, or one of
    another workspace (the URIs must be under `workspaces/<workspace>/`, or for workspace `default`
    outside every workspace's prefix), 415 for a file that is not CSV or Parquet, 422 for features or
    URIs that do not fit, 409 when another job writes the same output."""
    return await service.submit_job(body, principal.scope)


@router.post(
    "/jobs/upload",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_job(
    request: Request, service: FileJobs, choice: Annotated[UploadRequest, Query()], principal: Scorer
) -> FileJob:
    """Store a CSV or Parquet file (the request body, streamed, not a form) under the model's workspace's
    prefix (`workspaces/<workspace>/batch/uploads/`) and queue a job on it; its predictions are written next
    to it. Over FLYWHEEL_BATCH_MAX_UPLOAD_BYTES: 413."""
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise UnsupportedFormat(
            "send the file itself as the request body (application/octet-stream), not a form"
        )
    limit: int = request.app.state.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(f"the file is {declared} bytes; the limit is {limit}")
    model = ModelChoice.model_validate(choice.model_dump(exclude={"filename"}))
    return await service.upload_job(
        choice.filename, _limited(request.stream(), limit), model, principal.scope
    )


@router.get("/jobs")
async def list_jobs(
    service: FileJobs,
    principal: Reader,
    model: str | None = None,
    status: JobStatus | None = None,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: str | None = None,
) -> FileJobPage:
    """File jobs, newest first, optionally of one model or in one status."""
    return await service.list_jobs(model, status, page_size, page_token, principal.scope)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, service: FileJobs, principal: Reader) -> FileJob:
    """A job's status, stage, progress, row counts, first rejected rows and error; once it succeeded, a
    presigned `download_url` for its output (valid for an hour)."""
    return await service.get_job(job_id, principal.scope)


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Pass the stream through, failing as soon as it passes `limit` bytes (nothing is stored then)."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise UploadTooLarge(f"the file is larger than the limit of {limit} bytes")
        yield chunk


def add_error_handlers(app: FastAPI) -> None:
    answer_errors(
        app,
        {
            JobNotFound: 404,
            InputNotFound: 404,
            OutputNotFound: 404,
            ModelNotFound: 404,
            OutputInUse: 409,
            UploadTooLarge: 413,
            UnsupportedFormat: 415,
            InvalidJob: 422,
            InvalidPageToken: 400,
            RegistryUnavailable: 503,
        },
    )
