"""The batch service's own settings (FLYWHEEL_BATCH_*)."""

from __future__ import annotations

import os
import socket

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class RequestTopic(BaseModel):
    """A topic producers send scoring requests to, with what its records get when they do not say."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="the model of records that name none")
    alias: str = Field(default="production", description="the alias of records that name no version or alias")
    version: int | None = Field(default=None, ge=1, description="the version of records that name none")
    result_topic: str = Field(default="scoring-results", description="where this topic's results go")


class BatchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_BATCH_", extra="ignore")

    port: int = 8083
    registry_url: str = Field(default="http://127.0.0.1:8081", description="where the registry answers")
    workers: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, 8),
        ge=1,
        description="processes sharing the port, each a whole replica with its own share of the request "
        "topics' partitions (default: a core each, at most 8); the stream's Python is what a core limits",
    )
    intra_op_threads: int | None = Field(
        default=None,
        ge=1,
        description="onnxruntime threads per call (default: the cores divided among the workers)",
    )
    max_loaded_models: int = Field(default=8, ge=1, description="model versions kept in memory")
    prediction_log_sample_rate: float = Field(
        default=0.01, ge=0, le=1, description="share of scored rows reported to prediction-logged"
    )

    # ---- Kafka-fed scoring
    request_topics: dict[str, RequestTopic] = Field(
        default_factory=lambda: {"scoring-requests": RequestTopic()},
        description='JSON: {"scoring-requests": {"model": "credit", "result_topic": "scoring-results"}}',
    )
    consumer_group: str = Field(default="batch-scoring", description="replicas share partitions through it")
    replica_id: str = Field(
        default="",
        description="stable per replica, unique in the group (default: host name and port); a restarted "
        "replica with the same id fences its old self's open transaction at once",
    )
    max_batch_records: int = Field(
        default=5000, ge=1, description="records consumed, scored and committed at once"
    )

    # ---- File jobs
    chunk_rows: int = Field(
        default=50_000, ge=1, description="rows a file job reads, scores and stores at once (bounds memory)"
    )
    max_concurrent_jobs: int = Field(default=1, ge=1, description="file jobs one worker runs at once")
    max_upload_bytes: int = Field(default=1024 * 1024 * 1024, ge=1, description="largest file upload")
    job_heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="how often a running job says it is alive"
    )
    stale_job_seconds: float = Field(
        default=30.0, gt=0, description="a running job silent this long is taken to have lost its replica"
    )
    max_job_attempts: int = Field(
        default=3,
        ge=1,
        description="starts of one job (each going on where the last stopped) before failing it",
    )
    job_poll_seconds: float = Field(
        default=2.0, gt=0, description="how often a replica looks for jobs queued elsewhere"
    )

    def transactional_id(self, worker: int = 0) -> str:
        """The scoring stream's, stable across restarts: the replica's id, and the worker's number after the
        first (a worker's replacement takes its number, see shared.service.claim_worker_slot)."""
        replica = self.replica_id or f"{socket.gethostname()}-{self.port}"
        return f"{self.consumer_group}-{replica}" + (f"-{worker}" if worker else "")
