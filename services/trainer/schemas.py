"""The trainer's REST contracts: job requests, jobs, datasets and retrain requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.trainer.spec import TrainingSpec
from shared.events import AliasName

JobStatus = Literal["queued", "running", "succeeded", "failed"]


class PromotionPolicy(BaseModel):
    """Champion/challenger: move `promote_to` to the new version only if it beats the version behind
    `champion_alias` on the same holdout by at least `min_improvement` (in the metric's own units)."""

    model_config = ConfigDict(extra="forbid")

    champion_alias: AliasName = "production"
    promote_to: AliasName = "production"
    metric: str | None = Field(default=None, description="default: the job's metric")
    min_improvement: float = Field(default=0.0, ge=0)


class JobRequest(TrainingSpec):
    """A training job: the training spec, where to record it, and what to do with the result."""

    experiment: str | None = Field(default=None, description="registry experiment; default: the model name")
    promotion: PromotionPolicy | None = None


class Job(BaseModel):
    id: str
    model_name: str
    workspace: str = "default"
    status: JobStatus
    stage: str
    progress: float
    reason: str
    request: JobRequest
    run_id: str | None
    error: str | None
    problems: list[str]
    result: dict[str, Any] | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    jobs: list[Job]
    next_page_token: str | None = None


class Dataset(BaseModel):
    uri: str
    sha256: str
    size: int


class RetrainRequest(BaseModel):
    """Retrain a model with the configuration of the run behind its production version."""

    model_config = ConfigDict(extra="forbid")

    model: str
    reason: str = Field(default="manual", min_length=1)
    dataset_uri: str | None = Field(
        default=None, description="newer data; default: the data it was trained on"
    )
