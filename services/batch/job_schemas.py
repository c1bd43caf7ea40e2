"""File jobs' REST contracts: the request, the job as it progresses, and pages of jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.batch.file_jobs import FileFormat
from shared.events import AliasName, Name

JobStatus = Literal["queued", "running", "succeeded", "failed"]
DEFAULT_ALIAS = "production"


class ModelChoice(BaseModel):
    """Which model version scores a file (by number, else by alias; default `production`), and for a
    model with a single [-1, n] input, which columns feed it."""

    model_config = ConfigDict(extra="forbid")

    model: Name
    version: int | None = Field(default=None, ge=1)
    alias: AliasName | None = Field(
        default=None, description="default: production, unless a version is given"
    )
    features: list[Name] | None = Field(
        default=None,
        min_length=1,
        description="for a model with a single [-1, n] input: its n columns, in order (default: the file's "
        "first n numeric columns); a model with an input per feature takes its columns by name",
    )

    @model_validator(mode="after")
    def _version_or_alias(self) -> Self:
        if self.version is not None and self.alias is not None:
            raise ValueError("give a version or an alias, not both")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat a column")
        return self


class FileJobRequest(ModelChoice):
    """Score a CSV or Parquet object. The predictions go to `output_uri`, by default next to the input
    as `<name>.predictions.<csv|parquet>`, in the input's format."""

    input_uri: str = Field(
        min_length=1, description="s3://<bucket>/<key>.csv|.parquet|.pq in the platform's store"
    )
    output_uri: str | None = Field(default=None, description="default: next to the input")


class Rejection(BaseModel):
    """A row that could not be scored: its index among the file's data rows (from 0) and why."""

    row: int
    reason: str


class FileJob(BaseModel):
    id: str
    status: JobStatus
    stage: str
    progress: float = Field(description="0 to 1: the share of the input read")
    model: str
    workspace: str = Field(default="default", description="the model's: only it sees the job")
    model_version: int = Field(description="the version scoring every row, fixed when the job was submitted")
    alias: str | None = Field(description="the alias it was asked by, if any")
    input_uri: str
    output_uri: str
    format: FileFormat
    features: list[str] | None
    rows_total: int | None = Field(description="known up front for Parquet; for CSV once read")
    rows_scored: int
    rows_rejected: int
    rows_logged: int = Field(description="scored rows reported to prediction-logged (a sample)")
    rejections: list[Rejection] = Field(description="the first rejected rows, with why")
    error: str | None
    attempts: int
    resumed_at_row: int | None = Field(
        description="where the job went on after its service stopped, if it did"
    )
    output_sha256: str | None
    output_bytes: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    download_url: str | None = Field(
        default=None, description="a presigned link to the output once succeeded"
    )


class FileJobPage(BaseModel):
    jobs: list[FileJob]
    next_page_token: str | None = None
