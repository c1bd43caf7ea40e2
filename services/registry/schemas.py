"""The registry's REST contracts: request and response models for tracking and the model registry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.auth import WORKSPACE_PATTERN, Role
from shared.events import ModelSignature, TrafficPolicy

# Limits follow MLflow's, so that clients written for it fit.
Key = Annotated[str, StringConstraints(min_length=1, max_length=250)]
TagValue = Annotated[str, StringConstraints(max_length=8000)]
Tags = dict[Key, TagValue]
EntityName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
RunStatus = Literal["running", "finished", "failed", "killed"]
VersionStatus = Literal["ready", "failed"]

MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_TAGS_PER_BATCH = 100


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- experiments


class ExperimentCreate(Contract):
    name: EntityName
    description: str = ""
    tags: Tags = Field(default_factory=dict)


class ExperimentUpdate(Contract):
    description: str | None = None
    tags: Tags | None = Field(default=None, description="tags to set; existing tags not named stay")


class Experiment(Contract):
    id: str
    name: str
    workspace: str = "default"
    description: str
    tags: dict[str, str]
    created_at: datetime
    updated_at: datetime


class ExperimentPage(Contract):
    experiments: list[Experiment]
    next_page_token: str | None = None


# ---------------------------------------------------------------- runs


class RunCreate(Contract):
    experiment_id: str | None = None
    experiment_name: EntityName | None = Field(
        default=None, description="the experiment by name; created when it does not exist yet"
    )
    name: EntityName | None = Field(default=None, description="default: run-<first 8 characters of its id>")
    tags: Tags = Field(default_factory=dict)
    start_time: datetime | None = None
    dataset_fingerprint: str | None = Field(default=None, description="sha256 of the training data")
    code_version: str | None = Field(default=None, description="e.g. the git commit the run ran from")


class RunUpdate(Contract):
    status: RunStatus | None = None
    end_time: datetime | None = Field(default=None, description="default: now, when the status becomes final")
    name: EntityName | None = None


class Param(Contract):
    key: Key
    value: str = Field(max_length=6000)

    @field_validator("value", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        """Params are text; numbers and booleans logged by SDKs are kept in their usual spelling."""
        return str(value) if isinstance(value, int | float | bool) else value


class MetricPoint(Contract):
    key: Key
    value: float
    step: int = 0
    timestamp: datetime | None = Field(default=None, description="default: when the server received it")


class LogBatch(Contract):
    """Params, metric points and tags logged in one call; all of it is stored, or none of it."""

    params: list[Param] = Field(default_factory=list, max_length=MAX_PARAMS_PER_BATCH)
    metrics: list[MetricPoint] = Field(default_factory=list, max_length=MAX_METRICS_PER_BATCH)
    tags: Tags = Field(default_factory=dict, max_length=MAX_TAGS_PER_BATCH)


class Run(Contract):
    id: str
    experiment_id: str
    name: str
    status: RunStatus
    start_time: datetime
    end_time: datetime | None
    tags: dict[str, str]
    dataset_fingerprint: str | None
    code_version: str | None
    params: dict[str, str]
    metrics: dict[str, float] = Field(description="the last value of each metric")


class MetricHistory(Contract):
    run_id: str
    key: str
    points: list[MetricPoint]


class RunSearch(Contract):
    experiment_ids: list[str] = Field(default_factory=list, description="empty: every experiment")
    filter: str = Field(
        default="",
        description="e.g. metrics.auc > 0.8 and params.model = 'rf' and tags.team = 'risk'; "
        "AND, OR, parentheses, =, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN",
    )
    order_by: list[str] = Field(default_factory=list, description="e.g. ['metrics.auc DESC']")
    max_results: int = Field(default=100, ge=1, le=1000)
    page_token: str | None = None


class RunPage(Contract):
    runs: list[Run]
    next_page_token: str | None = None


class ComparedRun(Contract):
    id: str
    name: str
    experiment_id: str
    status: RunStatus
    params: dict[str, str]
    metrics: dict[str, float]


class RunComparison(Contract):
    runs: list[ComparedRun]
    param_keys: list[str]
    metric_keys: list[str]
    differing_params: list[str] = Field(description="params whose values are not the same in every run")


class Artifact(Contract):
    run_id: str
    path: str
    uri: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime


# ---------------------------------------------------------------- registered models


class RegisteredModelCreate(Contract):
    name: ModelName
    description: str = ""
    tags: Tags = Field(default_factory=dict)


class RegisteredModelUpdate(Contract):
    description: str


class RegisteredModel(Contract):
    name: str
    workspace: str = "default"
    description: str
    tags: dict[str, str]
    latest_version: int | None
    aliases: dict[str, int]
    traffic_policy: TrafficPolicy | None = Field(
        default=None, description="how serving splits requests between aliases; none: the default alias"
    )
    created_at: datetime
    updated_at: datetime


class RegisteredModelPage(Contract):
    models: list[RegisteredModel]
    next_page_token: str | None = None


class TagUpdate(Contract):
    value: TagValue


class ModelVersion(Contract):
    model_name: str
    workspace: str = Field(default="default", description="the model's workspace")
    version: int
    status: VersionStatus
    status_message: str | None
    description: str
    tags: dict[str, str]
    artifact_uri: str | None
    artifact_sha256: str | None
    artifact_size: int | None
    signature: ModelSignature | None
    reference_profile_uri: str | None
    source_run_id: str | None
    aliases: list[str]
    created_by: str
    created_at: datetime


class ModelVersionPage(Contract):
    versions: list[ModelVersion]
    next_page_token: str | None = None


class AliasUpdate(Contract):
    version: int = Field(ge=1)


class AliasMove(Contract):
    model_name: str
    alias: str
    version: int
    previous_version: int | None


class LineageRun(Contract):
    id: str
    name: str
    status: RunStatus
    experiment_id: str
    experiment_name: str
    start_time: datetime
    end_time: datetime | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    dataset_fingerprint: str | None
    code_version: str | None


class Lineage(Contract):
    model_name: str
    version: int
    artifact_uri: str | None
    artifact_sha256: str | None
    reference_profile_uri: str | None
    source_run_id: str | None
    run: LineageRun | None = Field(description="null when the version has no run, or its run was deleted")


class AuditEntry(Contract):
    id: int
    model_name: str
    action: str
    actor: str
    at: datetime
    version: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(Contract):
    entries: list[AuditEntry]
    next_page_token: str | None = None


class Problem(Contract):
    """Every 4xx body: what was wrong, and for a bad search filter, where."""

    detail: str
    position: int | None = None
    token: str | None = None


# ---------------------------------------------------------------- access control


class TokenCreate(Contract):
    user: EntityName
    workspace: str = Field(
        default="default", pattern=WORKSPACE_PATTERN, description="'*' (every workspace): service role only"
    )
    role: Role


class Token(Contract):
    """A token as listed: never its secret."""

    id: str
    user: str
    workspace: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class TokenCreated(Token):
    token: str = Field(description="the secret, shown this once: send it as `Authorization: Bearer <token>`")
